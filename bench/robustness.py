"""Robustness evaluation: methodo's attack throughput against torchattacks called directly, and the clean and
robust accuracy of the shipped image examples.

1. **Throughput.** One trained digits CNN, the same test images, the same attack at the default budgets
   (PGD with 10 steps, or FGSM, at eps 1, 2, 4, 8 and 16/255), timed side by side in one process,
   interleaved, after one untimed warm-up:

   (a) methodo   ``methodo.trust.robustness.measure`` with that attack and no corruptions: the clean
                 predictions (once), for each budget the attack in batches, the predictions on the
                 adversarial images, the robust accuracy, its interval, the fooled images and their
                 confidence, the gallery
   (b) direct    ``torchattacks.PGD(model, ...)`` (or ``FGSM``) with ``set_normalization_used`` for each
                 budget, called on the same batches, then the model's predictions on the adversarial images
                 and the robust accuracy (what anyone measuring robust accuracy must compute anyway)

   Images per second, the median over rounds; the overhead is (b)'s throughput over (a)'s (target ≤ 1.1×).

2. **Accuracy table.** Each shipped image-classification example (``examples/digits*.yaml``) is trained as
   configured (``train.threads`` as given) and measured with the default ``evaluate.robustness`` (FGSM and
   PGD at 1, 2, 4, 8 and 16/255, one-pixel with 1 and 3 pixels, the corruptions), on at most
   ``--max-images`` test images; plus digits with ``train.adversarial`` (PGD, 8/255, ratio 0.5).

This is a benchmark, not a test: run it by hand (``nice`` it on a shared machine).

    python bench/robustness.py [--images N] [--rounds R] [--threads T] [--skip-table] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import statistics
import sys
import time
from pathlib import Path

from _common import ROOT, code_version, cpu_and_nproc, load_too_high, loadavg, replace_section  # bench/ on sys.path

SECTION = "## Robustness"
sys.path.insert(0, str(ROOT / "src"))

# the shipped image-classification examples that need no generated files, then digits with adversarial training
EXAMPLES = ["digits.yaml", "digits_augment.yaml", "digits_robust.yaml", "digits.yaml+adversarial"]
ADVERSARIAL = ["train.adversarial={attack: pgd, eps: 0.0314, ratio: 0.5}"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=270, help="test images attacked per round (default 270: all)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds of each side (default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--max-images", type=int, default=270, help="table: test images measured per example")
    p.add_argument("--skip-table", action="store_true", help="throughput only")
    p.add_argument("--skip-throughput", action="store_true", help="the accuracy table only")
    p.add_argument("--examples", nargs="+", default=EXAMPLES, metavar="NAME", help=f"table rows (default {EXAMPLES})")
    p.add_argument("--write", metavar="BENCHMARKS.md", help="replace the Robustness section of this file")
    return p.parse_args(argv)


def trained_digits(threads: int):
    """The digits CNN trained as examples/digits.yaml (fewer epochs: the throughput does not depend on them)."""
    from methodo import stages
    from methodo.config import load_config
    from methodo.train.loop import fit

    cfg = load_config(ROOT / "examples" / "digits.yaml", ["train.epochs=5", "train.progress=false",
                                                          f"train.threads={threads}"])
    prep = stages.prepare(cfg)
    fit(prep.model, prep.data, cfg.train, seed=cfg.seed)
    prep.model.eval()
    return prep


def throughput(prep, attack: str, n: int, rounds: int) -> dict:
    import torch
    import torchattacks

    from methodo.config import RobustnessConfig
    from methodo.trust.robustness import _torch_mean_std, measure

    X, y = prep.data.tensors["test"][0][:n], prep.data.raw_y["test"][:n]
    yt = torch.as_tensor(y)
    mean, std = _torch_mean_std(prep.data.preprocessor, X)
    rcfg = RobustnessConfig(attacks=[attack], pgd_steps=10, corruptions=[], gallery=8)  # the default eps list
    model = prep.model

    def ours():
        measure(model, X, y, rcfg=rcfg, mean=mean, std=std, seed=0)

    def direct():
        out = []
        for eps in rcfg.eps:
            torch.manual_seed(0)
            atk = (torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / 10, steps=10, random_start=True)
                   if attack == "pgd" else torchattacks.FGSM(model, eps=eps))
            atk.set_normalization_used(mean=mean.reshape(-1).tolist(), std=std.reshape(-1).tolist())
            right = 0
            for s in range(0, len(X), 256):
                adv = atk(X[s:s + 256], yt[s:s + 256])
                with torch.no_grad():
                    right += int((model(adv).argmax(1) == yt[s:s + 256]).sum())
            out.append(right / len(X))
        return out

    ours(), direct()  # warm-up
    t = {"methodo": [], "direct": []}
    for _ in range(rounds):
        for name, fn in (("methodo", ours), ("direct", direct)):
            t0 = time.perf_counter()
            fn()
            t[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in t.items()}
    n_adv = len(X) * len(rcfg.eps)  # adversarial images made per round
    return {"attack": attack, "images": len(X), "budgets": len(rcfg.eps), "methodo_ips": n_adv / med["methodo"],
            "direct_ips": n_adv / med["direct"], "overhead": med["methodo"] / med["direct"]}


def table(threads: int, max_images: int, examples: list[str]) -> list[dict]:
    import methodo

    rows = []
    runs = [(name.split("+")[0], ADVERSARIAL if name.endswith("+adversarial") else []) for name in examples]
    for name, extra in runs:
        t0 = time.perf_counter()
        res = methodo.run(ROOT / "examples" / name, ["track.mlflow=false", "train.progress=false", "explain.enabled=false",
                                                     f"train.threads={threads}",
                                                     f"evaluate.robustness={{max_images: {max_images}}}", *extra],
                          out=Path(f"/tmp/methodo-bench-robustness-{time.time_ns()}"))
        r = res.summary["robustness"]
        pgd = {round(x["eps"] * 255): x["accuracy"] for x in r["attacks"]["pgd"]}
        fgsm = {round(x["eps"] * 255): x["accuracy"] for x in r["attacks"]["fgsm"]}
        one = {x["pixels"]: x["fooled_fraction"] for x in r["attacks"]["onepixel"]}
        rows.append({"example": name + (" + train.adversarial (pgd 8/255)" if extra else ""),
                     "clean": r["clean_accuracy"], "fgsm": fgsm, "pgd": pgd, "onepixel": one,
                     "mce": r["corruptions"]["mce"], "seconds": time.perf_counter() - t0, "images": r["images"]})
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load = loadavg()
    tp = [] if args.skip_throughput else [throughput(prep, a, args.images, args.rounds)
                                          for prep in [trained_digits(args.threads)] for a in ("pgd", "fgsm")]
    lines = ["| attack (eps 1, 2, 4, 8, 16/255) | images × budgets | methodo (adversarial images/s) | "
             "torchattacks directly (images/s) | overhead |", "|---|---|---|---|---|"]
    for r in tp:
        lines.append(f"| {r['attack']} | {r['images']} × {r['budgets']} | {r['methodo_ips']:.1f} | {r['direct_ips']:.1f} | "
                     f"{r['overhead']:.3f}× |")
    print("\n".join(lines))
    rows = [] if args.skip_table else table(args.threads, args.max_images, args.examples)
    if rows:
        eps = [1, 2, 4, 8, 16]
        lines += ["", "| example | clean | " + " | ".join(f"PGD {e}/255" for e in eps)
                  + " | FGSM 8/255 | fooled by 1 px | by 3 px | mCE | s |", "|---" * (len(eps) + 7) + "|"]
        for r in rows:
            lines.append(f"| {r['example']} | {r['clean']:.3f} | " + " | ".join(f"{r['pgd'].get(e, float('nan')):.3f}"
                                                                            for e in eps)
                         + f" | {r['fgsm'].get(8, float('nan')):.3f} | {r['onepixel'].get(1, 0):.1%} | "
                         f"{r['onepixel'].get(3, 0):.1%} | {r['mce']:.3f} | {r['seconds']:.0f} |")
        print("\n".join(lines[-len(rows) - 2:]))
    cpu, nproc = cpu_and_nproc()
    note = (f"Measured {_dt.date.today()} on {cpu} ({nproc} CPUs), torch threads {args.threads}, 1-minute load "
            f"{load} at the start{' (loaded: timings indicative only)' if load_too_high(load) else ''}; "
            f"{code_version('src/methodo/trust')}.")
    print(note)
    if args.write:
        cmd = "python bench/robustness.py " + " ".join(argv if argv is not None else sys.argv[1:])
        replace_section(Path(args.write), SECTION, f"{SECTION}\n\n`{cmd}`\n\n" + "\n".join(lines) + f"\n\n{note}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
