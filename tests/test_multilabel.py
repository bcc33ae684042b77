"""Multi-label classification, the fourth task family added through the task registry alone."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import methodo
from methodo.evaluate.metrics import compute_metrics, metric_names
from methodo.tasks import task_spec

from conftest import EXAMPLES, FAST


def test_metrics_match_scikit_learn():
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    y = (rng.random((200, 4)) < [0.5, 0.3, 0.1, 0.7]).astype(np.float32)
    p = np.clip(y * 0.6 + rng.random((200, 4)) * 0.5, 0, 1).astype(np.float32)
    m = compute_metrics("multilabel", p, y, 4)
    pred = (p >= 0.5).astype(int)
    assert m["subset_accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["hamming_loss"] == pytest.approx(skm.hamming_loss(y, pred))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["f1_micro"] == pytest.approx(skm.f1_score(y, pred, average="micro"))
    assert m["ap_macro"] == pytest.approx(skm.average_precision_score(y, p, average="macro"))
    assert m["roc_auc_macro"] == pytest.approx(skm.roc_auc_score(y, p, average="macro"))
    assert set(metric_names("multilabel")) == set(m)


def test_undefined_labels_are_left_out_not_counted_as_zero():
    y = np.array([[1, 0], [1, 0], [0, 0]], dtype=np.float32)  # label 2 never present ...
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.3]], dtype=np.float32)  # ... and never predicted
    why: dict[str, str] = {}
    m = compute_metrics("multilabel", p, y, 2, undefined=why)
    assert m["f1_macro"] == 1.0  # label 1 is perfect; label 2 has no F1 and is left out
    assert m["roc_auc_macro"] == 1.0 and m["ap_macro"] == 1.0
    y0 = np.zeros_like(y)
    m = compute_metrics("multilabel", np.zeros_like(p), y0, 2, undefined=why)
    assert m["f1_macro"] is None and "no label" in why["f1_macro"]


def test_stratified_split_keeps_label_combinations():
    from methodo.data.split import split_indices

    rng = np.random.default_rng(1)
    y = (rng.random((600, 3)) < [0.5, 0.2, 0.6]).astype(np.float32)
    parts = split_indices(y, method="stratified", val=0.15, test=0.15, seed=0, task="multilabel")
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(600))
    share = {s: y[ix].mean(0) for s, ix in parts.items()}
    assert np.abs(share["test"] - share["train"]).max() < 0.03  # label frequencies kept in every split
    strata = task_spec("multilabel").strata(y)
    assert strata.ndim == 1 and len(np.unique(strata)) == 8  # 2^3 combinations, none rarer than 3 rows


def test_loss_and_epoch_score():
    spec = task_spec("multilabel")
    out = torch.tensor([[3.0, -3.0], [3.0, 3.0]])
    y = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    s, n = spec.batch_score(out, y)
    assert (float(s), n) == (1.0, 2)  # the second row has one label wrong
    assert float(spec.loss(out, y)) == pytest.approx(float(torch.nn.functional.binary_cross_entropy_with_logits(out, y)))


def test_multilabel_run_end_to_end(tmp_path):
    res = methodo.run(str(EXAMPLES / "digits_multilabel.yaml"), [*FAST, "train.epochs=4", "evaluate.bootstrap=50",
                                                                  "explain.enabled=false"], out=tmp_path / "ml")
    s = res.summary
    assert s["task"] == "multilabel" and s["status"] == "finished"
    assert s["data"]["classes"] == ["even", "above_4", "prime", "loop", "straight"]
    test = s["metrics"]["test"]
    assert set(test) == {"subset_accuracy", "hamming_loss", "f1_macro", "f1_micro", "ap_macro", "roc_auc_macro"}
    assert test["f1_macro"] > 0.8 > max(b["f1_macro"] for b in s["baselines"].values())
    assert test["hamming_loss"] < min(b["hamming_loss"] for b in s["baselines"].values())
    assert [r["label"] for r in s["tables"]["test"]["per_label"]] == s["data"]["classes"]
    rows = list(csv.DictReader((tmp_path / "ml" / "predictions_test.csv").open()))
    assert len(rows) == s["data"]["splits"]["test"]["n"] and "p_loop" in rows[0]
    assert all(set(r["true"].split("|")) <= set(s["data"]["classes"]) | {""} for r in rows)
    assert (tmp_path / "ml" / "figures" / "per_label.png").is_file()
    html = (tmp_path / "ml" / "report.html").read_text()
    assert 'id="per-label"' in html and "Per-label precision" in html
