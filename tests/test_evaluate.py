"""Metrics (undefined is said, not hidden), bootstrap intervals, the threshold rules, baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methodo.diagnose import Facts, diagnose
from methodo.evaluate import METRICS, bootstrap_intervals, compute_metrics
from methodo.evaluate.baselines import baseline_metrics
from methodo.evaluate.threshold import at_threshold, choose, sweep


def _onehot(pred, c, conf=0.9):
    p = np.full((len(pred), c), (1 - conf) / (c - 1), dtype=np.float32)
    p[np.arange(len(pred)), pred] = conf
    return p


def test_the_course_trap_all_negative_model_on_99pct_negatives():
    y = np.array([0] * 990 + [1] * 10)
    probs = _onehot(np.zeros(1000, int), 2)
    why: dict = {}
    m = compute_metrics("classification", probs, y, 2, undefined=why)
    assert m["accuracy"] == pytest.approx(0.99)
    assert m["precision"] is None and "no row is predicted" in why["precision"]  # said, not a silent 0
    assert m["recall"] == 0.0 and m["balanced_accuracy"] == 0.5
    assert m["mcc"] is None and "all one class" in why["mcc"]
    f = Facts(task="classification", metrics={"test": m}, test_pred=np.zeros(1000, int), test_true=y,
              undefined=why, class_names=["negative", "positive"])
    found = {x.id: x for x in diagnose(f)}
    mm = found["misleading_metric"]
    assert mm.evidence["minority_recall"] == 0.0 and mm.evidence["majority_share"] == 0.99
    assert mm.evidence["precision"].startswith("undefined")
    assert "balanced accuracy" in mm.action


@pytest.mark.parametrize("name", [e.name for e in METRICS.entries() if e.meta["task"] == "classification"])
def test_every_classification_metric_is_perfect_on_perfect_predictions(name):
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3, 1, 2])
    p = _onehot(y, 4, conf=0.97)
    v = compute_metrics("classification", p, y, 4, names=[name])[name]
    best = {"log_loss": -np.log(0.97), "ece": 0.03}.get(name, 1.0)
    assert v == pytest.approx(best, abs=1e-5), name


@pytest.mark.parametrize("name", [e.name for e in METRICS.entries() if e.meta["task"] == "regression"])
def test_every_regression_metric_on_known_values(name):
    y = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    p = y + np.array([0.5, -0.5, 0.5, -0.5], dtype=np.float32)
    expected = {"mae": 0.5, "rmse": 0.5, "r2": 1 - 1.0 / 5.0}[name]
    assert compute_metrics("regression", p, y, names=[name])[name] == pytest.approx(expected, rel=1e-5)


def test_metrics_agree_with_scikit_learn():
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + 2 * np.eye(3)[y]
    p = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    m = compute_metrics("classification", p, y, 3)
    pred = p.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), rel=1e-5)
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y, pred), rel=1e-5)
    assert m["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred), rel=1e-5)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"), rel=1e-4)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p), rel=1e-4)
    p[:40] = np.round(p[:40], 1)  # ties in the scores
    ap = compute_metrics("classification", p, y, 3, names=["average_precision"])["average_precision"]
    assert ap == pytest.approx(np.mean([skm.average_precision_score(y == k, p[:, k]) for k in range(3)]), rel=1e-6)


def test_ece_matches_torchmetrics():
    from torchmetrics.functional.classification import multiclass_calibration_error

    rng = np.random.default_rng(3)
    p = torch.softmax(torch.from_numpy(rng.normal(size=(500, 4)) * 2), 1).float()
    y = torch.from_numpy(rng.integers(0, 4, 500))
    ours = compute_metrics("classification", p, y, 4, names=["ece"])["ece"]
    assert ours == pytest.approx(float(multiclass_calibration_error(p, y, num_classes=4, n_bins=15)), abs=1e-6)


def test_bootstrap_interval_brackets_the_value_and_shrinks_with_n():
    rng = np.random.default_rng(1)

    def width(n):
        y = rng.integers(0, 2, n)
        pred = np.where(rng.random(n) < 0.8, y, 1 - y)
        iv = bootstrap_intervals("classification", _onehot(pred, 2), y, 2, names=["accuracy"], n_boot=200, seed=0)
        acc = (pred == y).mean()
        lo, hi = iv["accuracy"]
        assert lo <= acc <= hi
        return hi - lo

    assert width(2000) < 0.5 * width(100)


def test_threshold_rules():
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.2).astype(int)
    p = np.clip(0.3 * y + rng.random(500) * 0.7, 0, 1)
    sw = sweep(p, y)
    t_f1, why = choose(sw, "max_f1")
    assert "F1" in why and np.nanmax(sw["f1"]) == pytest.approx(at_threshold(p, y, t_f1)["f1"])
    t_j, _ = choose(sw, "youden")
    m = at_threshold(p, y, t_j)
    assert m["recall"] + m["specificity"] - 1 == pytest.approx(np.nanmax(sw["youden"]))
    t_r, _ = choose(sw, "target_recall", 0.95)
    assert at_threshold(p, y, t_r)["recall"] >= 0.95
    assert at_threshold(p, y, t_r + 0.02)["recall"] < 0.95 or t_r > 0.97  # the highest such threshold
    t_p, why = choose(sw, "target_precision", 0.99)
    assert at_threshold(p, y, t_p)["precision"] >= 0.99 or "no threshold reaches" in why
    assert choose(sw, "fixed", 0.3)[0] == 0.3
    none_pos = at_threshold(p, y, 1.01)
    assert none_pos["precision"] is None and none_pos["recall"] == 0.0


def test_baselines_for_both_tasks():
    y_tr, y_te = np.array([0] * 80 + [1] * 20), np.array([0] * 40 + [1] * 10)
    b = baseline_metrics("classification", y_tr, y_te, 2, seed=0)
    assert set(b) == {"most_frequent", "stratified", "uniform"}
    assert b["most_frequent"]["accuracy"] == pytest.approx(0.8) and b["most_frequent"]["precision"] is None
    assert b["most_frequent"]["log_loss"] == pytest.approx(-(0.8 * np.log(0.8) + 0.2 * np.log(0.2)), rel=1e-4)
    r = baseline_metrics("regression", np.array([1.0, 2.0, 9.0]), np.array([2.0, 2.0]), 0, seed=0)
    assert r["median"]["mae"] == pytest.approx(0.0) and r["mean"]["mae"] == pytest.approx(2.0)


def test_intervals_threshold_and_undefined_land_in_summary(tmp_path):
    import json

    import methodo
    from conftest import EXAMPLES, FAST

    methodo.run(str(EXAMPLES / "breast_cancer.yaml"),
                ["train.epochs=4", "evaluate.bootstrap=50", "evaluate.threshold.rule=target_recall",
                 "evaluate.threshold.value=0.99", *FAST[1:]], out=tmp_path / "bc")
    s = json.loads((tmp_path / "bc" / "summary.json").read_text())
    for k, v in s["metrics"]["test"].items():
        lo, hi = s["intervals"]["test"][k]
        assert lo <= v + 1e-9 and v - 1e-9 <= hi, k
    assert "top3_accuracy" not in s["metrics"]["test"]  # undefined by construction for 2 classes: not listed
    th = s["threshold"]
    assert th["rule"] == "target_recall" and th["val"]["recall"] >= 0.99
    for name in ("threshold.png", "pr.png", "reliability.png"):
        assert (tmp_path / "bc" / "figures" / name).is_file()
    html = (tmp_path / "bc" / "report.html").read_text()
    assert 'id="threshold"' in html and "test 95% interval" in html
