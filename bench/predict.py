"""How fast does a trained model predict? ``methodo predict`` against hand-written code, and ONNX Runtime
against PyTorch.

A small MLP is trained by ``methodo run`` (1 epoch) on a generated table (20 float features, a 0/1
label from a fixed linear rule plus noise); then, on a generated CSV of ``--rows`` rows (default 10^6):

1. **the prediction loop**: ``model(x)`` + softmax in batches of 1024 over the preprocessed tensors, written
   by hand, against :func:`methodo.evaluate.predict` (what :class:`methodo.use.predictor.Predictor` calls)
   over the same tensors (best of 3 each): the overhead of methodo's loop;
2. **the whole command**: ``methodo predict RUN_DIR big.csv --out FILE`` in a fresh process (start-up
   measured on a 10-row file and subtracted), its rows/s and peak memory (``ru_maxrss`` of the child), beside
   a hand-written script doing the same work (pyarrow read of the whole file, scaling, ``model(x)``,
   pyarrow write);
3. **ONNX Runtime vs PyTorch**: the model exported by ``methodo export --format onnx``, median latency of
   one batch of 1024 rows on CPU (100 repetitions after 10 warm-ups).

This is a benchmark, not a test: run it by hand on an idle machine.

    python bench/predict.py [--rows 1000000] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import MAX_LOAD, ROOT, code_version, cpu_and_nproc, load_too_high, loadavg, replace_section  # bench/ is sys.path[0]

SECTION = "## Predict"
FEATURES = 20


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the CSV to predict (default 10^6)")
    p.add_argument("--workdir", default="bench_predict_work", help="where the files and run dirs go (kept)")
    p.add_argument("--write", metavar="FILE", help=f"write/update the '{SECTION}' section of FILE "
                   f"(refused when the 1-minute load average before the run is above {MAX_LOAD})")
    return p.parse_args(argv)


def write_table(path: Path, n: int, *, label: bool = True, seed: int = 0, chunk: int = 500_000) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if path.exists():
        return
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(99).normal(size=FEATURES)
    names = [f"x{i}" for i in range(FEATURES)]
    schema = pa.schema([(c, pa.float32()) for c in names] + ([("label", pa.int8())] if label else []))
    tmp = path.with_suffix(".part")
    with pacsv.CSVWriter(tmp, schema) as out:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            X = rng.normal(size=(m, FEATURES)).astype(np.float32)
            cols = [*X.T] + ([((X @ w + rng.normal(scale=2.0, size=m)) > 0).astype(np.int8)] if label else [])
            out.write_table(pa.table(cols, schema=schema))
    tmp.rename(path)


def _child(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a command run to completion in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024


HAND_SCRIPT = r'''
import sys, json, numpy as np, pyarrow as pa, pyarrow.csv as pacsv, torch
from methodo.use.predictor import load
p = load(sys.argv[1]); model = p.model.eval()
mean, std = p.preprocessor.mean, p.preprocessor.std
t = pacsv.read_csv(sys.argv[2])
X = np.column_stack([t.column(c).to_numpy() for c in p.schema.columns]).astype(np.float32)
X = torch.from_numpy(((X - mean) / std).astype(np.float32))
with torch.no_grad():
    P = torch.cat([model(X[i:i + 1024]).softmax(1) for i in range(0, len(X), 1024)]).numpy()
pacsv.write_csv(pa.table({"predicted": P.argmax(1), **{f"p_{j}": P[:, j] for j in range(P.shape[1])}}), sys.argv[3])
'''


def main(argv=None) -> int:
    a = parse_args(argv)
    import numpy as np
    import torch

    load_before = loadavg()
    work = Path(a.workdir).resolve()
    work.mkdir(exist_ok=True)
    train_csv, big, small = work / "train.csv", work / f"predict_{a.rows}.csv", work / "predict_10.csv"
    write_table(train_csv, 20_000, seed=1)
    write_table(big, a.rows, label=False, seed=2)
    write_table(small, 10, label=False, seed=3)
    run_dir = work / "run"
    py = sys.executable
    if not (run_dir / "summary.json").exists():
        cfg = work / "config.yaml"
        cfg.write_text(f"name: predict-bench\ndata: {{source: csv, path: {train_csv}, target: label}}\n"
                       "model: {name: mlp, hidden: [64, 32]}\ntrain: {epochs: 1, batch_size: 256, progress: false}\n"
                       "track: {mlflow: false}\nexplain: {enabled: false}\nevaluate: {bootstrap: 20}\n")
        subprocess.run([py, "-m", "methodo", "run", str(cfg), "--out", str(run_dir)], check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})

    sys.path.insert(0, str(ROOT / "src"))
    from methodo.evaluate import predict as methodo_predict
    from methodo.use.predictor import load

    p = load(run_dir)
    model = p.model.eval()
    chunks = list(p.chunks(str(big)))
    X = torch.cat([p.model_input(c) for c in chunks])
    del chunks

    # 1. the loop: by hand vs methodo's, same tensors (best of 3)
    def hand():
        with torch.no_grad():
            return torch.cat([model(X[i:i + 1024]).softmax(1) for i in range(0, len(X), 1024)]).numpy()

    def ours():
        return methodo_predict(model, X, task="classification", batch_size=1024)

    times = {}
    for name, fn in (("hand", hand), ("methodo", ours)):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        times[name] = best
    np.testing.assert_allclose(hand(), ours(), atol=1e-6)

    # 2. the whole command in a fresh process, start-up subtracted; the hand-written script beside it
    for f in work.glob("out_*.csv"):
        f.unlink()
    start, _ = _child([py, "-m", "methodo", "predict", str(run_dir), str(small), "--out", str(work / "out_small.csv")])
    wall, peak = _child([py, "-m", "methodo", "predict", str(run_dir), str(big), "--out", str(work / "out_big.csv")])
    hand_script = work / "hand.py"
    hand_script.write_text(HAND_SCRIPT)
    hwall, hpeak = _child([py, str(hand_script), str(run_dir), str(big), str(work / "out_hand.csv")])
    file_mib = big.stat().st_size / 2**20

    # 3. ONNX Runtime vs PyTorch, one batch of 1024
    onnx_ms = torch_ms = None
    try:
        import onnxruntime as ort

        exp = work / "onnx"
        if not (exp / "model.onnx").exists():
            subprocess.run([py, "-m", "methodo", "export", str(run_dir), "--format", "onnx", "--out", str(exp)],
                           check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        sess = ort.InferenceSession(str(exp / "model.onnx"), providers=["CPUExecutionProvider"])
        xb = X[:1024].numpy()

        def median_ms(fn):
            for _ in range(10):
                fn()
            ts = []
            for _ in range(100):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            return 1000 * float(np.median(ts))

        onnx_ms = median_ms(lambda: sess.run(None, {"input": xb}))
        with torch.no_grad():
            torch_ms = median_ms(lambda: model(X[:1024]))
    except ImportError:
        pass

    n = a.rows
    cpu, nproc = cpu_and_nproc()
    rows = [
        "| measure | value |", "|---|---:|",
        f"| loop over the preprocessed tensors: hand-written `model(x)` | {times['hand']:.3f} s "
        f"({n / times['hand']:,.0f} rows/s) |",
        f"| loop over the same tensors: `methodo.evaluate.predict` | {times['methodo']:.3f} s "
        f"({n / times['methodo']:,.0f} rows/s) |",
        f"| loop overhead (methodo / hand) | {times['methodo'] / times['hand']:.3f}× |",
        f"| `methodo predict` start-up (10-row CSV) | {start:.2f} s |",
        f"| `methodo predict` on {n:,} rows ({file_mib:.0f} MiB CSV) | {wall:.2f} s; {n / max(wall - start, 1e-9):,.0f} "
        f"rows/s beyond start-up; peak RSS {peak:,.0f} MiB |",
        f"| hand-written script (pyarrow read all, scale, `model(x)`, pyarrow write) | {hwall:.2f} s; peak RSS "
        f"{hpeak:,.0f} MiB |",
        f"| `methodo predict` / hand-written script | {wall / hwall:.2f}× |",
    ]
    if onnx_ms is not None:
        rows.append(f"| one batch of 1024 rows: PyTorch / ONNX Runtime (median of 100) | {torch_ms:.3f} ms / "
                    f"{onnx_ms:.3f} ms |")
    load_after = loadavg()
    body = "\n".join([
        SECTION, "",
        f"Measured {_dt.date.today()} on {cpu} ({nproc} CPUs), {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads; load average {load_before} before, {load_after} after; "
        f"{code_version('src/methodo/use')}. Command: `python bench/predict.py --rows {n}`.", "",
        "A 20-feature MLP (64, 32) trained 1 epoch by `methodo run` on 20,000 generated rows; predictions on a "
        f"generated CSV of {n:,} rows. Peak RSS of a child process from `ru_maxrss`.", "", *rows, ""])
    print(body)
    if a.write:
        if load_too_high(load_before):
            print(f"refusing to write {a.write}: load average {load_before} > {MAX_LOAD} before the run", file=sys.stderr)
            return 1
        replace_section(Path(a.write), SECTION, body + "\n")
        print(f"wrote section '{SECTION}' of {a.write}", file=sys.stderr)
    json.dumps(times)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
