"""Percentile-bootstrap intervals of the metrics, in bounded time and memory at any number of rows.

A replicate resamples the ``n`` rows of a split with replacement (whole images for segmentation,
whole windows for language modeling) and recomputes each metric; the interval is the quantiles of
the replicates. Two ways to compute the same thing:

- **resample** (up to :data:`LOOP_ROWS` rows): :func:`resample_loop` copies the resampled rows and
  calls every metric on them — the numbers of earlier versions, bit for bit.
- **weights** (above): a replicate is held as the number of times each row was drawn,
  ``w = bincount(idx)``, for the very ``idx`` the loop would draw (one generator, seed for seed), and
  each metric is computed from sums weighted by ``w`` over values prepared once per split: the
  confusion matrix, per-row means, the calibration bins, and for ROC AUC and average precision the
  (negative, positive) rows at each distinct score of a class column (one sort per column, done
  once). The replicates are therefore the loop's replicates; only float rounding differs (the
  sums are float64, exact for counts; torchmetrics computes some metrics in float32).
  ``tests/test_bootstrap.py`` checks the two agree on every task, seed for seed.

Work and memory of the weights path, for ``n`` rows: memory O(n × columns) for the prepared values
(never a replicates × rows matrix); time O(n) per replicate for the draw and O(n × columns) per
metric, where ``columns`` is 1 for metrics of per-row values, the class (or label) columns for the
ranking metrics (ROC AUC, average precision) and per-label F1, and C² for segmentation's per-image
confusion matrices. ``evaluate.bootstrap_budget`` bounds one metric's work: it gets
``min(bootstrap, max(MIN_REPLICATES, budget // (n × columns)))`` replicates, always exact-size
resamples (fewer replicates make the interval's end points noisier, never narrower on average).
A metric with no weighted form here (one registered elsewhere) is recomputed on copied resamples,
charged :data:`COPY_COST` columns per score column. What was done is returned beside the intervals
(``summary.json`` → ``bootstrap``).
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import torch

from methodo.evaluate import metrics as M
from methodo.evaluate.metrics import Undefined
from methodo.progress import bar

LOOP_ROWS = 2_000  # up to this many rows the direct loop (the bundled examples' numbers, bit for bit)
MIN_REPLICATES = 50  # a budget never leaves a metric fewer replicates than this (nor than evaluate.bootstrap)
COPY_COST = 100  # a metric recomputed on copied rows costs about this many weighted sums per score column
DEFAULT_BUDGET = 300_000_000  # row × column visits per metric (evaluate.bootstrap_budget)


def percentile_intervals(task: str, scores, y, n_classes: int, *, names: list[str], n_boot: int, seed: int,
                         level: float = 0.95, budget: int = DEFAULT_BUDGET, loop_rows: int = LOOP_ROWS,
                         progress: bool = False) -> tuple[dict[str, list[float] | None], dict]:
    """``(intervals, info)``: each metric's ``[low, high]`` (``None`` when fewer than half of its
    replicates are defined), and ``info`` = ``{"method", "rows", "replicates": {metric: count}, "budget", "level"}``
    (``progress``: a bar over the replicates on a terminal)."""
    scores, y = torch.as_tensor(scores), torch.as_tensor(y)
    n = len(y)
    if n <= loop_rows:
        reps = dict.fromkeys(names, n_boot)
        samples = resample_loop(task, scores, y, n_classes, names=names, n_boot=n_boot, seed=seed, progress=progress)
    else:
        reps, samples = _weighted(task, scores, y, n_classes, names=names, n_boot=n_boot, seed=seed, budget=budget,
                                  progress=progress)
    alpha = (1 - level) / 2
    intervals = {k: ([float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))]
                     if len(v) >= 0.5 * reps[k] and v else None) for k, v in samples.items()}
    info = {"method": "resample" if n <= loop_rows else "weights", "rows": n, "replicates": reps, "budget": budget,
            "level": level}
    return intervals, info


def resample_loop(task: str, scores, y, n_classes: int, *, names: list[str], n_boot: int,
                  seed: int, progress: bool = False) -> dict[str, list[float]]:
    """The reference bootstrap: ``n_boot`` times, copy ``n`` rows drawn with replacement and compute
    every metric on them. The defined values of each metric, in replicate order."""
    scores, y = torch.as_tensor(scores), torch.as_tensor(y)
    rng = np.random.default_rng(seed)
    n = len(y)
    samples: dict[str, list[float]] = {k: [] for k in names}
    for _ in bar(range(n_boot), enabled=progress, desc="bootstrap", unit="resample"):
        idx = torch.from_numpy(rng.integers(0, n, n))
        for k, v in M.compute_metrics(task, scores[idx], y[idx], n_classes, names=names).items():
            if v is not None:
                samples[k].append(v)
    return samples


PAIRED_REPLICATES = 1000  # resamples of the paired bootstrap (fewer above 20,000 rows: bounded work)


def paired_interval(metric: str, scores_a, scores_b, y, *, seed: int = 0, level: float = 0.95,
                    replicates: int = PAIRED_REPLICATES) -> list[float] | None:
    """Percentile interval of ``metric(b) − metric(a)`` over paired resamples of the same rows (each
    replicate draws one set of rows and scores both models on it), or ``None`` when fewer than half of
    the replicates are defined. At most ``20·10⁶ / n`` replicates (at least 100): bounded work."""
    if metric not in M.METRICS:
        return None
    sa, sb, y = torch.as_tensor(scores_a), torch.as_tensor(scores_b), torch.as_tensor(y)
    n = len(y)
    if n < 2:
        return None
    n_classes = sa.shape[1] if sa.ndim == 2 else 0
    fn = M.METRICS.get(metric)
    reps = max(100, min(replicates, 20_000_000 // n))
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(reps):
        idx = torch.as_tensor(rng.integers(0, n, n))
        try:
            d = float(fn(sb[idx], y[idx], n_classes)) - float(fn(sa[idx], y[idx], n_classes))
        except Undefined:
            continue
        if math.isfinite(d):
            diffs.append(d)
    if len(diffs) < reps // 2:
        return None
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def _weighted(task, scores, y, n_classes, *, names, n_boot, seed, budget, progress=False):
    """The weights path: ``(replicates per metric, defined values per metric)``."""
    from methodo.tasks.base import metrics_task

    task = metrics_task(task)
    sums = _SUMS[task](scores, y, n_classes) if task in _SUMS else None
    n = len(y)
    fast = [k for k in names if sums is not None and k in sums.COLUMNS]
    copied_cols = COPY_COST * scores[0].numel()
    reps = {k: min(n_boot, max(MIN_REPLICATES, budget // (n * (sums.columns(k) if k in fast else copied_cols))))
            for k in names}
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {k: [] for k in names}
    for b in bar(range(max(reps.values(), default=0)), enabled=progress, desc="bootstrap", unit="resample"):
        idx = rng.integers(0, n, n)  # the loop's draw, so the loop's replicate
        due = [k for k in names if b < reps[k]]
        if any(k in fast for k in due):
            sums.weigh(np.bincount(idx, minlength=n).astype(np.float64))
        copied = [k for k in due if k not in fast]
        values = M.compute_metrics(task, scores[idx], y[idx], n_classes, names=copied) if copied else {}
        values.update({k: _defined(getattr(sums, k)) for k in due if k in fast})
        for k, v in values.items():
            if v is not None:
                samples[k].append(v)
    return reps, samples


def _defined(metric) -> float | None:
    """The value of a weighted metric, ``None`` where undefined (as :func:`compute_metrics` says)."""
    try:
        v = float(metric())
    except Undefined:
        return None
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------- weighted sums


def _ranked(score: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, int]:
    """Each row's key ``g + G × pos``, where ``g`` numbers the ``G`` distinct scores from the highest:
    ``bincount(key, weights=w)`` holds the negative rows at each score, then the positive ones."""
    order = np.argsort(score, kind="stable")[::-1]
    s = score[order]
    step = np.empty(len(s), dtype=np.intp)
    step[:1] = 0
    step[1:] = s[1:] != s[:-1]
    g = np.empty(len(s), dtype=np.intp)
    g[order] = np.cumsum(step)
    groups = int(g.max()) + 1 if len(g) else 0
    return g + groups * pos.astype(np.intp), groups


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # einsum, not a BLAS dot: BLAS threads stall for milliseconds when other processes hold the cores
    return float(np.einsum("i,i->", a, b))


class _Ranks:
    """A replicate's (negative, positive) rows at each distinct score of one column, highest first,
    and their running totals: what ROC AUC and average precision are read from."""

    def __init__(self, counts: np.ndarray):
        self.neg, self.pos = np.split(counts, 2)
        self.cum_neg, self.cum_pos = np.cumsum(self.neg), np.cumsum(self.pos)

    def auc(self) -> float:
        """ROC AUC: the chance a positive row outscores a negative one (ties count ½)."""
        p, n = self.cum_pos[-1], self.cum_neg[-1]
        if p * n == 0:
            return math.nan  # one class only: the callers say undefined before asking
        return (p * n - _dot(self.pos, self.cum_neg) + 0.5 * _dot(self.pos, self.neg)) / (p * n)

    def ap(self) -> float:
        """Average precision (scikit-learn's step sum): the precision at each score, weighted by its positives."""
        if self.cum_pos[-1] == 0:
            return math.nan
        seen = np.maximum(self.cum_pos + self.cum_neg, 1)  # 0 only where no row is seen yet (no positive either)
        return _dot(self.pos, self.cum_pos / seen) / self.cum_pos[-1]


class _Sums:
    """A split's rows prepared for weighted metrics. :meth:`weigh` sets a replicate's counts per row;
    each metric is a method of the same name reading sums weighted by them (shared sums are
    memoized per replicate). ``COLUMNS`` says each metric's cost per row: a number, or ``"classes"``
    (the class or label columns it ranks)."""

    COLUMNS: dict[str, int | str] = {}

    def __init__(self, scores: torch.Tensor, y: torch.Tensor, c: int):
        self.p, self.y, self.c, self.n = scores, y, c, len(y)
        self.w = np.ones(self.n)
        self._memo: dict = {}
        self._keys: dict[int, tuple[np.ndarray, int]] = {}

    def columns(self, name: str) -> int:
        cols = self.COLUMNS[name]
        return self.rank_columns if cols == "classes" else cols

    @property
    def rank_columns(self) -> int:
        return self.c

    def weigh(self, w: np.ndarray) -> None:
        self.w, self._memo = w, {}

    def mean(self, values: np.ndarray) -> float:
        """The replicate's mean of a per-row value."""
        return _dot(self.w, values) / self.n

    def ranked(self, k: int, score, pos) -> tuple[float, float]:
        """The replicate's ``(ROC AUC, average precision)`` of column ``k``: ``score()`` and ``pos()``
        give the column and which rows are positive (sorted once, at the first replicate). Both are
        kept, not the counts, so one column's counts are in memory at a time."""
        if k not in self._keys:
            self._keys[k] = _ranked(np.asarray(score()), np.asarray(pos()))
        if ("ranked", k) not in self._memo:
            key, groups = self._keys[k]
            r = _Ranks(np.bincount(key, weights=self.w, minlength=2 * groups))
            self._memo["ranked", k] = r.auc(), r.ap()
        return self._memo["ranked", k]


class _Classification(_Sums):
    COLUMNS = {"accuracy": 1, "balanced_accuracy": 1, "precision": 1, "recall": 1, "specificity": 1, "f1": 1,
               "mcc": 1, "cohen_kappa": 1, "top3_accuracy": 1, "log_loss": 1, "ece": 1,
               "roc_auc": "classes", "average_precision": "classes"}

    @property
    def rank_columns(self) -> int:
        return 1 if self.c == 2 else self.c

    @cached_property
    def cell(self) -> np.ndarray:
        return (self.y.long() * self.c + M._preds(self.p)).numpy()

    def cm(self) -> torch.Tensor:
        if "cm" not in self._memo:
            counts = np.bincount(self.cell, weights=self.w, minlength=self.c * self.c)
            self._memo["cm"] = torch.from_numpy(counts.reshape(self.c, self.c))
        return self._memo["cm"]

    def class_ranked(self, k: int) -> tuple[float, float]:
        return self.ranked(k, lambda: self.p[:, k], lambda: self.y == k)

    def present(self) -> np.ndarray:
        true = self.cm().sum(1).numpy() > 0
        if true.sum() < 2:
            raise Undefined("only one class is present")
        return true

    def accuracy(self):
        cm = self.cm()
        return cm.trace() / cm.sum()

    def balanced_accuracy(self):
        return M.balanced_accuracy_cm(self.cm())

    def precision(self):
        return M.precision_cm(self.cm())

    def recall(self):
        return M.recall_cm(self.cm())

    def specificity(self):
        return M.specificity_cm(self.cm())

    def f1(self):
        return M.f1_cm(self.cm())

    def mcc(self):
        return M.mcc_cm(self.cm())

    def cohen_kappa(self):  # torchmetrics' unweighted kappa, from the same confusion matrix
        cm = self.cm()
        expected = cm.sum(1, keepdim=True) @ cm.sum(0, keepdim=True) / cm.sum()
        off = ~torch.eye(self.c, dtype=torch.bool)
        return 1 - cm[off].sum() / expected[off].sum()

    @cached_property
    def hit3(self) -> np.ndarray:
        return (self.p.topk(3, dim=1).indices == self.y[:, None]).any(1).double().numpy()

    def top3_accuracy(self):
        if self.c <= 3:
            raise Undefined(f"top-3 accuracy needs more than 3 classes (there are {self.c})")
        return self.mean(self.hit3)

    @cached_property
    def nll(self) -> np.ndarray:
        return -torch.log(self.p[torch.arange(self.n), self.y].clamp_min(1e-12)).double().numpy()

    def log_loss(self):
        return self.mean(self.nll)

    @cached_property
    def calibration(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        conf, pred = self.p.max(1)  # the bins of the ece metric
        bins = torch.clamp(torch.ceil(conf.double() * 15).long() - 1, 0, 14)
        return bins.numpy(), (pred == self.y).double().numpy(), conf.double().numpy()

    def ece(self):
        bins, hit, conf = self.calibration
        gap = np.bincount(bins, weights=self.w * hit, minlength=15) - np.bincount(bins, weights=self.w * conf,
                                                                                    minlength=15)
        return np.abs(gap).sum() / self.n

    def roc_auc(self):
        present = self.present()
        if self.c == 2:
            return self.class_ranked(1)[0]
        # torchmetrics' macro average counts a class absent from the rows as 0 (over all C classes)
        return sum(self.class_ranked(k)[0] for k in np.flatnonzero(present)) / self.c

    def average_precision(self):
        present = self.present()
        if self.c == 2:
            return self.class_ranked(1)[1]
        return float(np.mean([self.class_ranked(k)[1] for k in np.flatnonzero(present)]))


class _Regression(_Sums):
    COLUMNS = {"mae": 1, "rmse": 1, "r2": 1}

    @cached_property
    def moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        err = (self.p.double() - self.y.double()).numpy()
        yc = self.y.double().numpy()
        yc = yc - yc.mean()  # centred: the replicate's variance without cancellation
        return np.abs(err), err * err, yc

    def mae(self):
        return self.mean(self.moments[0])

    def rmse(self):
        return math.sqrt(self.mean(self.moments[1]))

    def r2(self):
        if self.n < 2:
            raise Undefined("R² needs at least 2 rows")
        _, sq, yc = self.moments
        s1 = _dot(self.w, yc)
        rss, tss = _dot(self.w, sq), _dot(self.w, yc * yc) - s1 * s1 / self.n
        # torchmetrics' r2_score: 1 when the residuals are ~0, 0 when the target is ~constant (atol 1e-4)
        if rss <= 1e-4:
            return 1.0
        return 0.0 if tss <= 1e-4 else 1 - rss / tss


class _Segmentation(_Sums):
    COLUMNS = {"pixel_accuracy": "classes", "mean_iou": "classes", "dice": "classes"}

    @property
    def rank_columns(self) -> int:
        return self.c * self.c

    @cached_property
    def per_image(self) -> np.ndarray:
        """Each image's pixel confusion matrix, flattened: ``(n, C²)`` counts (a few million pixels at a
        time, so the temporaries stay small whatever the number of images)."""
        cells = self.c * self.c
        out = np.empty((self.n, cells))
        step = max(1, 2**22 // max(1, self.y[0].numel()))
        for s in range(0, self.n, step):
            p, y = self.p[s:s + step], self.y[s:s + step]
            pred = p if (p.ndim == y.ndim and not p.is_floating_point()) else p.argmax(1)
            pairs = (y.reshape(len(y), -1).long() * self.c + pred.reshape(len(y), -1).long()).numpy()
            pairs += (np.arange(len(y)) * cells)[:, None]
            out[s:s + step] = np.bincount(pairs.ravel(), minlength=len(y) * cells).reshape(len(y), cells)
        return out

    def cm(self) -> torch.Tensor:
        if "cm" not in self._memo:
            self._memo["cm"] = torch.from_numpy(np.einsum("i,ij->j", self.w, self.per_image).reshape(self.c, self.c))
        return self._memo["cm"]

    def pixel_accuracy(self):
        return M.pixel_accuracy_cm(self.cm())

    def mean_iou(self):
        return M.mean_iou_cm(self.cm())

    def dice(self):
        return M.dice_cm(self.cm())


class _Multilabel(_Sums):
    COLUMNS = {"subset_accuracy": 1, "hamming_loss": 1, "f1_macro": "classes", "f1_micro": "classes",
               "ap_macro": "classes", "roc_auc_macro": "classes"}

    @property
    def rank_columns(self) -> int:
        return self.p.shape[1]

    @cached_property
    def right(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row: 1 when every label is right, and the number of wrong labels."""
        right = M._decided(self.p) == self.y.long()
        return right.all(1).double().numpy(), (~right).sum(1).double().numpy()

    def subset_accuracy(self):
        return self.mean(self.right[0])

    def hamming_loss(self):
        return self.mean(self.right[1]) / self.p.shape[1]

    @cached_property
    def cells(self) -> np.ndarray:
        """Per label and row: 2 × decided + true (0 tn, 1 fn, 2 fp, 3 tp), shape ``(L, n)``."""
        return (2 * M._decided(self.p) + self.y.long()).T.contiguous().numpy()

    def label_stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if "stats" not in self._memo:
            c = np.stack([np.bincount(row, weights=self.w, minlength=4) for row in self.cells])
            self._memo["stats"] = c[:, 3], c[:, 2], c[:, 1]
        return self._memo["stats"]

    def f1_macro(self):
        tp, fp, fn = self.label_stats()
        den = 2 * tp + fp + fn
        if not (den > 0).any():
            raise Undefined("no label is present or predicted in any row")
        return (2 * tp[den > 0] / den[den > 0]).mean()

    def f1_micro(self):
        tp, fp, fn = (t.sum() for t in self.label_stats())
        if 2 * tp + fp + fn == 0:
            raise Undefined("no label is present or predicted in any row")
        return 2 * tp / (2 * tp + fp + fn)

    def label_ranked(self, k: int) -> tuple[float, float]:
        return self.ranked(k, lambda: self.p[:, k], lambda: self.y[:, k] == 1)

    def ap_macro(self):
        tp, fp, fn = self.label_stats()
        present = np.flatnonzero(tp + fn > 0)
        if not len(present):
            raise Undefined("no label is present in any row")
        return float(np.mean([self.label_ranked(k)[1] for k in present]))

    def roc_auc_macro(self):
        tp, fp, fn = self.label_stats()
        both = np.flatnonzero((tp + fn > 0) & (tp + fn < self.n))
        if not len(both):
            raise Undefined("no label has both values present")
        return float(np.mean([self.label_ranked(k)[0] for k in both]))


class _LanguageModeling(_Sums):
    COLUMNS = {"perplexity": 1, "bits_per_token": 1}

    @cached_property
    def row_mean(self) -> np.ndarray:
        return self.p.double().mean(1).numpy()  # every window has the same number of tokens

    def perplexity(self):
        return math.exp(-self.mean(self.row_mean))

    def bits_per_token(self):
        return -self.mean(self.row_mean) / math.log(2)


class _Forecasting(_Sums):
    COLUMNS = {"forecast_mae": 1, "forecast_rmse": 1, "mase": 1, "smape": 1}

    @cached_property
    def row_means(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float | None]:
        """Per row: mean |error|, mean squared error and mean sMAPE term over the horizon; the MASE scale."""
        t, scale = M.forecast_parts(self.p, self.y)
        err = (self.p.double() - t.double())
        return (err.abs().mean(1).numpy(), (err * err).mean(1).numpy(),
                M.smape_terms(self.p, t).mean(1).numpy(), scale)

    def forecast_mae(self):
        return self.mean(self.row_means[0])

    def forecast_rmse(self):
        return math.sqrt(self.mean(self.row_means[1]))

    def mase(self):
        return self.mean(self.row_means[0]) / M._mase_scale(self.row_means[3])

    def smape(self):
        return self.mean(self.row_means[2])


class _Generation(_Sums):
    COLUMNS = {"noise_mse": 1}

    def noise_mse(self):
        return self.mean(self.p.double().numpy())


_SUMS = {"classification": _Classification, "regression": _Regression, "segmentation": _Segmentation,
         "multilabel": _Multilabel, "language_modeling": _LanguageModeling,
         "forecasting": _Forecasting, "generation": _Generation}


def weighted_metrics() -> set[str]:
    """The metrics computed from weights above :data:`LOOP_ROWS` rows (the others are copied)."""
    return {name for cls in _SUMS.values() for name in cls.COLUMNS}
