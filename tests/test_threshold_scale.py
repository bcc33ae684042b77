"""The threshold sweep counts from sorted scores: the same numbers as the direct thresholds × rows
comparison, in memory linear in the rows (issue 11: a million validation rows once took 23 GB)."""

from __future__ import annotations

import tracemalloc

import numpy as np

from methodo.evaluate.threshold import at_threshold, choose, sweep


def _direct(p, y, thresholds):
    pred = p[None, :] >= thresholds[:, None]
    y = y.astype(bool)
    return {"tp": (pred & y).sum(1), "fp": (pred & ~y).sum(1), "fn": (~pred & y).sum(1), "tn": (~pred & ~y).sum(1)}


def test_sweep_equals_the_direct_count():
    rng = np.random.default_rng(0)
    for n in (1, 7, 300):
        p = np.round(rng.random(n), 2)  # ties on purpose
        y = rng.random(n) < 0.3
        t = np.unique(np.concatenate([np.linspace(0.005, 0.995, 199), p, [0.0, 1.0]]))
        sw, d = sweep(p, y, t), _direct(p, y, t)
        with np.errstate(divide="ignore", invalid="ignore"):
            recall = np.where(d["tp"] + d["fn"] > 0, d["tp"] / (d["tp"] + d["fn"]), np.nan)
            prec = np.where(d["tp"] + d["fp"] > 0, d["tp"] / (d["tp"] + d["fp"]), np.nan)
        np.testing.assert_array_equal(sw["recall"], recall)
        np.testing.assert_array_equal(sw["precision"], prec)
    assert at_threshold(np.array([0.2, 0.7]), np.array([0, 1]), 0.5)["f1"] == 1.0


def test_a_million_rows_sweep_in_linear_memory():
    rng = np.random.default_rng(1)
    n = 1_000_000
    p = rng.random(n)
    y = rng.random(n) < p  # calibrated scores
    tracemalloc.start()
    sw = sweep(p, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(sw["threshold"]) > n // 2  # one threshold per distinct score, as before
    assert peak < 200 * 2**20, f"peak {peak / 2**20:.0f} MiB"  # the matrix would need ~10^12 bytes
    t, why = choose(sw, "max_f1")
    assert 0.2 < t < 0.6 and "F1" in why
