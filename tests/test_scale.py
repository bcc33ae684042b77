"""Stages whose cost grows with the rows stay bounded (issue 11): the threshold sweep counts from sorted
scores (the same numbers as the direct thresholds × rows comparison, in linear memory: a million
validation rows once took 23 GB), and explanations run on a seeded sample of at most
``explain.max_rows`` test rows (100 000 rows once ran for more than 12 minutes)."""

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


def test_table_explanations_use_a_bounded_seeded_sample(tmp_path):
    import torch

    from methodo.explain.report import tabular_importance

    torch.manual_seed(0)
    X = torch.randn(100_000, 6)
    y = (X[:, 0] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    tracemalloc.start()
    res = tabular_importance(model, X, y, "classification", [f"f{i}" for i in range(6)], tmp_path / "fi.png",
                             repeats=2, seed=0, max_rows=300)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (res["rows"], res["rows_total"]) == (300, 100_000)
    assert peak < 100 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    again = tabular_importance(model, X, y, "classification", [f"f{i}" for i in range(6)], tmp_path / "fi2.png",
                               repeats=2, seed=0, max_rows=300)
    assert again["features"] == res["features"]  # the same seeded sample
