"""Task metrics on torchmetrics, as a registry of scalar metrics plus per-class tables.

Every metric takes ``(scores, y, n_classes)`` as tensors: class probabilities ``(N, C)`` and class
indices for classification; predictions and targets in the target's units for regression.

A metric that is mathematically undefined on the data (precision when nothing is predicted
positive, ROC AUC with one class present) raises :class:`Undefined` with the reason; it is reported
as ``None`` plus that reason — never as a silent 0 or NaN.

For two classes, ``precision``, ``recall``, ``f1`` and ``specificity`` are those of the positive
class (index 1); for more classes they are macro averages over the classes where they are defined.

Examples
--------
>>> import torch
>>> from methodo.evaluate.metrics import compute_metrics
>>> probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
>>> y = torch.tensor([0, 1, 1])
>>> m = compute_metrics("classification", probs, y, 2)
>>> round(m["accuracy"], 3), m["precision"], m["recall"]
(0.667, 1.0, 0.5)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from methodo.registry import Registry

METRICS = Registry("metric")


class Undefined(Exception):
    """The metric has no value on these data; the message says why."""


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


def _stats(p, y, c):
    """Per-class (tp, fp, tn, fn) as float tensors of shape (C,)."""
    from torchmetrics.functional.classification import multiclass_stat_scores

    s = multiclass_stat_scores(_preds(p), y, num_classes=c, average="none").double()
    return s[:, 0], s[:, 1], s[:, 2], s[:, 3]


def _ratio(num, den, c, what):
    """num/den per class; binary → the positive class; multiclass → mean over defined classes."""
    if c == 2:
        if den[1] == 0:
            raise Undefined(f"no row is {what} for the positive class")
        return num[1] / den[1]
    ok = den > 0
    if not ok.any():
        raise Undefined(f"no class has a row {what}")
    return (num[ok] / den[ok]).mean()


@_cls("accuracy", "fraction of rows whose most probable class is right")
def accuracy(p, y, c):
    return (_preds(p) == y).double().mean()


@_cls("balanced_accuracy", "mean recall over the classes present (insensitive to class imbalance)")
def balanced_accuracy(p, y, c):
    tp, fp, tn, fn = _stats(p, y, c)
    ok = (tp + fn) > 0
    return (tp[ok] / (tp[ok] + fn[ok])).mean()


@_cls("precision", "of the rows predicted positive, the fraction that are (binary: positive class; else macro)")
def precision(p, y, c):
    tp, fp, tn, fn = _stats(p, y, c)
    return _ratio(tp, tp + fp, c, "predicted")


@_cls("recall", "of the positive rows, the fraction found (sensitivity; binary: positive class; else macro)")
def recall(p, y, c):
    tp, fp, tn, fn = _stats(p, y, c)
    return _ratio(tp, tp + fn, c, "truly")


@_cls("specificity", "of the negative rows, the fraction rejected (binary: positive class; else macro)")
def specificity(p, y, c):
    tp, fp, tn, fn = _stats(p, y, c)
    return _ratio(tn, tn + fp, c, "negative")


@_cls("f1", "harmonic mean of precision and recall (binary: positive class; else macro)")
def f1(p, y, c):
    tp, fp, tn, fn = _stats(p, y, c)
    return _ratio(2 * tp, 2 * tp + fp + fn, c, "predicted or truly")


@_cls("mcc", "Matthews correlation: -1..1, 0 for chance, robust to imbalance")
def mcc(p, y, c):
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    # Gorodkin's multiclass form, from the confusion matrix; undefined when a side is constant
    cm = multiclass_confusion_matrix(_preds(p), y, num_classes=c).double()
    t, q, s = cm.sum(1), cm.sum(0), cm.sum()
    den = ((s * s - (q * q).sum()) * (s * s - (t * t).sum())).sqrt()
    if den == 0:
        raise Undefined("predictions or labels are all one class")
    return (cm.trace() * s - (t * q).sum()) / den


@_cls("cohen_kappa", "agreement with the labels beyond chance (0 = chance, 1 = perfect)")
def cohen_kappa(p, y, c):
    from torchmetrics.functional.classification import multiclass_cohen_kappa

    return multiclass_cohen_kappa(_preds(p), y, num_classes=c)


@_cls("top3_accuracy", "fraction of rows whose true class is among the 3 most probable (needs > 3 classes)")
def top3_accuracy(p, y, c):
    if c <= 3:
        raise Undefined(f"top-3 accuracy needs more than 3 classes (there are {c})")
    return (p.topk(3, dim=1).indices == y[:, None]).any(1).double().mean()


@_cls("roc_auc", "area under the ROC curve (binary: positive class; multiclass: one-vs-rest macro)")
def roc_auc(p, y, c):
    from torchmetrics.functional.classification import binary_auroc, multiclass_auroc

    if len(torch.unique(y)) < 2:
        raise Undefined("only one class is present")
    if c == 2:
        return binary_auroc(p[:, 1], y)
    return multiclass_auroc(p, y, num_classes=c, average="macro")


def _ap(score: torch.Tensor, pos: torch.Tensor) -> float:
    """Average precision as scikit-learn defines it: Σ (R_n − R_{n−1}) P_n over distinct thresholds."""
    order = torch.argsort(score, descending=True, stable=True)
    s, hit = score[order], pos[order].double()
    tp, fp = hit.cumsum(0), (1 - hit).cumsum(0)
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]  # ties share one threshold: keep the last row of each score value
    tp, fp = tp[last], fp[last]
    recall = tp / tp[-1]
    prev = torch.cat([recall.new_zeros(1), recall[:-1]])
    return float(((recall - prev) * tp / (tp + fp)).sum())


@_cls("average_precision", "area under the precision-recall curve (binary: positive class; else macro)")
def average_precision(p, y, c):
    if len(torch.unique(y)) < 2:
        raise Undefined("only one class is present")
    if c == 2:
        return _ap(p[:, 1], y == 1)
    return float(np.mean([_ap(p[:, k], y == k) for k in range(c) if (y == k).any()]))


@_cls("log_loss", "mean negative log-likelihood of the true class (the loss, as a metric)", higher=False)
def log_loss(p, y, c):
    return -torch.log(p[torch.arange(len(y)), y].clamp_min(1e-12)).mean()


@_cls("ece", "expected calibration error: |confidence − accuracy| over 15 confidence bins", higher=False)
def ece(p, y, c):
    # bins (k/15, (k+1)/15] of the top-class confidence; weighted mean gap between accuracy and confidence
    conf, pred = p.max(1)
    bins = torch.clamp(torch.ceil(conf.double() * 15).long() - 1, 0, 14)
    hit = torch.bincount(bins, weights=(pred == y).double(), minlength=15)
    sure = torch.bincount(bins, weights=conf.double(), minlength=15)
    return ((hit - sure).abs().sum() / len(y))


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

    if len(y) < 2:
        raise Undefined("R² needs at least 2 rows")
    return r2_score(p, y)


def metric_names(task: str) -> list[str]:
    return [e.name for e in METRICS.entries() if e.meta["task"] == task]


def compute_metrics(task: str, scores, y, n_classes: int = 0, *, names: list[str] | None = None,
                    undefined: dict[str, str] | None = None) -> dict[str, float | None]:
    """The task's metrics on one split; ``None`` where undefined (reasons go into ``undefined``)."""
    scores, y = torch.as_tensor(scores), torch.as_tensor(y)
    out: dict[str, float | None] = {}
    for name in names or metric_names(task):
        try:
            v = float(METRICS.get(name)(scores, y, n_classes))
            if not math.isfinite(v):
                raise Undefined("the value is not finite")
            out[name] = v
        except Undefined as why:
            out[name] = None
            if undefined is not None:
                undefined[name] = str(why)
    return out


