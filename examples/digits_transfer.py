"""Pretrain on one part of a real dataset, fine-tune on another part with few labels, against scratch.

Digits 0-4 (about 900 images, every label) pretrain a cnn (examples/digits_pretrain_a.yaml); digits 5-9
with about 10 labels per class (examples/digits_fewshot_b.yaml) are then learned twice per seed: from the
pretrained run dir (its head re-initialized: other classes) and from random weights
(transfer.compare_scratch: the same cnn, data, epochs and optimizer). Each seed draws another 50 training
images, another initialization and other batches; the ~670 test images of 5-9 are never trained on.

    python examples/digits_transfer.py [--seeds 0,1,2] [--out transfer_runs] [--json results.json]

Prints one row per seed (test accuracy with its bootstrap interval, transfer and scratch) and the mean and
spread over seeds; bench/transfer.py reads the same numbers for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(seeds: list[int], out: Path, overrides: list[str] = ()) -> dict:
    import methodo

    quiet = ["track.mlflow=false", "train.progress=false", *overrides]
    out.mkdir(parents=True, exist_ok=True)
    pre = out / "pre_a"
    if not (pre / "summary.json").is_file():
        methodo.run(HERE / "digits_pretrain_a.yaml", quiet, out=pre)
    pre_acc = json.loads((pre / "summary.json").read_text())["metrics"]["test"]["accuracy"]
    rows = []
    for seed in seeds:
        d = out / f"fewshot_b-seed{seed}"
        if not (d / "summary.json").is_file():
            methodo.run(HERE / "digits_fewshot_b.yaml", [f"model.pretrained={pre}", f"seed={seed}", *quiet], out=d)
        s = json.loads((d / "summary.json").read_text())
        scratch = s["transfer"]["scratch"]
        rows.append({"seed": seed, "train_rows": s["data"]["splits"]["train"]["n"],
                     "test_rows": s["data"]["splits"]["test"]["n"],
                     "transfer": s["metrics"]["test"]["accuracy"],
                     "transfer_interval": s["intervals"]["test"].get("accuracy"),
                     "scratch": scratch["metrics"]["accuracy"], "scratch_interval": scratch["intervals"].get("accuracy"),
                     "pretrained_not_helping": any(f["id"] == "pretrained_not_helping" for f in s["findings"]),
                     "run_dir": str(d)})
    mean = lambda k: statistics.mean(r[k] for r in rows)  # noqa: E731
    sd = lambda k: statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0.0  # noqa: E731
    return {"pretrain": {"run_dir": str(pre), "test_accuracy": pre_acc}, "seeds": rows,
            "transfer_mean": mean("transfer"), "transfer_std": sd("transfer"),
            "scratch_mean": mean("scratch"), "scratch_std": sd("scratch")}


def table(res: dict) -> str:
    iv = lambda v: f"[{v[0]:.3f}, {v[1]:.3f}]" if v else ""  # noqa: E731
    lines = [f"pretrained on digits 0-4: test accuracy {res['pretrain']['test_accuracy']:.3f}", "",
             "| seed | train images (5-9) | test images | pretrained on 0-4, fine-tuned | from scratch | transfer beats scratch beyond its interval |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in res["seeds"]:
        lines.append(f"| {r['seed']} | {r['train_rows']} | {r['test_rows']} | {r['transfer']:.3f} {iv(r['transfer_interval'])} "
                     f"| {r['scratch']:.3f} {iv(r['scratch_interval'])} | {'no' if r['pretrained_not_helping'] else 'yes'} |")
    lines.append(f"| mean ± std | | | {res['transfer_mean']:.3f} ± {res['transfer_std']:.3f} "
                 f"| {res['scratch_mean']:.3f} ± {res['scratch_std']:.3f} | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--out", default="transfer_runs", help="folder of the run dirs (kept; finished runs are reused)")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument("overrides", nargs="*", help="key=value overrides for both configs (e.g. train.epochs=5)")
    a = p.parse_args(argv)
    res = run([int(s) for s in a.seeds.split(",")], Path(a.out), a.overrides)
    print(table(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
