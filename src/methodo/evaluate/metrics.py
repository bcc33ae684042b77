"""Task metrics, as a registry of scalar metrics plus per-class tables.

The classification and regression metrics are torchmetrics' own formulas, written here on the
predictions already collected (a confusion matrix by ``bincount``, ROC AUC from one sort per class
column, the regression sums): the same operations in the same order, so the same numbers to the last
bit (``tests/test_metrics_torchmetrics.py`` compares them with torchmetrics on random data). Importing
torchmetrics costs seconds (it imports torchvision and transformers when they are installed), more
than evaluating a million rows; it stays for perplexity and detection mAP.

Every metric takes ``(scores, y, n_classes)`` as tensors: class probabilities ``(N, C)`` and class
indices for classification; predictions and targets in the target's units for regression; class
probabilities ``(N, C, H, W)`` and masks ``(N, H, W)`` for segmentation; for language modeling the
natural-log probability the model gave each target token ``(N, T)`` and the targets.

Segmentation metrics are computed over all pixels of the split at once (the dataset-level IoU of
PASCAL VOC and Cityscapes), not averaged per image. Detection metrics (box IoU, mAP) are plain
functions at the end of this module: no task trains a detector yet.

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
# Registry metadata of every metric: its task, its direction, and ``best``, its value on a perfect
# prediction (the contract tests check it). The shorthands below are the common combinations.
_CLS = {"task": "classification", "higher_is_better": True, "best": 1.0}
_REG = {"task": "regression", "higher_is_better": False, "best": 0.0}
_SEG = {"task": "segmentation", "higher_is_better": True, "best": 1.0}
_LM = {"task": "language_modeling", "higher_is_better": False}
_GEN = {"task": "generation", "higher_is_better": False, "best": 0.0}


class Undefined(Exception):
    """The metric has no value on these data; the message says why."""


def _preds(p):
    return p.argmax(1)


def confusion_counts(pred, y, c) -> torch.Tensor:
    """Confusion matrix of decided classes (rows: true class, columns: predicted) as int64 counts
    (torchmetrics' ``multiclass_confusion_matrix``: one ``bincount`` of ``true × C + predicted``)."""
    return torch.bincount(y.reshape(-1).long() * c + pred.reshape(-1).long(), minlength=c * c).reshape(c, c)


def confusion(p, y, c) -> torch.Tensor:
    """Confusion matrix (rows: true class, columns: predicted) as float64 counts."""
    return confusion_counts(_preds(p), y, c).double()


def cm_stats(cm: torch.Tensor):
    """Per-class (tp, fp, tn, fn) of a confusion matrix, as float tensors of shape (C,).

    The metrics below that depend on the confusion matrix alone are written as functions of it
    (``*_cm``), so the bootstrap (``evaluate/bootstrap.py``) computes them from resampled counts.
    """
    tp = cm.diag()
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    return tp, fp, cm.sum() - tp - fp - fn, fn


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


def _one_class(y: torch.Tensor) -> bool:
    """Fewer than two distinct labels (O(n): no sort, unlike ``torch.unique``)."""
    return len(y) == 0 or not bool((y != y[0]).any())


@METRICS.register("accuracy", help="fraction of rows whose most probable class is right", **_CLS)
def accuracy(p, y, c):
    return (_preds(p) == y).double().mean()


@METRICS.register("balanced_accuracy", **_CLS,
                  help="mean recall over the classes present (insensitive to class imbalance)")
def balanced_accuracy(p, y, c):
    return balanced_accuracy_cm(confusion(p, y, c))


def balanced_accuracy_cm(cm):
    tp, fp, tn, fn = cm_stats(cm)
    ok = (tp + fn) > 0
    return (tp[ok] / (tp[ok] + fn[ok])).mean()


@METRICS.register("precision", **_CLS,
                  help="of the rows predicted positive, the fraction that are (binary: positive class; else macro)")
def precision(p, y, c):
    return precision_cm(confusion(p, y, c))


def precision_cm(cm):
    tp, fp, tn, fn = cm_stats(cm)
    return _ratio(tp, tp + fp, len(cm), "predicted")


@METRICS.register("recall", **_CLS,
                  help="of the positive rows, the fraction found (sensitivity; binary: positive class; else macro)")
def recall(p, y, c):
    return recall_cm(confusion(p, y, c))


def recall_cm(cm):
    tp, fp, tn, fn = cm_stats(cm)
    return _ratio(tp, tp + fn, len(cm), "truly")


@METRICS.register("specificity", **_CLS,
                  help="of the negative rows, the fraction rejected (binary: positive class; else macro)")
def specificity(p, y, c):
    return specificity_cm(confusion(p, y, c))


def specificity_cm(cm):
    tp, fp, tn, fn = cm_stats(cm)
    return _ratio(tn, tn + fp, len(cm), "negative")


@METRICS.register("f1", help="harmonic mean of precision and recall (binary: positive class; else macro)", **_CLS)
def f1(p, y, c):
    return f1_cm(confusion(p, y, c))


def f1_cm(cm):
    tp, fp, tn, fn = cm_stats(cm)
    return _ratio(2 * tp, 2 * tp + fp + fn, len(cm), "predicted or truly")


@METRICS.register("mcc", help="Matthews correlation: -1..1, 0 for chance, robust to imbalance", **_CLS)
def mcc(p, y, c):
    return mcc_cm(confusion(p, y, c))


def mcc_cm(cm):
    # Gorodkin's multiclass form, from the confusion matrix; undefined when a side is constant
    t, q, s = cm.sum(1), cm.sum(0), cm.sum()
    den = ((s * s - (q * q).sum()) * (s * s - (t * t).sum())).sqrt()
    if den == 0:
        raise Undefined("predictions or labels are all one class")
    return (cm.trace() * s - (t * q).sum()) / den


@METRICS.register("cohen_kappa", help="agreement with the labels beyond chance (0 = chance, 1 = perfect)", **_CLS)
def cohen_kappa(p, y, c):
    # torchmetrics' unweighted kappa: float32 counts, expected counts from the margins, off-diagonal sums
    cm = confusion_counts(_preds(p), y, c).float()
    expected = cm.sum(dim=1, keepdim=True) @ cm.sum(dim=0, keepdim=True) / cm.sum(dim=0, keepdim=True).sum()
    off = torch.ones_like(cm).flatten()
    off[:: c + 1] = 0
    off = off.reshape(c, c)
    return 1 - torch.sum(off * cm) / torch.sum(off * expected)


@METRICS.register("top3_accuracy", **_CLS,
                  help="fraction of rows whose true class is among the 3 most probable (needs > 3 classes)")
def top3_accuracy(p, y, c):
    if c <= 3:
        raise Undefined(f"top-3 accuracy needs more than 3 classes (there are {c})")
    return (p.topk(3, dim=1).indices == y[:, None]).any(1).double().mean()


@METRICS.register("roc_auc", **_CLS,
                  help="area under the ROC curve (binary: positive class; multiclass: one-vs-rest macro)")
def roc_auc(p, y, c):
    if _one_class(y):
        raise Undefined("only one class is present")
    if c == 2:
        return binary_auroc(p[:, 1], y)
    return multiclass_auroc(p, y, c)


def _roc(score: torch.Tensor, target: torch.Tensor, pos_label: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """ROC curve ``(fpr, tpr)`` from (0, 0), one point per distinct score, highest first (torchmetrics'
    ``_binary_clf_curve`` and ``_binary_roc_compute``: counts as float32 running sums; a rate whose
    class is absent is all zeros)."""
    order = torch.argsort(score, descending=True)
    score, target = score[order], target[order]
    ends = torch.where(score[1:] - score[:-1])[0]  # the last row of each distinct score, and the last row
    ends = torch.cat([ends, ends.new_full((1,), target.size(0) - 1)])
    tps = torch.cumsum((target == pos_label).to(torch.long) * 1.0, dim=0)[ends]
    fps = 1 + ends - tps
    tps, fps = torch.cat([tps.new_zeros(1), tps]), torch.cat([fps.new_zeros(1), fps])
    fpr = torch.zeros(len(fps), dtype=score.dtype) if fps[-1] <= 0 else fps / fps[-1]
    tpr = torch.zeros(len(tps), dtype=score.dtype) if tps[-1] <= 0 else tps / tps[-1]
    return fpr, tpr


def _probabilities(p: torch.Tensor, how: str) -> torch.Tensor:
    """Scores outside [0, 1] are taken as logits (torchmetrics' ``normalize_logits_if_needed``)."""
    if not torch.all((p >= 0) * (p <= 1)):
        p = p.sigmoid() if how == "sigmoid" else torch.softmax(p, dim=1)
    return p


def binary_auroc(score, y) -> torch.Tensor:
    """Area under the ROC curve of ``score`` for the positive class 1 (the trapezoidal rule, as
    torchmetrics' ``binary_auroc``)."""
    fpr, tpr = _roc(_probabilities(score.flatten(), "sigmoid"), y.flatten())
    return torch.trapz(tpr, fpr, dim=-1) * 1.0


def multiclass_auroc(p, y, c: int) -> torch.Tensor:
    """One-vs-rest ROC AUC of each class column, averaged over the columns (torchmetrics'
    ``multiclass_auroc(average="macro")``: a class absent from ``y`` counts as 0)."""
    p = _probabilities(p.transpose(0, 1).reshape(c, -1).T, "softmax")
    y = y.flatten()
    areas = []
    for k in range(c):
        fpr, tpr = _roc(p[:, k], y, pos_label=k)
        areas.append(torch.trapz(tpr, fpr, dim=-1) * 1.0)
    areas = torch.stack(areas)
    return areas[~torch.isnan(areas)].mean()


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


@METRICS.register("average_precision", **_CLS,
                  help="area under the precision-recall curve (binary: positive class; else macro)")
def average_precision(p, y, c):
    if _one_class(y):
        raise Undefined("only one class is present")
    if c == 2:
        return _ap(p[:, 1], y == 1)
    return float(np.mean([_ap(p[:, k], y == k) for k in range(c) if (y == k).any()]))


@METRICS.register("log_loss", help="mean negative log-likelihood of the true class (the loss, as a metric)",
                  task="classification", higher_is_better=False, best=0.0)
def log_loss(p, y, c):
    return -torch.log(p[torch.arange(len(y)), y].clamp_min(1e-12)).mean()


@METRICS.register("ece", help="expected calibration error: |confidence − accuracy| over 15 confidence bins",
                  task="classification", higher_is_better=False, best=0.0)
def ece(p, y, c):
    # bins (k/15, (k+1)/15] of the top-class confidence; weighted mean gap between accuracy and confidence
    conf, pred = p.max(1)
    bins = torch.clamp(torch.ceil(conf.double() * 15).long() - 1, 0, 14)
    hit = torch.bincount(bins, weights=(pred == y).double(), minlength=15)
    sure = torch.bincount(bins, weights=conf.double(), minlength=15)
    return ((hit - sure).abs().sum() / len(y))


@METRICS.register("mae", help="mean absolute error, in target units", **_REG)
def mae(p, y, c):
    p, y = p.reshape(-1), y.reshape(-1)  # torchmetrics' mean_absolute_error: sum, then divide
    return torch.sum(torch.abs(p - y), dim=0) / y.shape[0]


@METRICS.register("rmse", help="root mean squared error, in target units", **_REG)
def rmse(p, y, c):
    p, y = p.reshape(-1), y.reshape(-1)  # torchmetrics' mean_squared_error, then the root
    diff = p - y
    return (torch.sum(diff * diff, dim=0) / y.shape[0]).sqrt()


@METRICS.register("r2", help="coefficient of determination (1 is perfect, 0 is the mean predictor)",
                  task="regression", higher_is_better=True, best=1.0)
def r2(p, y, c):
    if len(y) < 2:
        raise Undefined("R² needs at least 2 rows")
    # torchmetrics' r2_score: sums of the target and of the residuals; 1 when the residuals are ~0 and
    # 0 when the target is ~constant (|sum| <= 1e-4), averaged over outputs
    residual = y - p
    rss = torch.sum(residual * residual, dim=0)
    total = torch.sum(y, dim=0)
    tss = torch.sum(y * y, dim=0) - total * (total / y.size(0))
    off_rss, off_tss = ~torch.isclose(rss, torch.zeros_like(rss), atol=1e-4), ~torch.isclose(
        tss, torch.zeros_like(tss), atol=1e-4)
    scores = torch.ones_like(rss)
    scores[off_rss & off_tss] = 1 - (rss[off_rss & off_tss] / tss[off_rss & off_tss])
    scores[off_rss & ~off_tss] = 0.0
    return torch.mean(scores)


# --------------------------------------------------------------------------- forecasting
# Predictions (N, H) in target units against the split's targets: y is (N, H), or (N, 4H + 1) as
# methodo.tasks.forecasting.eval_targets makes it (the targets, the baselines' forecasts, then the MASE
# scale in every row). Means are over all rows and horizon steps.
_FC = {"task": "forecasting", "higher_is_better": False, "best": 0.0}


def forecast_parts(p, y):
    """``(targets (N, H), MASE scale or None)`` of a forecasting split."""
    h = p.shape[1]
    return y[:, :h], (float(y[0, -1]) if y.shape[1] > h and len(y) else None)


def _mase_scale(scale) -> float:
    if scale is None:
        raise Undefined("MASE needs the training rows' naive MAE (the evaluation's targets carry it)")
    if not scale > 0:
        raise Undefined("the training series never changes from one step to the next: the naive MAE is 0")
    return scale


@METRICS.register("forecast_mae", help="mean absolute error over every row and horizon step, in target units", **_FC)
def forecast_mae(p, y, c):
    t, _ = forecast_parts(p, y)
    return (p.double() - t.double()).abs().mean()


@METRICS.register("forecast_rmse", help="root mean squared error over every row and horizon step, in target units",
                  **_FC)
def forecast_rmse(p, y, c):
    t, _ = forecast_parts(p, y)
    return ((p.double() - t.double()) ** 2).mean().sqrt()


@METRICS.register("mase", help="mean absolute scaled error: MAE divided by the one-step naive forecast's MAE on the "
                  "training rows (< 1 beats the naive forecast in-sample)", **_FC)
def mase(p, y, c):
    t, scale = forecast_parts(p, y)
    return (p.double() - t.double()).abs().mean() / _mase_scale(scale)


def smape_terms(p, t) -> torch.Tensor:
    """Per value: 200 |p - t| / (|p| + |t|) percent (0 where both are 0)."""
    p, t = p.double(), t.double()
    den = p.abs() + t.abs()
    return torch.where(den > 0, 200 * (p - t).abs() / torch.where(den > 0, den, 1.0), 0.0)


@METRICS.register("smape", help="symmetric mean absolute percentage error, 0-200%: 200|p-t|/(|p|+|t|) averaged",
                  **_FC)
def smape(p, y, c):
    t, _ = forecast_parts(p, y)
    return smape_terms(p, t).mean()


def pixel_confusion(p, y, c) -> torch.Tensor:
    """Confusion matrix over all pixels (rows: true class, columns: predicted).

    ``p`` is class probabilities ``(N, C, H, W)`` or already-decided class maps ``(N, H, W)``
    (the bootstrap passes maps, so the argmax is not redone for every resample).
    """
    pred = p if (p.ndim == y.ndim and not p.is_floating_point()) else p.argmax(1)
    pairs = y.reshape(-1).long() * c + pred.reshape(-1).long()
    return torch.bincount(pairs, minlength=c * c).reshape(c, c).double()


def _overlap(cm: torch.Tensor):
    tp = cm.diag()
    return tp, cm.sum(0) - tp, cm.sum(1) - tp  # tp, fp, fn per class


def per_class_iou(p, y, c) -> list[float | None]:
    """IoU of each class over all pixels; ``None`` for a class absent from both truth and prediction."""
    return iou_cm(pixel_confusion(p, y, c))


def iou_cm(cm) -> list[float | None]:
    tp, fp, fn = _overlap(cm)
    den = tp + fp + fn
    return [float(t / d) if d > 0 else None for t, d in zip(tp, den)]


@METRICS.register("pixel_accuracy", **_SEG,
                  help="fraction of pixels whose class is right (misleads when background dominates)")
def pixel_accuracy(p, y, c):
    return pixel_accuracy_cm(pixel_confusion(p, y, c))


def pixel_accuracy_cm(cm):
    return cm.trace() / cm.sum()


@METRICS.register("mean_iou", help="intersection over union per class over all pixels, averaged over classes present "
                  "in the truth or the prediction (background included)", **_SEG)
def mean_iou(p, y, c):
    return mean_iou_cm(pixel_confusion(p, y, c))


def mean_iou_cm(cm):
    vals = [v for v in iou_cm(cm) if v is not None]
    return sum(vals) / len(vals)


@METRICS.register("dice", **_SEG,
                  help="Dice / F1 per class (2·overlap / (predicted + true pixels)), averaged like mean_iou")
def dice(p, y, c):
    return dice_cm(pixel_confusion(p, y, c))


def dice_cm(cm):
    tp, fp, fn = _overlap(cm)
    ok = (2 * tp + fp + fn) > 0
    return (2 * tp[ok] / (2 * tp[ok] + fp[ok] + fn[ok])).mean()


@METRICS.register("perplexity", help="exp(mean negative log-likelihood per token): the number of equally likely next "
                  "tokens the model hesitates between (vocabulary size for a uniform guess)", **_LM, best=1.0)
def perplexity(p, y, c):
    return torch.exp(-p.double().mean())


@METRICS.register("bits_per_token", **_LM, best=0.0,
                  help="mean negative log2-likelihood per token (bits per character for a character model)")
def bits_per_token(p, y, c):
    return -p.double().mean() / math.log(2)


@METRICS.register("noise_mse", **_GEN, help="mean squared error of the predicted noise (diffusion's training "
                  "loss, at the same fixed steps and noise on every evaluation; predicting zero noise scores 1)")
def noise_mse(p, y, c):
    return p.double().mean()


def perplexity_from_logits(logits, target, *, ignore_index: int | None = None) -> float:
    """Perplexity of next-token ``logits`` ``(N, T, V)`` on ``target`` ``(N, T)`` (torchmetrics).

    Examples
    --------
    >>> import torch
    >>> round(perplexity_from_logits(torch.zeros(1, 5, 8), torch.zeros(1, 5, dtype=torch.long)), 4)
    8.0
    """
    from torchmetrics.functional.text import perplexity as tm_perplexity

    return float(tm_perplexity(torch.as_tensor(logits).float(), torch.as_tensor(target), ignore_index=ignore_index))


def segmentation_tables(probs, y, class_names: list[str]) -> dict:
    """Pixel confusion matrix and per-class IoU, Dice and pixel counts (true and predicted)."""
    probs, y = torch.as_tensor(probs), torch.as_tensor(y)
    c = len(class_names)
    cm = pixel_confusion(probs, y, c)
    tp, fp, fn = _overlap(cm)
    iou = per_class_iou(probs, y, c)
    rows = []
    for i, name in enumerate(class_names):
        d = 2 * tp[i] + fp[i] + fn[i]
        rows.append({"class": name, "iou": iou[i], "dice": float(2 * tp[i] / d) if d > 0 else None,
                     "true_pixels": int(tp[i] + fn[i]), "predicted_pixels": int(tp[i] + fp[i])})
    return {"confusion_matrix": cm.long().tolist(), "per_class": rows}


# --------------------------------------------------------------------------- detection


def box_iou(boxes1, boxes2) -> torch.Tensor:
    """Pairwise IoU ``(N, M)`` of boxes given as ``(x1, y1, x2, y2)`` (torchvision.ops.box_iou).

    Examples
    --------
    >>> import torch
    >>> box_iou(torch.tensor([[0., 0, 2, 2]]), torch.tensor([[1., 0, 3, 2], [5., 5, 6, 6]]))
    tensor([[0.3333, 0.0000]])
    """
    from torchvision.ops import box_iou as tv_box_iou

    b1, b2 = torch.as_tensor(boxes1, dtype=torch.float32), torch.as_tensor(boxes2, dtype=torch.float32)
    for name, b in (("boxes1", b1), ("boxes2", b2)):
        if b.ndim != 2 or b.shape[-1] != 4:
            raise ValueError(f"{name}: expected boxes of shape (N, 4) as x1, y1, x2, y2 (got {tuple(b.shape)})")
        if ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any():
            raise ValueError(f"{name}: a box has x2 < x1 or y2 < y1; boxes are (x1, y1, x2, y2)")
    return tv_box_iou(b1, b2)


def mean_average_precision(preds: list[dict], targets: list[dict], *, iou_thresholds: list[float] | None = None
                           ) -> dict[str, float]:
    """COCO-style mAP of detections (torchmetrics ``MeanAveragePrecision``, box IoU).

    ``preds``: one dict per image with ``boxes`` ``(N, 4)`` as x1, y1, x2, y2, ``scores`` ``(N,)``,
    ``labels`` ``(N,)``; ``targets``: ``boxes`` and ``labels``. Returns ``map`` (averaged over IoU
    thresholds 0.50:0.95), ``map_50``, ``map_75`` and ``mar_100`` (recall with up to 100
    detections); a value is ``None`` when undefined (no ground-truth box).
    """
    from torchmetrics.detection import MeanAveragePrecision

    m = MeanAveragePrecision(iou_type="bbox", box_format="xyxy", iou_thresholds=iou_thresholds)
    conv = lambda d: {k: torch.as_tensor(v, dtype=torch.float32 if k != "labels" else torch.long) for k, v in d.items()}
    m.update([conv(p) for p in preds], [conv(t) for t in targets])
    out = m.compute()
    res = {}
    for k in ("map", "map_50", "map_75", "mar_100"):
        v = float(out[k])
        res[k] = None if v < 0 else v  # torchmetrics reports -1 where there is nothing to score
    return res


def metric_names(task: str) -> list[str]:
    from methodo.tasks.base import metrics_task

    task = metrics_task(task)
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
    """Percentile bootstrap interval of each metric: resample rows with replacement ``n_boot`` times
    (``evaluate/bootstrap.py``: bounded work on large splits, and what was done)."""
    from methodo.evaluate.bootstrap import percentile_intervals

    return percentile_intervals(task, scores, y, n_classes, names=names, n_boot=n_boot, seed=seed, level=level)[0]


def classification_tables(probs, y, class_names: list[str]) -> dict:
    """Confusion matrix (rows: true class, columns: predicted), normalized too, and per-class metrics."""
    probs, y = torch.as_tensor(probs), torch.as_tensor(y)
    c = len(class_names)
    cm = confusion_counts(probs.argmax(1), y, c)
    tp, fp, tn, fn = cm_stats(cm.double())

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
            inverse_y=None, y: torch.Tensor | None = None) -> np.ndarray:
    """The task's scores of every row (``TaskSpec.to_scores``): probabilities ``(N, C)`` for
    classification, predictions in target units for regression (``inverse_y`` undoes the target
    scaling), per-pixel probabilities ``(N, C, H, W)`` for segmentation, and for language modeling the
    log probability of each target token ``(N, T)`` (``y``, the targets, is then required)."""
    from methodo.tasks import task_spec

    spec = task_spec(task)
    model.eval()
    device = device or next(model.parameters()).device
    outs = []
    for s in range(0, len(X), batch_size):
        out = model(X[s:s + batch_size].to(device)).float()
        target = y[s:s + batch_size].to(device) if spec.scores_need_targets else None
        outs.append(spec.to_scores(out, target).cpu())
    res = torch.cat(outs).numpy()
    return inverse_y(res) if (inverse_y is not None and spec.standardize_target) else res


# --------------------------------------------------------------------------- multi-label
# Several yes/no labels per row, scored from per-label probabilities (N, L) against 0/1 targets (N, L);
# a label is predicted present when its probability is at least 0.5. Per-label averages (f1_macro,
# ap_macro, roc_auc_macro) are taken over the labels where the value is defined (a label never present
# and never predicted has no F1): an undefined label is left out, never counted as 0.

THRESHOLD = 0.5


def _decided(p):
    return (p >= THRESHOLD).long()


def _label_stats(p, y):
    """Per-label (tp, fp, fn) as float tensors of shape (L,)."""
    pred, y = _decided(p), y.long()
    tp = (pred & y).sum(0).double()
    return tp, (pred & (1 - y)).sum(0).double(), ((1 - pred) & y).sum(0).double()


@METRICS.register("subset_accuracy", help="fraction of rows whose every label is right (exact match)",
                  task="multilabel", higher_is_better=True, best=1.0)
def subset_accuracy(p, y, c):
    return (_decided(p) == y.long()).all(1).double().mean()


@METRICS.register("hamming_loss", help="fraction of wrong label decisions over all rows × labels",
                  task="multilabel", higher_is_better=False, best=0.0)
def hamming_loss(p, y, c):
    return (_decided(p) != y.long()).double().mean()


@METRICS.register("f1_macro", help="F1 of each label, averaged over the labels where it is defined",
                  task="multilabel", higher_is_better=True, best=1.0)
def f1_macro(p, y, c):
    tp, fp, fn = _label_stats(p, y)
    den = 2 * tp + fp + fn
    if not (den > 0).any():
        raise Undefined("no label is present or predicted in any row")
    return (2 * tp[den > 0] / den[den > 0]).mean()


@METRICS.register("f1_micro", help="F1 of all label decisions pooled (frequent labels weigh more)",
                  task="multilabel", higher_is_better=True, best=1.0)
def f1_micro(p, y, c):
    tp, fp, fn = (t.sum() for t in _label_stats(p, y))
    if 2 * tp + fp + fn == 0:
        raise Undefined("no label is present or predicted in any row")
    return 2 * tp / (2 * tp + fp + fn)


@METRICS.register("ap_macro", help="average precision of each label's ranking, averaged over labels present",
                  task="multilabel", higher_is_better=True, best=1.0)
def ap_macro(p, y, c):
    present = [k for k in range(y.shape[1]) if (y[:, k] == 1).any()]
    if not present:
        raise Undefined("no label is present in any row")
    return float(np.mean([_ap(p[:, k], y[:, k] == 1) for k in present]))


@METRICS.register("roc_auc_macro", help="ROC AUC of each label, averaged over labels with both values present",
                  task="multilabel", higher_is_better=True, best=1.0)
def roc_auc_macro(p, y, c):
    both = [k for k in range(y.shape[1]) if 0 < int(y[:, k].sum()) < len(y)]
    if not both:
        raise Undefined("no label has both values present")
    return float(np.mean([float(binary_auroc(p[:, k], y[:, k].long())) for k in both]))


def multilabel_tables(probs, y, label_names: list[str]) -> dict:
    """Per label: precision, recall, F1 and average precision (``None`` where undefined), support, and
    how often it is predicted."""
    probs, y = torch.as_tensor(probs), torch.as_tensor(y)
    tp, fp, fn = _label_stats(probs, y)
    div = lambda a, b: float(a / b) if b > 0 else None  # noqa: E731
    rows = []
    for k, name in enumerate(label_names):
        rows.append({"label": name, "precision": div(tp[k], tp[k] + fp[k]), "recall": div(tp[k], tp[k] + fn[k]),
                     "f1": div(2 * tp[k], 2 * tp[k] + fp[k] + fn[k]),
                     "average_precision": _ap(probs[:, k], y[:, k] == 1) if (y[:, k] == 1).any() else None,
                     "support": int(tp[k] + fn[k]), "predicted": int(tp[k] + fp[k])})
    return {"per_label": rows}
