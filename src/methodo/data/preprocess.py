"""Transforms fitted on the training split only, then applied to every split.

The order, for one split (``prepare``):

1. split the rows (``data.split``; text: whole documents per split);
2. tables: the feature pipeline (categorical encoding, ``data.features``), fitted on train;
3. scaling: tables standardized per feature, images per channel, fitted on train (or a fixed
   ``normalize`` from ``data.augment``); text token ids are left as they are; a regression target
   standardized for training;
4. balancing (``data.balance``) of the training rows only;
5. images: the training-only augmentation pipeline (``data.augment``), run by the loop per batch.

Val and test are never resampled nor augmented.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from methodo.errors import ConfigError, DataError, short
from methodo.data.sources import Dataset
from methodo.data.split import split_groups, split_indices


@dataclass
class Preprocessor:
    """Feature (and regression target) scaling, fitted on training rows only."""

    scale: str = "standard"
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    y_mean: float = 0.0
    y_std: float = 1.0

    def fit(self, X: np.ndarray, y: np.ndarray, task: str) -> "Preprocessor":
        from methodo.tasks import task_spec

        if self.scale == "standard":
            axes = {2: (0,), 3: (0, 1)}.get(X.ndim, (0, 2, 3))  # per feature (of a table or a series), or image channel
            with np.errstate(over="ignore", invalid="ignore"):
                mean, std = X.mean(axis=axes, keepdims=True), X.std(axis=axes, keepdims=True)
            if not (np.isfinite(mean).all() and np.isfinite(std).all()):
                # float32 features near float32's limit (1e38) overflow in the float32 sums: redo in float64
                # (only then: the float32 sums are kept otherwise, so the numbers of ordinary data never move)
                mean, std = X.mean(axis=axes, keepdims=True, dtype=np.float64), X.std(axis=axes, keepdims=True,
                                                                                       dtype=np.float64)
            self.mean = mean.astype(np.float32)
            self.std = np.where(std > 1e-8, std, 1.0).astype(np.float32)  # constant features stay put
        if task_spec(task).standardize_target:
            self.y_mean, self.y_std = float(y.mean()), float(y.std() or 1.0)
            if X.ndim == 3:  # a series: the target is scaled as its input (variable 0), or not at all (scale: none)
                self.y_mean, self.y_std = ((float(self.mean.ravel()[0]), float(self.std.ravel()[0]))
                                           if self.mean is not None else (0.0, 1.0))
        return self

    @classmethod
    def fixed(cls, mean, std, channels: int) -> "Preprocessor":
        """A fixed per-channel normalization (``normalize`` with mean and std), the same for every split."""
        try:
            m = np.broadcast_to(np.asarray(mean, dtype=np.float32), (channels,)).reshape(1, channels, 1, 1)
            s = np.broadcast_to(np.asarray(std, dtype=np.float32), (channels,)).reshape(1, channels, 1, 1)
        except ValueError:
            raise ConfigError(f"data.augment: normalize has {np.size(mean)} mean and {np.size(std)} std value(s); "
                              f"the images have {channels} channel(s): give 1 or {channels}") from None
        return cls(scale="fixed", mean=m.copy(), std=s.copy())

    def transform_x(self, X: np.ndarray) -> np.ndarray:
        if self.mean is None:  # token ids stay integers
            return X if X.dtype.kind in "iu" else X.astype(np.float32, copy=False)
        with np.errstate(over="ignore", invalid="ignore"):
            out = ((X - self.mean) / self.std).astype(np.float32)
        if X.ndim == 2 and not np.isfinite(out).all() and np.isfinite(X).all():
            # a feature near float32's limit overflowed in X - mean: redo this table in float64
            out = ((X.astype(np.float64) - self.mean) / self.std).astype(np.float32)
        return out

    def transform_y(self, y: np.ndarray, task: str) -> np.ndarray:
        from methodo.tasks import task_spec

        if task_spec(task).standardize_target:
            return ((y - self.y_mean) / self.y_std).astype(np.float32)
        return y

    def inverse_y(self, y):
        return y * self.y_std + self.y_mean

    def to_json(self) -> str:
        return json.dumps({
            "scale": self.scale,
            "mean": None if self.mean is None else self.mean.ravel().tolist(),
            "std": None if self.std is None else self.std.ravel().tolist(),
            "shape": None if self.mean is None else list(self.mean.shape),
            "y_mean": self.y_mean, "y_std": self.y_std,
        })

    @classmethod
    def from_json(cls, text: str) -> "Preprocessor":
        d = json.loads(text)
        shape = d.get("shape")
        arr = (lambda v: None if v is None else np.asarray(v, dtype=np.float32).reshape(shape))
        return cls(scale=d["scale"], mean=arr(d["mean"]), std=arr(d["std"]), y_mean=d["y_mean"], y_std=d["y_std"])


@dataclass
class PreparedData:
    """Split, scaled tensors ready for the loop, plus what the later stages need to know.

    ``tensors['train']`` is what the loop trains on (after resampling, if any); ``inputs('train')``
    and ``raw_y['train']`` are the real training rows, used to report training metrics.
    """

    dataset: Dataset
    indices: dict[str, np.ndarray]
    tensors: dict[str, tuple]  # split → (X, y) torch tensors, scaled; train possibly resampled
    #   (plus evaluation-only sets, e.g. "ood")
    raw_y: dict[str, np.ndarray]  # split → y in original units / class indices (real rows)
    preprocessor: Preprocessor
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    class_counts_before_balancing: dict[str, int] | None = None
    balance: str = "none"
    class_weights: Any = None  # torch tensor (per class) for the loss, or None
    sample_weights: Any = None  # torch tensor (per training row) for the batch sampler, or None
    augment: Any = None  # callable on a training batch (AugmentPipeline), or None
    features: Any = None  # fitted scikit-learn Pipeline (tables), or None
    feature_names: list[str] = field(default_factory=list)
    train_inputs: Any = None  # the real (unresampled) training inputs when resampled

    @property
    def task(self) -> str:
        return self.dataset.task

    @property
    def n_outputs(self) -> int:
        """Model outputs per row: classes (per row or pixel), 1 value, the vocabulary (``TaskSpec.n_outputs``)."""
        from methodo.tasks import task_spec

        return task_spec(self.task).n_outputs(self.dataset)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.tensors["train"][0].shape[1:])

    def inputs(self, split: str):
        """The model inputs of the real rows of ``split`` (never resampled)."""
        if split == "train" and self.train_inputs is not None:
            return self.train_inputs
        return self.tensors[split][0]


def groups_for(ds: Dataset, split_cfg) -> np.ndarray | None:
    """The group of every row for ``method: group``: a CSV column, or a regex over image paths."""
    if split_cfg.method != "group":
        return None
    if not split_cfg.group:
        raise ConfigError("data.split.group: method 'group' needs data.split.group (a CSV column, or for images a "
                          "regex with one (...) capture over the file path, e.g. '(patient\\d+)_')")
    if "group" in ds.meta:
        return ds.meta["group"]
    if "path" in ds.meta:
        try:
            rx = re.compile(split_cfg.group)
        except re.error as exc:
            raise ConfigError(f"data.split.group: {short(split_cfg.group)} is not a valid regex ({exc})") from None
        out = []
        for p in ds.meta["path"]:
            m = rx.search(str(p))
            if m is None:
                raise DataError(f"{p}: data.split.group regex {short(split_cfg.group)} does not match this file's path")
            out.append(m.group(1) if m.groups() else m.group(0))
        return np.array(out, dtype=object)
    raise ConfigError(f"data.split.group: dataset {ds.name!r} has no group column; the group split works on a CSV "
                      "column or image file paths")


def _check_missing(ds: Dataset, steps: list) -> None:
    from methodo.data.features import parse_step

    if ds.kind != "tabular" or not np.isnan(ds.X).any():
        return
    if any(parse_step(s, i)[0] == "impute" for i, s in enumerate(steps)):
        return
    r, c = np.argwhere(np.isnan(ds.X))[0]
    n_missing = int(np.isnan(ds.X).sum())
    raise DataError(f"data: {n_missing} missing values (first: column {short(ds.feature_names[c])}, {ds.where(int(r))}); "
                    "add an imputer, e.g. data.features=[impute], or fix the data (see `methodo data inspect`)")


def _counts(y: np.ndarray, ds: Dataset) -> dict[str, int]:
    bc = np.bincount(y, minlength=ds.n_classes)
    return {c: int(n) for c, n in zip(ds.class_names, bc)}


def split_dataset(ds: Dataset, data_cfg, seed: int, *, fold: int | None = None) -> dict[str, np.ndarray]:
    """The seeded train/val/test row indices for ``ds`` under ``data_cfg.split``."""
    s = data_cfg.split
    if ds.groups is not None:  # rows cut from documents: whole documents go to one split
        return split_groups(ds.groups, val=s.val, test=s.test, seed=seed)
    fold = fold if fold is not None else s.fold
    from methodo.tasks import task_spec

    default = task_spec(ds.task).default_split  # forecasting: `time`, unless data.split.method is set
    method = default if default and "method" not in s.model_fields_set else s.method
    return split_indices(ds.y, method=method, val=s.val, test=s.test, seed=seed, task=ds.task,
                         X=ds.X if method in ("cluster", "time") else None, groups=groups_for(ds, s),
                         official=ds.official_test, folds=s.folds, fold=fold, clusters=s.clusters,
                         cluster_on=s.cluster_on)


def prepare(ds: Dataset, data_cfg, seed: int, *, fold: int | None = None,
            indices: dict[str, np.ndarray] | None = None, normalization: tuple | None = None) -> PreparedData:
    """Split ``ds``, fit every transform on the training split only, and build tensors for each split.

    ``normalization``: a fixed per-channel ``(mean, std)`` for images (a pretrained backbone's), used
    instead of a scaling fitted on train unless ``data.augment`` has its own ``normalize``."""
    import torch

    from methodo.data.augment import AugmentPipeline, fixed_normalization
    from methodo.data.balance import BALANCERS, balance, check_balance
    from methodo.data.features import build_pipeline, fit_transform, output_names

    steps = list(getattr(data_cfg, "features", []) or [])
    augment_items = list(data_cfg.augment or [])
    if ds.kind != "tabular" and steps:
        raise ConfigError(f"data.features: feature steps work on tables; dataset {ds.name!r} holds {ds.kind} "
                          "(use data.augment for images)")
    if ds.kind != "image" and augment_items:
        raise ConfigError(f"data.augment: augmentations work on images; dataset {ds.name!r} is a table "
                          "(use data.features for tables)")
    from methodo.tasks import task_spec

    spec = task_spec(ds.task)
    if spec.pixel_classes and augment_items:
        raise ConfigError("data.augment: the augmentations transform images only, the masks would not follow; "
                          "segmentation trains without data.augment")
    check_balance(data_cfg.balance, ds.task)
    idx = indices if indices is not None else split_dataset(ds, data_cfg, seed, fold=fold)
    tr = idx["train"]

    # 1. Tables: categorical encoding and feature steps, fitted on the training rows.
    X = ds.X
    pipe, names = None, list(ds.feature_names)
    if ds.kind == "tabular":
        _check_missing(ds, steps)
        n_cat = 0 if ds.cat is None else ds.cat.shape[1]
        pipe, _ = build_pipeline(steps, task=ds.task, seed=seed, feature_names=names + list(ds.cat_names),
                                 n_categorical=n_cat)
        if pipe is not None:
            Xin = X if not n_cat else np.concatenate([X.astype(object), ds.cat], axis=1)
            Xt_train = fit_transform(pipe, Xin[tr], ds.y[tr])
            X = np.empty((len(ds.y), Xt_train.shape[1]), dtype=np.float32)
            X[tr] = Xt_train
            rest = np.setdiff1d(np.arange(len(ds.y)), tr)
            if len(rest):
                X[rest] = np.asarray(pipe.transform(Xin[rest]), dtype=np.float32)
            names = output_names(pipe, names + list(ds.cat_names))
            if np.isnan(X).any():
                raise DataError("data.features: missing values remain after the feature steps; put `impute` "
                                "before the steps that need complete rows")

    # 2. Scaling fitted on train (or a fixed normalization for images).
    fixed = fixed_normalization(augment_items) if ds.kind == "image" else None
    if fixed is None and normalization is not None and ds.kind == "image":
        fixed = normalization
    if fixed is not None:
        pre = Preprocessor.fixed(*fixed, channels=X.shape[1])
    else:
        pre = Preprocessor(scale="none" if ds.kind in ("text", "graph") else data_cfg.scale).fit(X[tr], ds.y[tr], ds.task)

    tensors, raw_y, counts = {}, {}, {}
    sets = {name: (X[rows], ds.y[rows]) for name, rows in idx.items()} | dict(ds.extra)
    for name, (Xn, yn) in sets.items():
        Xs = torch.from_numpy(np.ascontiguousarray(pre.transform_x(Xn)))
        y = torch.from_numpy(np.ascontiguousarray(pre.transform_y(yn, ds.task)))
        tensors[name] = (Xs, y)
        # what the metrics score against: the targets (forecasting adds its baselines and MASE scale)
        raw_y[name] = yn if spec.eval_targets is None or name not in idx else spec.eval_targets(ds, idx[name], tr)
        if spec.pixel_classes and name in idx:  # pixels per class
            counts[name] = _counts(yn.ravel(), ds)
        if spec.has_classes:
            counts[name] = _counts(yn, ds)
            absent = [c for c, n in counts[name].items() if n == 0]
            if absent:
                total = int((ds.y == ds.class_names.index(absent[0])).sum())
                method = data_cfg.split.method
                fixes = ["use method 'stratified'"] if method != "stratified" else []  # not when it is already set
                fixes += ["larger data.split fractions", "more rows of that class"]
                raise DataError(
                    f"data.split: class {short(absent[0])} ({total} rows in all) is absent from the {name} split "
                    f"(method {method!r}); {', '.join(fixes[:-1])} or {fixes[-1]}")

    # 3. Balancing: the training rows only.
    data = PreparedData(ds, idx, tensors, raw_y, pre, counts, balance=data_cfg.balance, features=pipe,
                        feature_names=names)
    if spec.has_classes:
        data.class_counts_before_balancing = dict(counts["train"])
        if data_cfg.balance != "none":
            Xtr, ytr = tensors["train"]
            b = balance(data_cfg.balance, Xtr.numpy(), ytr.numpy(), n_classes=ds.n_classes, seed=seed)
            if BALANCERS.entry(data_cfg.balance).meta.get("resamples"):
                data.train_inputs = Xtr
                tensors["train"] = (torch.from_numpy(np.ascontiguousarray(b.X)), torch.from_numpy(b.y))
                counts["train"] = _counts(b.y, ds)
            if b.class_weights is not None:
                data.class_weights = torch.as_tensor(b.class_weights, dtype=torch.float32)
            if b.sample_weights is not None:
                data.sample_weights = torch.as_tensor(b.sample_weights, dtype=torch.float64)
    elif spec.pixel_classes and data_cfg.balance == "class_weights":  # pixels per class
        b = balance("class_weights", X[tr], ds.y[tr].ravel(), n_classes=ds.n_classes, seed=seed)
        data.class_weights = torch.as_tensor(b.class_weights, dtype=torch.float32)

    # 4. Images: training-only augmentation, applied per batch by the loop.
    if ds.kind == "image" and augment_items:
        aug = AugmentPipeline(augment_items, seed=seed, mean=pre.mean, std=pre.std)
        data.augment = aug if aug.steps else None
    return data


def dominant_class(masks: np.ndarray, background: int = 0) -> np.ndarray:
    """Per mask, its most frequent non-background class (``background`` when there is none)."""
    flat = masks.reshape(len(masks), -1)
    n_classes = int(flat.max()) + 1
    counts = np.stack([(flat == c).sum(1) for c in range(n_classes)], 1)
    counts[:, background] = 0
    return np.where(counts.max(1) > 0, counts.argmax(1), background)
