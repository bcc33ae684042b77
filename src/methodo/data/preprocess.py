"""Transforms fitted on the training split only, then applied to every split.

Tables are standardized per feature; images per channel. A regression target is standardized
for training and predictions are mapped back to its units for evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from methodo.data.sources import Dataset
from methodo.data.split import split_indices
from methodo.errors import DataError


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
        if self.mean is None:
            return X.astype(np.float32, copy=False)
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
    tensors: dict[str, tuple]  # split → (X, y) torch tensors, scaled
    raw_y: dict[str, np.ndarray]  # split → y in original units / class indices
    preprocessor: Preprocessor
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.dataset.task

    @property
    def n_outputs(self) -> int:
        return self.dataset.n_classes if self.task == "classification" else 1


def prepare(ds: Dataset, data_cfg, seed: int) -> PreparedData:
    """Split ``ds``, fit scaling on the training split only, and build tensors for each split."""
    import torch

    s = data_cfg.split
    idx = split_indices(ds.y, method=s.method, val=s.val, test=s.test, seed=seed, task=ds.task)
    pre = Preprocessor(scale=data_cfg.scale).fit(ds.X[idx["train"]], ds.y[idx["train"]], ds.task)
    tensors, raw_y, counts = {}, {}, {}
    for name, rows in idx.items():
        X = torch.from_numpy(pre.transform_x(ds.X[rows]))
        y = torch.from_numpy(np.ascontiguousarray(pre.transform_y(ds.y[rows], ds.task)))
        tensors[name] = (X, y)
        raw_y[name] = ds.y[rows]
        if ds.task == "classification":
            bc = np.bincount(ds.y[rows], minlength=ds.n_classes)
            counts[name] = {c: int(n) for c, n in zip(ds.class_names, bc)}
            absent = [c for c, n in counts[name].items() if n == 0]
            if absent:
                total = int((ds.y == ds.class_names.index(absent[0])).sum())
                raise DataError(
                    f"data.split: class {absent[0]!r} ({total} rows in all) is absent from the {name} split "
                    f"(method {s.method!r}); use method 'stratified', larger fractions, or more rows of that class")
    return PreparedData(ds, idx, tensors, raw_y, pre, counts)
