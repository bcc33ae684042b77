"""Does the LR finder's suggestion train as well as the best LR of a grid?

On scikit-learn digits, with the config of ``examples/digits.yaml`` (CNN, SGD momentum 0.9,
one-cycle schedule, early stopping), train once per learning rate of a small grid and once with
``train.optimizer.lr=auto`` (the LR range test's suggestion); report the test accuracy of each.
The finder passes when its run lands within ``--tolerance`` accuracy points of the grid's best.

    python bench/lr_find_grid.py [--config examples/digits.yaml] [--grid 0.003 0.01 0.03 0.1 0.3 1.0]
                                 [--epochs N] [--write docs/training.md] [key=value ...]

Every run uses the same seed, split and initialization; only the learning rate differs. The
suggestion rule is ``train.lr_find.suggestion`` (default ``steepest``); ``--all-rules`` also trains
with the other two (``valley``, ``min_div10``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "### Measured: suggested LR vs a grid (digits)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "examples" / "digits.yaml"))
    p.add_argument("--grid", type=float, nargs="+", default=[0.003, 0.01, 0.03, 0.1, 0.3, 1.0])
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p.add_argument("--tolerance", type=float, default=1.0, help="accuracy points (default 1)")
    p.add_argument("--all-rules", action="store_true", help="also train with the other suggestion rules")
    p.add_argument("--threads", type=int, default=None, help="train.threads for every run")
    p.add_argument("--write", metavar="FILE", help="replace the measured section of FILE (markdown)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)

    import tempfile

    import methodo
    from methodo.errors import RunFailed

    base = ["track.mlflow=false", "train.progress=false", "explain.enabled=false", *args.overrides]
    if args.epochs:
        base.append(f"train.epochs={args.epochs}")
    if args.threads:
        base.append(f"train.threads={args.threads}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        def one(label, extra):
            t0 = time.perf_counter()
            res = methodo.run(args.config, [*base, *extra], out=Path(tmp) / f"run{len(rows)}")
            acc = res.metrics.get("test", {}).get("accuracy") if res.status == "finished" else None
            lr = res.summary.get("lr_find", {}).get("suggested_lr")
            rows.append({"label": label, "lr": lr, "status": res.status, "test_accuracy": acc,
                         "epochs": res.summary.get("epochs_run"), "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

        for lr in args.grid:
            try:
                one(f"grid lr={lr:g}", [f"train.optimizer.lr={lr}"])
            except RunFailed as exc:  # a diverging grid point is a result, not a crash
                rows.append({"label": f"grid lr={lr:g}", "lr": lr, "status": "failed", "test_accuracy": None,
                             "epochs": None, "seconds": None, "failure": str(exc)})
        rules = ["steepest", "valley", "min_div10"] if args.all_rules else [None]
        for rule in rules:
            extra = ["train.optimizer.lr=auto"] + ([f"train.lr_find.suggestion={rule}"] if rule else [])
            one(f"lr=auto ({rule or 'default rule'})", extra)
    for r in rows:
        if r["label"].startswith("grid"):
            r["lr"] = float(r["label"].split("=")[1])
    grid = [r for r in rows if r["label"].startswith("grid") and r["test_accuracy"] is not None]
    best = max(grid, key=lambda r: r["test_accuracy"])
    auto = [r for r in rows if r["label"].startswith("lr=auto")]
    lines = ["| run | learning rate | test accuracy | epochs run | seconds |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        acc = "diverged (exit 3)" if r["test_accuracy"] is None else f"{r['test_accuracy']:.4f}"
        mark = " **(grid best)**" if r is best else ""
        lines.append(f"| {r['label']}{mark} | {r['lr']:.3g} | {acc} | {r['epochs']} | {r['seconds']} |")
    verdicts = []
    for r in auto:
        gap = 100 * (best["test_accuracy"] - r["test_accuracy"])
        ok = gap <= args.tolerance
        verdicts.append(f"{r['label']}: suggested LR {r['lr']:.3g}, test accuracy {r['test_accuracy']:.4f}, "
                        f"{gap:+.2f} points below the grid best ({best['lr']:g}: {best['test_accuracy']:.4f}) "
                        f"— {'within' if ok else 'NOT within'} {args.tolerance:g} point")
    cmd = "python bench/lr_find_grid.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
    text = "\n".join([SECTION, "", f"Command: `{cmd.strip()}` ({time.strftime('%Y-%m-%d')}, "
                      f"config `{Path(args.config).name}`, overrides {base[3:] or 'none'}).", "", *lines, "",
                      *[f"- {v}" for v in verdicts], ""])
    print(text)
    if args.write:
        path = Path(args.write)
        doc = path.read_text() if path.exists() else ""
        pattern = re.compile(re.escape(SECTION) + r".*?(?=\n#{1,3} |\Z)", re.S)
        doc = pattern.sub(lambda m: text.rstrip() + "\n", doc) if SECTION in doc else doc.rstrip() + "\n\n" + text
        path.write_text(doc)
    return 0 if all(100 * (best["test_accuracy"] - r["test_accuracy"]) <= args.tolerance for r in auto) else 1


if __name__ == "__main__":
    raise SystemExit(main())
