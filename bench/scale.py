"""How does methodo scale with the data? A generated table at 10^4 … 10^7 rows and a folder of small
generated images, end to end through ``methodo run`` (and ``methodo data inspect`` for the images),
with the wall time of every stage (``timings`` of summary.json) and the peak memory of the process.

Tables: 20 standard-normal float features and a binary label from a fixed linear rule plus noise,
written as CSV by pyarrow; the config is ``model: mlp``, ``train.epochs: 2``, ``batch_size: 256``,
everything else default (explanations on, MLflow on with a local sqlite store in the work dir).
Beside each row, the limit: a pandas (pyarrow engine) read of the same file and one epoch of a
hand-written batched loop over the same tensors with the same MLP.

Images: N grayscale 16×16 PNGs in 10 class folders (digits up-sampled, with noise so that no two
files are equal), through ``methodo data inspect`` and a 1-epoch ``methodo run`` with the cnn.

This is a benchmark, not a test: run it by hand on an idle machine.

    python bench/scale.py [--rows 10000,100000,1000000,10000000] [--images 50000] [--write BENCHMARKS.md]
    python bench/scale.py --imports-only   # the fixed import costs alone (what no stage can remove)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from _common import MAX_LOAD, ROOT, code_version, cpu_and_nproc, load_too_high, loadavg, replace_section  # bench/ is sys.path[0]

SECTION = "## Scale"
FEATURES = 20


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="10000,100000,1000000,10000000",
                   help="comma-separated table sizes (default 10^4 … 10^7)")
    p.add_argument("--images", type=int, default=50_000, help="images in the generated folder (0: skip)")
    p.add_argument("--workdir", default="bench_scale_work", help="where the files and run dirs go (kept)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds allowed to one methodo command")
    p.add_argument("--imports-only", action="store_true",
                   help="only measure the fixed import costs (no table, no image folder)")
    p.add_argument("--write", metavar="FILE", help="write/update the '## Scale' section of FILE "
                   f"(refused when the 1-minute load average before the run is above {MAX_LOAD})")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- data


def write_table(path: Path, n: int, seed: int = 0, chunk: int = 1_000_000) -> None:
    """``n`` rows of 20 float features and a 0/1 label, written in chunks (bounded memory)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if path.exists():
        return
    rng = np.random.default_rng(seed)
    w = rng.normal(size=FEATURES)
    names = [f"x{i}" for i in range(FEATURES)] + ["label"]
    tmp = path.with_suffix(".part")
    with pacsv.CSVWriter(tmp, pa.schema([(c, pa.float32()) for c in names[:-1]] + [("label", pa.int8())])) as out:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            X = rng.normal(size=(m, FEATURES)).astype(np.float32)
            y = ((X @ w + rng.normal(scale=2.0, size=m)) > 0).astype(np.int8)
            out.write_table(pa.table([*X.T, y], names=names))
    tmp.rename(path)


def write_images(root: Path, n: int, seed: int = 0) -> None:
    """``n`` 16×16 grayscale PNGs in 10 class folders: scikit-learn's digits up-sampled, plus noise."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    done = root / ".complete"
    if done.exists():
        return
    d = load_digits()
    rng = np.random.default_rng(seed)
    for c in range(10):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        j = i % len(d.target)
        img = np.kron(d.images[j], np.ones((2, 2))) * 255 / 16 + rng.normal(scale=12, size=(16, 16))
        Image.fromarray(img.clip(0, 255).astype(np.uint8), mode="L").save(root / f"c{d.target[j]}" / f"{i:06d}.png")
    done.touch()


# --------------------------------------------------------------------------- running methodo


def timed(cmd: list[str], timeout: int, cwd: Path) -> dict:
    """Run ``cmd`` under ``/usr/bin/time -v``: wall seconds, peak RSS (MiB), exit code, stderr tail."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"})
    wall = time.perf_counter() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return {"wall_s": wall, "peak_mib": int(m.group(1)) / 1024 if m else float("nan"), "rc": p.returncode,
            "tail": p.stderr[-1500:]}


def run_methodo(cfg: Path, out: Path, timeout: int) -> dict:
    """``methodo run cfg`` into a fresh run dir ``out`` (this script's own, from an earlier round):
    :func:`timed`'s figures plus the run's stage ``timings``."""
    if out.exists():
        import shutil

        shutil.rmtree(out)
    res = timed([sys.executable, "-m", "methodo", "run", str(cfg), "--out", str(out)], timeout, cfg.parent)
    summary = out / "summary.json"
    res["timings"] = json.loads(summary.read_text()).get("timings", {}) if summary.exists() else {}
    return res


