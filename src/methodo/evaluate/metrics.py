"""Task metrics on torchmetrics, as a registry of scalar metrics plus per-class tables.

Every metric takes ``(scores, y, n_classes)`` as tensors: class probabilities ``(N, C)`` and class
indices for classification; predictions and targets in the target's units for regression.

Examples
--------
>>> import torch
>>> from methodo.evaluate.metrics import compute_metrics
>>> probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
>>> y = torch.tensor([0, 1, 1])
>>> round(compute_metrics("classification", probs, y, 2)["accuracy"], 3)
0.667
"""

from __future__ import annotations

import math

import numpy as np
import torch

from methodo.registry import Registry

METRICS = Registry("metric")


def _preds(p):
    return p.argmax(1)


def _cls(name, help, higher=True):
    def deco(fn):
        METRICS.register(name, fn, help=help, task="classification", higher_is_better=higher)
        return fn
    return deco


def _reg(name, help, higher=False):
    def deco(fn):
        METRICS.register(name, fn, help=help, task="regression", higher_is_better=higher)
        return fn
    return deco


@_cls("accuracy", "fraction of rows whose most probable class is right")
def accuracy(p, y, c):
    from torchmetrics.functional.classification import multiclass_accuracy

    return multiclass_accuracy(_preds(p), y, num_classes=c, average="micro")


@_cls("balanced_accuracy", "mean recall over classes (insensitive to class imbalance)")
def balanced_accuracy(p, y, c):
    from torchmetrics.functional.classification import multiclass_recall

    present = torch.bincount(y, minlength=c) > 0  # classes absent from y do not count
    per = multiclass_recall(_preds(p), y, num_classes=c, average="none")
    return per[present].mean()


@_cls("precision_macro", "precision averaged over classes")
def precision_macro(p, y, c):
    from torchmetrics.functional.classification import multiclass_precision

    return multiclass_precision(_preds(p), y, num_classes=c, average="macro")


@_cls("recall_macro", "recall averaged over classes")
def recall_macro(p, y, c):
    from torchmetrics.functional.classification import multiclass_recall

    return multiclass_recall(_preds(p), y, num_classes=c, average="macro")


@_cls("f1_macro", "F1 averaged over classes")
def f1_macro(p, y, c):
    from torchmetrics.functional.classification import multiclass_f1_score

    return multiclass_f1_score(_preds(p), y, num_classes=c, average="macro")


@_cls("roc_auc", "area under the ROC curve (binary: positive class; multiclass: one-vs-rest macro)")
def roc_auc(p, y, c):
    from torchmetrics.functional.classification import binary_auroc, multiclass_auroc

    if len(torch.unique(y)) < 2:
        return None  # undefined with a single class present
    if c == 2:
        return binary_auroc(p[:, 1], y)
    return multiclass_auroc(p, y, num_classes=c, average="macro")


@_cls("log_loss", "mean negative log-likelihood of the true class (the loss, as a metric)", higher=False)
def log_loss(p, y, c):
    return -torch.log(p[torch.arange(len(y)), y].clamp_min(1e-12)).mean()


@_reg("mae", "mean absolute error, in target units")
def mae(p, y, c):
    from torchmetrics.functional import mean_absolute_error

    return mean_absolute_error(p, y)


@_reg("rmse", "root mean squared error, in target units")
def rmse(p, y, c):
    from torchmetrics.functional import mean_squared_error

    return mean_squared_error(p, y).sqrt()


@_reg("r2", "coefficient of determination (1 is perfect, 0 is the mean predictor)", higher=True)
def r2(p, y, c):
    from torchmetrics.functional import r2_score

    return r2_score(p, y) if len(y) > 1 else None


def _num(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def compute_metrics(task: str, scores, y, n_classes: int = 0) -> dict[str, float | None]:
    """Every registered metric of ``task`` on one split; ``None`` where a metric is undefined."""
    scores, y = torch.as_tensor(scores), torch.as_tensor(y)
    return {e.name: _num(e.obj(scores, y, n_classes)) for e in METRICS.entries() if e.meta["task"] == task}


def classification_tables(probs, y, class_names: list[str]) -> dict:
    """Confusion matrix (rows: true class, columns: predicted) and per-class precision/recall/F1."""
    from torchmetrics.functional.classification import (
        multiclass_confusion_matrix, multiclass_f1_score, multiclass_precision, multiclass_recall,
    )

    probs, y = torch.as_tensor(probs), torch.as_tensor(y)
    c = len(class_names)
    pred = probs.argmax(1)
    cm = multiclass_confusion_matrix(pred, y, num_classes=c)
    per = {k: f(pred, y, num_classes=c, average="none").tolist() for k, f in (
        ("precision", multiclass_precision), ("recall", multiclass_recall), ("f1", multiclass_f1_score))}
    support = torch.bincount(y, minlength=c).tolist()
    return {
        "confusion_matrix": cm.tolist(),
        "per_class": [
            {"class": name, "precision": per["precision"][i], "recall": per["recall"][i],
             "f1": per["f1"][i], "support": support[i]}
            for i, name in enumerate(class_names)
        ],
    }


@torch.no_grad()
def predict(model, X: torch.Tensor, *, task: str, batch_size: int = 1024, device=None,
            inverse_y=None) -> np.ndarray:
    """Probabilities ``(N, C)`` for classification, predictions in target units for regression."""
    model.eval()
    device = device or next(model.parameters()).device
    outs = []
    for s in range(0, len(X), batch_size):
        out = model(X[s:s + batch_size].to(device)).float().cpu()
        outs.append(out.softmax(1) if task == "classification" else out.squeeze(-1))
    res = torch.cat(outs).numpy()
    return inverse_y(res) if (inverse_y is not None and task == "regression") else res
