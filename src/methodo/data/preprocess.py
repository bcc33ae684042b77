"""Transforms fitted on the training split only, then applied to every split.

Tables are standardized per feature; images per channel; text token ids are left as they are.
A regression target is standardized for training and predictions are mapped back to its units for
evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

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
        if self.scale == "standard":
            axes = (0,) if X.ndim == 2 else (0, 2, 3)  # per feature, or per image channel
            self.mean = X.mean(axis=axes, keepdims=True).astype(np.float32)
            std = X.std(axis=axes, keepdims=True)
            self.std = np.where(std > 1e-8, std, 1.0).astype(np.float32)  # constant features stay put
        if task == "regression":
            self.y_mean, self.y_std = float(y.mean()), float(y.std() or 1.0)
        return self

    def transform_x(self, X: np.ndarray) -> np.ndarray:
        if self.mean is None:  # token ids stay integers
            return X if X.dtype.kind in "iu" else X.astype(np.float32, copy=False)
        return ((X - self.mean) / self.std).astype(np.float32)

    def transform_y(self, y: np.ndarray, task: str) -> np.ndarray:
        if task == "regression":
            return ((y - self.y_mean) / self.y_std).astype(np.float32)
        return y

    def inverse_y(self, y):
        return y * self.y_std + self.y_mean

    def to_json(self) -> str:
        return json.dumps({
            "scale": self.scale,
            "mean": None if self.mean is None else self.mean.ravel().tolist(),
            "std": None if self.std is None else self.std.ravel().tolist(),
            "y_mean": self.y_mean, "y_std": self.y_std,
        })


@dataclass
class PreparedData:
    """Split, scaled tensors ready for the loop, plus what the later stages need to know."""

    dataset: Dataset
    indices: dict[str, np.ndarray]
    tensors: dict[str, tuple]  # split → (X, y) torch tensors, scaled (plus evaluation-only sets, e.g. "ood")
    raw_y: dict[str, np.ndarray]  # split → y in original units / class indices
    preprocessor: Preprocessor
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.dataset.task

    @property
    def n_outputs(self) -> int:
        if self.task == "regression":
            return 1
        if self.task == "language_modeling":
            return len(self.dataset.vocab)
        return self.dataset.n_classes  # classes per row, or per pixel


def prepare(ds: Dataset, data_cfg, seed: int) -> PreparedData:
    """Split ``ds``, fit scaling on the training split only, and build tensors for each split."""
    import torch

    s = data_cfg.split
    if ds.groups is not None:  # rows cut from documents: whole documents go to one split
        idx = split_groups(ds.groups, val=s.val, test=s.test, seed=seed)
    elif ds.task == "segmentation":  # stratify images by their largest foreground class
        idx = split_indices(dominant_class(ds.y), method=s.method, val=s.val, test=s.test, seed=seed)
    else:
        idx = split_indices(ds.y, method=s.method, val=s.val, test=s.test, seed=seed, task=ds.task)
    scale = "none" if ds.kind == "text" else data_cfg.scale
    pre = Preprocessor(scale=scale).fit(ds.X[idx["train"]], ds.y[idx["train"]], ds.task)
    tensors, raw_y, counts = {}, {}, {}
    sets = {name: (ds.X[rows], ds.y[rows]) for name, rows in idx.items()} | dict(ds.extra)
    for name, (Xs, ys) in sets.items():
        X = torch.from_numpy(np.ascontiguousarray(pre.transform_x(Xs)))
        y = torch.from_numpy(np.ascontiguousarray(pre.transform_y(ys, ds.task)))
        tensors[name] = (X, y)
        raw_y[name] = ys
        if ds.task in ("classification", "segmentation") and name in idx:  # rows, or pixels
            bc = np.bincount(ys.ravel(), minlength=ds.n_classes)
            counts[name] = {c: int(n) for c, n in zip(ds.class_names, bc)}
    return PreparedData(ds, idx, tensors, raw_y, pre, counts)


def dominant_class(masks: np.ndarray, background: int = 0) -> np.ndarray:
    """Per mask, its most frequent non-background class (``background`` when there is none)."""
    flat = masks.reshape(len(masks), -1)
    n_classes = int(flat.max()) + 1
    counts = np.stack([(flat == c).sum(1) for c in range(n_classes)], 1)
    counts[:, background] = 0
    return np.where(counts.max(1) > 0, counts.argmax(1), background)
