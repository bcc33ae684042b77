"""Stages whose cost grows with the rows stay bounded (issue 11): the threshold sweep counts from sorted
scores (the same numbers as the direct thresholds × rows comparison, in linear memory: a million
validation rows once took 23 GB), and explanations run on a seeded sample of at most
``explain.max_rows`` test rows (100 000 rows once ran for more than 12 minutes).

On 10⁵ synthetic rows each of the evaluation stages below — metrics, bootstrap intervals, baselines,
tables and threshold sweep (``evaluate_splits``), the ROC and precision-recall figures, the reference
model, the label-error search — must finish in bounded memory (``tracemalloc`` peak, generous margins)
and bounded work, asserted on the work itself rather than on this machine's clock: how many resamples
the bootstrap drew of how many rows, how many rows the reference model was fitted on and scored, how
many rows the label-error search examined. The bootstrap once recomputed every metric on 300 copied
resamples (about 10 s per resample at 10⁵ rows and 10 classes); the reference model was fitted on
every training row (99 s at 10⁶ rows).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

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


MiB = 2**20
N = 100_000


def _peak(fn):
    """``(fn(), peak traced bytes)``."""
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _binary(n, rng):
    y = rng.integers(0, 2, n)
    p1 = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1).astype(np.float32)
    return np.stack([1 - p1, p1], 1), y


def test_evaluating_1e5_rows_is_bounded():
    """Metrics on every split, bootstrap intervals (all 300 resamples of all 10⁵ test rows: within the
    default budget), baselines, tables and the threshold swept on 10⁵ validation rows."""
    from methodo.config import EvaluateConfig
    from methodo.evaluate import evaluate_splits

    rng = np.random.default_rng(0)
    preds, ys = {}, {}
    for split, n in (("train", 1000), ("val", N), ("test", N)):
        preds[split], ys[split] = _binary(n, rng)
    ecfg = EvaluateConfig()
    evaluate_splits("classification", {k: v[:50] for k, v in preds.items()}, {k: v[:50] for k, v in ys.items()},
                    n_classes=2, class_names=["a", "b"], ecfg=EvaluateConfig(bootstrap=2), seed=0)  # imports, untraced
    out, peak = _peak(lambda: evaluate_splits("classification", preds, ys, n_classes=2, class_names=["a", "b"],
                                              ecfg=ecfg, seed=0))
    boot = out["bootstrap"]["test"]
    assert boot["method"] == "weights" and boot["rows"] == N
    assert boot["replicates"] == dict.fromkeys(out["metrics"]["test"], ecfg.bootstrap)  # ≤ budget / rows each
    assert N * max(boot["replicates"].values()) <= ecfg.bootstrap_budget
    lo, hi = out["intervals"]["test"]["roc_auc"]
    assert lo < out["metrics"]["test"]["roc_auc"] < hi and hi - lo < 0.01
    assert 0 < out["threshold"]["value"] < 1
    assert peak < 300 * MiB, f"peak {peak / MiB:.0f} MiB"


def test_bootstrap_budget_bounds_ranking_metrics_of_many_classes():
    from methodo.evaluate.bootstrap import MIN_REPLICATES, percentile_intervals
    from methodo.evaluate.metrics import metric_names

    rng = np.random.default_rng(1)
    c = 10
    y = rng.integers(0, c, N)
    p = rng.dirichlet(np.ones(c), N).astype(np.float32)
    p[np.arange(N), y] += 0.5
    p /= p.sum(1, keepdims=True)
    names = metric_names("classification")
    budget = N * 80  # per-row metrics (1 column): 80 resamples; ROC AUC and AP (10 columns): 8 → the floor
    (iv, info), peak = _peak(lambda: percentile_intervals("classification", p, y, c, names=names, n_boot=300, seed=0,
                                                          budget=budget))
    want = {k: MIN_REPLICATES if k in ("roc_auc", "average_precision") else 80 for k in names}
    assert info["replicates"] == want and info["rows"] == N
    assert all(iv[k] is not None for k in names)
    assert peak < 300 * MiB, f"peak {peak / MiB:.0f} MiB"


@pytest.mark.parametrize("classes", [2, 5])
def test_roc_and_pr_curves_of_1e5_rows(tmp_path, classes):
    """scikit-learn's curves sort the scores once (O(n log n)); no thresholds × rows matrix."""
    from methodo.report import plots

    rng = np.random.default_rng(2)
    y = rng.integers(0, classes, N)
    p = rng.dirichlet(np.ones(classes), N)
    p[np.arange(N), y] += 0.3
    p /= p.sum(1, keepdims=True)
    names = [f"c{k}" for k in range(classes)]
    made, peak = _peak(lambda: (plots.roc_curves(p, y, names, tmp_path / "roc.png"),
                                plots.pr_curves(p, y, names, tmp_path / "pr.png")))
    assert all(path.exists() for path in made)
    assert peak < 300 * MiB, f"peak {peak / MiB:.0f} MiB"