def bootstrap_intervals(task: str, scores, y, n_classes: int, *, names: list[str], n_boot: int,
                        seed: int, level: float = 0.95) -> dict[str, list[float] | None]:
    """Percentile bootstrap interval of each metric: resample rows with replacement ``n_boot`` times."""
    scores, y = torch.as_tensor(scores), torch.as_tensor(y)
    rng = np.random.default_rng(seed)
    n = len(y)
    samples: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(n_boot):
        idx = torch.from_numpy(rng.integers(0, n, n))
        for k, v in compute_metrics(task, scores[idx], y[idx], n_classes, names=names).items():
            if v is not None:
                samples[k].append(v)
    alpha = (1 - level) / 2
    return {k: ([float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))] if len(v) >= 0.5 * n_boot else None)
            for k, v in samples.items()}


def classification_tables(probs, y, class_names: list[str]) -> dict:
    """Confusion matrix (rows: true class, columns: predicted), normalized too, and per-class metrics."""
    probs, y = torch.as_tensor(probs), torch.as_tensor(y)
    c = len(class_names)
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    cm = multiclass_confusion_matrix(probs.argmax(1), y, num_classes=c)
    tp, fp, tn, fn = _stats(probs, y, c)

    def div(a, b):
        return [float(x / z) if z > 0 else None for x, z in zip(a.tolist(), b.tolist())]

    prec, rec = div(tp, tp + fp), div(tp, tp + fn)
    f1s = div(2 * tp, 2 * tp + fp + fn)
    rows = cm.sum(1, keepdim=True).clamp_min(1)
    return {
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": (cm / rows).tolist(),
        "per_class": [
            {"class": name, "precision": prec[i], "recall": rec[i], "f1": f1s[i], "support": int(tp[i] + fn[i])}
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
