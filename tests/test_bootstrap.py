"""The bootstrap's weights path gives the intervals of the straightforward loop (issue 11).

Above ``LOOP_ROWS`` rows a resample is held as counts per row, drawn from the same generator as the
loop, so on the same seed the two see the same resamples: their intervals agree to float rounding
(torchmetrics computes some metrics in float32), whatever the task, the ties, or the resamples on
which a metric is undefined. ``loop_rows=0`` forces the weights path on small data.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methodo.evaluate import bootstrap as B
from methodo.evaluate.metrics import metric_names


def _data(task: str, n: int, c: int, rng):
    if task == "classification":
        y = rng.integers(0, c, n)
        p = rng.dirichlet(np.ones(c), n)
        p[np.arange(n), y] += rng.random(n)
        return np.round(p / p.sum(1, keepdims=True), 2).astype(np.float32), y  # rounded: ties on purpose
    if task == "regression":
        y = rng.normal(size=n).astype(np.float32)
        return (y + rng.normal(size=n)).astype(np.float32), y
    if task == "multilabel":
        y = (rng.random((n, c)) < 0.3).astype(np.float32)
        return np.round(np.clip(0.4 * y + 0.6 * rng.random((n, c)), 0, 1), 2).astype(np.float32), y
    if task == "segmentation":  # decided class maps, as evaluate_splits passes them
        y = rng.integers(0, c, (n, 6, 6))
        return np.where(rng.random((n, 6, 6)) < 0.7, y, rng.integers(0, c, (n, 6, 6))), y
    y = rng.integers(0, c, (n, 8))
    return np.log(rng.random((n, 8))).astype(np.float32), y


def _loop_intervals(task, p, y, c, names, n_boot, seed, level=0.95):
    samples = B.resample_loop(task, p, y, c, names=names, n_boot=n_boot, seed=seed)
    a = (1 - level) / 2
    return {k: [float(np.quantile(v, a)), float(np.quantile(v, 1 - a))] if v and len(v) >= 0.5 * n_boot else None
            for k, v in samples.items()}


# torchmetrics' R² is float32: on a resample whose target barely varies (R² of -5000) it keeps 4 digits
_REL = {"r2": 1e-3}


def _assert_close(got, want, context):
    assert set(got) == set(want)
    for k in want:
        assert (got[k] is None) == (want[k] is None), (context, k, got[k], want[k])
        if want[k] is not None:
            assert got[k] == pytest.approx(want[k], rel=_REL.get(k, 1e-5), abs=1e-6), (context, k)


CASES = [("classification", 2), ("classification", 5), ("regression", 0), ("multilabel", 4),
         ("segmentation", 3), ("language_modeling", 7)]


@pytest.mark.parametrize("task,c", CASES, ids=[f"{t}-{c}" for t, c in CASES])
def test_weights_give_the_loop_intervals_seed_for_seed(task, c):
    rng = np.random.default_rng(0)
    names = metric_names(task)
    for n in (4, 30, 300):  # 4 rows: many resamples where a metric is undefined (one class, no positive)
        p, y = _data(task, n, c, rng)
        for seed in range(3):
            got, info = B.percentile_intervals(task, p, y, c, names=names, n_boot=40, seed=seed, loop_rows=0)
            assert info["method"] == "weights" and info["rows"] == n and set(info["replicates"].values()) == {40}
            _assert_close(got, _loop_intervals(task, p, y, c, names, 40, seed), (n, seed))


def test_small_splits_keep_the_loop_bit_for_bit():
    rng = np.random.default_rng(1)
    p, y = _data("classification", 500, 3, rng)
    names = metric_names("classification")
    got, info = B.percentile_intervals("classification", p, y, 3, names=names, n_boot=30, seed=4)
    assert info == {"method": "resample", "rows": 500, "replicates": dict.fromkeys(names, 30),
                    "budget": B.DEFAULT_BUDGET, "level": 0.95}
    assert got == _loop_intervals("classification", p, y, 3, names, 30, 4)  # exactly


def test_the_budget_bounds_each_metric_and_is_stated(monkeypatch):
    """Per-row metrics cost 1 column, ranking metrics C; a metric with no weighted form is recomputed on
    copied rows, at COPY_COST columns per score column. Fewer replicates are the loop's first ones."""
    rng = np.random.default_rng(2)
    n, c = 3000, 10
    p, y = _data("classification", n, c, rng)
    names = ["accuracy", "roc_auc", "log_loss"]
    columns = dict(B._Classification.COLUMNS)
    del columns["log_loss"]  # as if log_loss had no weighted form
    monkeypatch.setattr(B._Classification, "COLUMNS", columns)
    budget = n * 150  # accuracy: 150 replicates; roc_auc: 15 → the floor, 50; log_loss copied: 15 / 100 → 50
    got, info = B.percentile_intervals("classification", p, y, c, names=names, n_boot=200, seed=0, budget=budget)
    assert info["method"] == "weights" and info["budget"] == budget
    assert info["replicates"] == {"accuracy": 150, "roc_auc": 50, "log_loss": 50}
    for k, reps in info["replicates"].items():
        _assert_close({k: got[k]}, _loop_intervals("classification", p, y, c, [k], reps, 0), k)


def test_evaluate_splits_states_how_the_intervals_were_computed():
    from methodo.config import EvaluateConfig
    from methodo.evaluate import evaluate_splits

    rng = np.random.default_rng(3)
    preds, ys = {}, {}
    for s, n in (("train", 200), ("val", 100), ("test", 2500)):
        preds[s], ys[s] = _data("classification", n, 2, rng)
    out = evaluate_splits("classification", preds, ys, n_classes=2, class_names=["a", "b"],
                          ecfg=EvaluateConfig(bootstrap=60, bootstrap_budget=2500 * 55), seed=0)
    boot = out["bootstrap"]["test"]
    assert boot["method"] == "weights" and boot["rows"] == 2500
    assert boot["replicates"]["accuracy"] == 55 and boot["replicates"]["roc_auc"] == 55
    assert set(out["intervals"]["test"]) == set(boot["replicates"])
    off = evaluate_splits("classification", preds, ys, n_classes=2, class_names=["a", "b"],
                          ecfg=EvaluateConfig(bootstrap=0), seed=0)
    assert off["bootstrap"] is None and off["intervals"] == {"test": {}}