def test_reference_model_fits_a_capped_stratified_sample(monkeypatch):
    from sklearn.ensemble import HistGradientBoostingClassifier

    from methodo.evaluate.baselines import reference_model

    seen = {"fit": [], "predict": []}
    fit, predict = HistGradientBoostingClassifier.fit, HistGradientBoostingClassifier.predict
    monkeypatch.setattr(HistGradientBoostingClassifier, "fit",
                        lambda self, X, y, **kw: seen["fit"].append(len(X)) or fit(self, X, y, **kw))
    monkeypatch.setattr(HistGradientBoostingClassifier, "predict",
                        lambda self, X: seen["predict"].append(len(X)) or predict(self, X))
    rng = np.random.default_rng(3)
    X = rng.normal(size=(N, 8)).astype(np.float32)
    y = (X[:, 0] + rng.normal(size=N) > 1.2).astype(int)  # about 1 row in 6 positive
    cap = 3000
    reference_model("classification", X[:100], y[:100], X[:100], y[:100], seed=0)  # imports, untraced
    seen["fit"].clear(), seen["predict"].clear()
    ref, peak = _peak(lambda: reference_model("classification", X, y, X[: N // 2], y[: N // 2], seed=0,
                                              max_rows=cap))
    assert (ref["train_rows"], ref["train_rows_total"], ref["val_rows"], ref["val_rows_total"]) == (cap, N, cap, N // 2)
    assert seen["fit"] == [cap] and max(seen["predict"]) <= cap
    assert 0.7 < ref["val"] <= 1
    assert peak < 300 * MiB, f"peak {peak / MiB:.0f} MiB"


def test_sample_rows_keeps_class_proportions():
    from methodo.evaluate.baselines import sample_rows

    y = np.repeat([0, 1, 2], [90_000, 9_000, 1_000])
    keep = sample_rows(len(y), 5000, seed=0, strata=y)
    assert len(keep) == 5000 and np.all(np.diff(keep) > 0)
    assert np.bincount(y[keep]).tolist() == [4500, 450, 50]
    assert np.array_equal(keep, sample_rows(len(y), 5000, seed=0, strata=y))  # seeded
    assert len(sample_rows(10, 5, seed=0, strata=np.arange(10))) == 5  # one row per stratum: a plain sample


def test_label_error_search_on_1e5_rows_is_linear():
    from methodo.diagnose import Facts, label_errors

    rng = np.random.default_rng(4)
    c = 10
    y = rng.integers(0, c, N)
    p = rng.dirichlet(np.full(c, 0.2), N)
    # a model that learned something (label_errors stays silent otherwise): 80% of rows lean to their label
    lean = rng.random(N) < 0.8
    p[lean, y[lean]] += 2.0
    p /= p.sum(axis=1, keepdims=True)
    label_errors(Facts(task="classification", oos_proba=p[:100], oos_true=y[:100]))  # cleanlab imported: not measured
    found, peak = _peak(lambda: label_errors(Facts(task="classification", oos_proba=p, oos_true=y)))
    assert found.evidence["searched"] == N and len(found.evidence["top"]) == 5  # cleanlab over every row
    k = found.evidence["suspects"]
    assert 0 < k < N
    # linear: a few copies of the probabilities, plus the suspects' rows (what label_issues.csv will hold)
    assert peak < 4 * p.nbytes + 1024 * k, f"peak {peak / MiB:.0f} MiB for {p.nbytes / MiB:.0f} MiB of probabilities"