def run_table(work: Path, n: int, timeout: int) -> dict:
    csv = work / f"table_{n}.csv"
    write_table(csv, n)
    cfg = work / f"table_{n}.yaml"
    cfg.write_text(f"name: scale_{n}\ndata: {{source: csv, path: {csv.name}, target: label}}\n"
                   "model: {name: mlp}\ntrain: {epochs: 2, batch_size: 256}\n", encoding="utf-8")
    res = run_methodo(cfg, work / f"run_table_{n}", timeout)
    res["csv_mib"] = csv.stat().st_size / 2**20
    res.update(limit(csv))
    return res


def limit(csv: Path) -> dict:
    """A pandas (pyarrow engine) read of ``csv`` and one epoch of a hand-written batched loop with the
    same MLP, batch 256, over the same rows: what the run cannot beat."""
    import numpy as np
    import pandas as pd
    import torch
    import torch.nn.functional as F

    from methodo.models import build_model

    t0 = time.perf_counter()
    df = pd.read_csv(csv, engine="pyarrow", dtype="float32")
    read_s = time.perf_counter() - t0
    X = torch.from_numpy(df.drop(columns="label").to_numpy(np.float32))
    y = torch.from_numpy(df["label"].to_numpy().astype(np.int64))
    del df
    n_train = int(0.7 * len(X))  # the default split's training share
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(FEATURES,), n_outputs=2, kind="tabular")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    perm = torch.randperm(n_train)
    for s in range(0, n_train, 256):
        idx = perm[s:s + 256]
        loss = F.cross_entropy(model(X[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {"limit_read_s": read_s, "limit_epoch_s": time.perf_counter() - t0}


def run_images(work: Path, n: int, timeout: int) -> dict:
    root = work / f"images_{n}"
    t0 = time.perf_counter()
    write_images(root, n)
    gen_s = time.perf_counter() - t0
    cfg = work / f"images_{n}.yaml"
    cfg.write_text(f"name: scale_images_{n}\ndata: {{source: imagefolder, path: {root.name}, workers: 2}}\n"
                   "model: {name: cnn}\ntrain: {epochs: 1, batch_size: 256}\n", encoding="utf-8")
    inspect = timed([sys.executable, "-m", "methodo", "data", "inspect", str(cfg)], timeout, work)
    res = run_methodo(cfg, work / f"run_images_{n}", timeout)
    res["inspect"] = inspect
    res["generate_s"] = gen_s
    return res


# --------------------------------------------------------------------------- fixed costs

# The libraries a default table run imports, in the order it first needs them, and where: what no change to
# methodo's own code can remove (tracking, figures and explanations on, as in the tables above).
IMPORTS = (
    ("torch", "torch", "before the stages' clock starts: in no stage"),
    ("scikit-learn", "sklearn.model_selection", "config, for the split"),
    ("torch._dynamo", "torch._dynamo", "config: the first torch.optim optimizer imports it"),
    ("pyarrow.csv", "pyarrow.csv", "load"),
    ("MLflow + its SQLite store", "mlflow, mlflow.store.tracking.sqlalchemy_store", "setup"),
    ("scikit-learn ensemble", "sklearn.ensemble", "evaluate: the reference model"),
    ("cleanlab", "cleanlab.filter", "diagnose: label issues"),
    ("matplotlib", "matplotlib.pyplot", "figures"),
    ("captum", "captum.attr", "explain"),
)


def import_costs(repeats: int = 3) -> list[tuple[str, float, str]]:
    """Wall seconds of each import of :data:`IMPORTS`, after those above it, in a fresh process (the best of
    ``repeats``): ``[(name, seconds, where)]``."""
    out, before = [], ""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    for name, modules, where in IMPORTS:
        code = (f"import time\n{before}\nt = time.perf_counter()\nimport {modules}\n"
                "print(time.perf_counter() - t)")
        runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
                for _ in range(repeats)]
        out.append((name, min(float(r.stdout) if r.returncode == 0 else float("nan") for r in runs), where))
        before += f"\nimport {modules}"
    return out


def fmt_imports(costs: list[tuple[str, float, str]], epoch_s: float | None) -> str:
    in_stages = sum(s for name, s, _ in costs if name != "torch")
    per = "; ".join(f"{name} {s:.2f} s ({where})" for name, s, where in costs)
    ratio = f" = {in_stages / epoch_s:.2f} epochs at 10^6 rows" if epoch_s else ""
    return (f"- **Fixed import costs** (`bench/scale.py`, fresh processes, each import after the ones before it, best "
            f"of 3): {per}. Inside the stages: {in_stages:.2f} s{ratio}.")


# --------------------------------------------------------------------------- report

STAGES = ("load", "audit", "prepare", "train", "predict", "evaluate", "diagnose", "explain", "figures", "report",
          "tracking")


def fmt_table(rows: dict[int, dict]) -> str:
    keys = [k for k in STAGES if any(k in r["timings"] for r in rows.values())]
    extra = sorted({k for r in rows.values() for k in r["timings"]} - set(keys) - {"total"})
    keys += extra
    head = ["rows", "CSV MiB", "exit", "wall s", "peak RSS MiB", *[f"{k} s" for k in keys],
            "non-training / epoch", "µs per row", "limit: read s", "limit: 1 epoch s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for n, r in rows.items():
        t = r["timings"]
        epoch = t.get("train", float("nan")) / 2
        other = sum(v for k, v in t.items() if k not in ("train", "total"))
        cells = [f"{n:,}", f"{r['csv_mib']:.0f}", str(r["rc"]), f"{r['wall_s']:.1f}", f"{r['peak_mib']:.0f}",
                 *[f"{t[k]:.2f}" if k in t else "–" for k in keys],
                 f"{other / epoch:.2f}" if epoch == epoch and epoch > 0 else "–",
                 f"{r['wall_s'] / n * 1e6:.1f}", f"{r['limit_read_s']:.2f}", f"{r['limit_epoch_s']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fmt_images(n: int, r: dict) -> str:
    t = r["timings"]
    per = " · ".join(f"{k} {n / v:,.0f} img/s ({v:.1f} s)" for k, v in t.items() if k != "total" and v > 0)
    i = r["inspect"]
    return (f"- **{n:,} images** (16×16 PNG, 10 classes; generated in {r['generate_s']:.0f} s): "
            f"`methodo data inspect` {i['wall_s']:.1f} s, peak RSS {i['peak_mib']:.0f} MiB, exit {i['rc']}; "
            f"`methodo run` (cnn, 1 epoch, 2 DataLoader workers) {r['wall_s']:.1f} s, peak RSS {r['peak_mib']:.0f} "
            f"MiB, exit {r['rc']}; per stage: {per}")


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.imports_only:
        print(f"load average {loadavg()}", file=sys.stderr)
        print(fmt_imports(import_costs(), None))
        return 0
    sizes = [int(float(s)) for s in a.rows.split(",") if s.strip()]
    work = (ROOT / a.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    load_before = loadavg()
    started = _dt.datetime.now(_dt.timezone.utc)
    tables = {}
    for n in sizes:
        print(f"table {n:,} rows …", file=sys.stderr, flush=True)
        tables[n] = run_table(work, n, a.timeout)
        if tables[n]["rc"] != 0:
            print(tables[n]["tail"], file=sys.stderr)
    images = run_images(work, a.images, a.timeout) if a.images else None
    costs = import_costs()
    if images is not None and images["rc"] != 0:
        print(images["tail"], file=sys.stderr)
    load_after = loadavg()
    cpu, nproc = cpu_and_nproc()
    import torch

    body = "\n".join([
        SECTION, "",
        "methodo end to end on a generated table (20 float features, binary label) and a generated image folder, "
        "measured by `bench/scale.py` (a benchmark run by hand, not a timed test).", "",
        f"- **Command:** `python bench/scale.py --rows {a.rows} --images {a.images}"
        + (f" --write {a.write}`" if a.write else "`"),
        f"- **Date:** {started:%Y-%m-%d %H:%M} UTC",
        f"- **Machine:** `nproc` = {nproc}, {cpu}; torch {torch.__version__} (CPU), Python {platform.python_version()}",
        f"- **Code measured:** methodo {code_version('src')}",
        "- **Config:** `model: mlp`, `train.epochs: 2`, `train.batch_size: 256`, everything else default "
        "(explanations on, MLflow on, sqlite store in the work dir). Stage times from `timings` in summary.json; "
        "peak RSS of the `methodo run` process from `/usr/bin/time -v`. *non-training / epoch*: the stages other "
        "than training over the time of one epoch. *limit*: a pandas (pyarrow engine) read of the same CSV, and one "
        "epoch of a hand-written batched loop (same MLP, Adam, batch 256) over the same rows.",
        f"- **Load:** 1-minute load average {load_before} before, {load_after} after.", "",
        fmt_table(tables), "",
        fmt_imports(costs, tables[1_000_000]["timings"].get("train", 0) / 2 if 1_000_000 in tables else None), "",
        *( [fmt_images(a.images, images), ""] if images else []),
    ])
    print(body)
    if a.write:
        if load_too_high(load_before):
            print(f"refusing to write {a.write}: load average {load_before} > {MAX_LOAD} before the run",
                  file=sys.stderr)
            return 1
        replace_section(Path(a.write), SECTION, body + "\n")
        print(f"wrote section '{SECTION}' of {a.write}", file=sys.stderr)
    return 0 if all(r["rc"] == 0 for r in tables.values()) and (images is None or images["rc"] == 0) else 1


if __name__ == "__main__":
    sys.exit(main())
