"""Time and memory of the evaluation stages that grow with the val/test rows (issue 11), on synthetic rows.

One stage per call, in a fresh process, so the process's peak RSS belongs to it (imports are done
first, on a few rows, outside the measure). It uses only public functions that existed before the
issue, so the same command measures an older checkout with ``PYTHONPATH=OLD/src``:

    PYTHONPATH=src python bench/scale_eval.py ROWS boot CLASSES RESAMPLES  # bootstrap_intervals, all metrics
    PYTHONPATH=src python bench/scale_eval.py ROWS ref                     # reference_model (ROWS/4 val rows)
    PYTHONPATH=src python bench/scale_eval.py ROWS lab                     # the label_errors check, 10 classes

Prints wall and CPU seconds, the ``tracemalloc`` peak (numpy and Python allocations; torch's own
allocator is not traced) and the process's peak RSS before and after the stage. A benchmark, not a
test: run it by hand, on an idle machine when the numbers are to be written down.
"""

from __future__ import annotations

import resource
import sys
import time
import tracemalloc
import warnings

import numpy as np
import torch

from methodo.diagnose import Facts, label_errors
from methodo.evaluate.baselines import reference_model
from methodo.evaluate.metrics import bootstrap_intervals, metric_names


def _rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(label: str, fn):
    before = _rss()
    tracemalloc.start()
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"{label}: wall {wall:.2f} s, cpu {cpu:.2f} s, tracemalloc peak {peak / 2**20:.0f} MiB, "
          f"peak RSS {_rss():.0f} MiB (before the stage {before:.0f})", flush=True)
    return out


def main(argv: list[str]) -> None:
    warnings.filterwarnings("ignore")
    n, what = int(argv[0]), argv[1]
    rng = np.random.default_rng(0)
    if what == "boot":
        c, k = int(argv[2]), int(argv[3])
        y = rng.integers(0, c, n)
        p = rng.dirichlet(np.ones(c), n)
        p[np.arange(n), y] += 0.3
        p, y = torch.from_numpy((p / p.sum(1, keepdims=True)).astype(np.float32)), torch.from_numpy(y)
        names = [m for m in metric_names("classification") if not (m == "top3_accuracy" and c <= 3)]
        bootstrap_intervals("classification", p[:3000], y[:3000], c, names=names, n_boot=2, seed=0)
        timed(f"bootstrap: {n} rows, {c} classes, {k} resamples",
              lambda: bootstrap_intervals("classification", p, y, c, names=names, n_boot=k, seed=0))
    elif what == "ref":
        X = rng.normal(size=(n, 10)).astype(np.float32)
        y = (X[:, 0] + rng.normal(size=n) > 0).astype(int)
        reference_model("classification", X[:200], y[:200], X[:50], y[:50], seed=0)
        print(timed(f"reference model: {n} train rows, {n // 4} val rows",
                    lambda: reference_model("classification", X, y, X[: n // 4], y[: n // 4], seed=0)))
    elif what == "lab":
        p, y = rng.dirichlet(np.full(10, 0.3), n), rng.integers(0, 10, n)
        found = timed(f"label errors: {n} rows, 10 classes",
                      lambda: label_errors(Facts(task="classification", oos_proba=p, oos_true=y)))
        print({k: v for k, v in found.evidence.items() if k != "top"})
    else:
        raise SystemExit(f"error: unknown stage {what!r}; choose boot, ref or lab")


if __name__ == "__main__":
    main(sys.argv[1:])
