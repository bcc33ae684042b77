"""Dataset sources: a registry of loaders, each returning a :class:`Dataset` held in memory.

Examples
--------
>>> from methodo.data.sources import DATASETS
>>> "digits" in DATASETS
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from methodo.errors import DataError, choices
from methodo.registry import Registry

DATASETS = Registry("dataset")


@dataclass
class Dataset:
    """A whole dataset in memory, before any split.

    ``X`` is float32, shaped ``(n, C, H, W)`` for images and ``(n, F)`` for tables, or int64 token
    ids ``(n, T)`` for text. ``y`` is int64 class indices for classification, float32 for
    regression, int64 masks ``(n, H, W)`` for segmentation and the next tokens ``(n, T)`` for
    language modeling.

    ``groups`` (optional) names the document each row was cut from: the split then keeps every
    document whole, so no held-out text was seen in training. ``extra`` holds evaluation-only sets
    that are never split nor trained on, e.g. ``{"ood": (X, y)}`` (out-of-domain text).
    """

    name: str
    task: Literal["classification", "regression", "segmentation", "language_modeling"]
    kind: Literal["image", "tabular", "text"]
    X: np.ndarray
    y: np.ndarray
    feature_names: list[str] = field(default_factory=list)
    class_names: list[str] | None = None
    description: str = ""
    groups: np.ndarray | None = None
    extra: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    extra_descriptions: dict[str, str] = field(default_factory=dict)
    vocab: list[str] | None = None  # language modeling: the token of each id

    @property
    def n_classes(self) -> int:
        return len(self.class_names or [])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.X.shape[1:])


def check_dataset_options(source: str, options: dict) -> None:
    """``data.options`` must be keyword options of the source's loader (a ConfigError names the key)."""
    from methodo.registry import check_kwargs

    if source in DATASETS:
        check_kwargs(DATASETS.get(source), options, reserved=("data_cfg",), what=f"dataset {source!r}")


def load_dataset(data_cfg) -> Dataset:
    """Load the dataset named by ``data_cfg.source`` (a :class:`~methodo.config.DataConfig`)."""
    loader = DATASETS.get(data_cfg.source, key="data.source")
    ds = loader(data_cfg, **getattr(data_cfg, "options", {}))
    if len(ds.y) == 0:
        raise DataError(f"dataset {ds.name!r} has no rows")
    return ds


def _sklearn(name: str, task, loader_name: str, description: str):
    def load(data_cfg) -> Dataset:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        X = np.asarray(bunch.data, dtype=np.float32)
        kind = "tabular"
        if name == "digits":  # the 8×8 images, as 1-channel images
            X = np.asarray(bunch.images, dtype=np.float32)[:, None, :, :]
            kind = "image"
        if task == "classification":
            y = np.asarray(bunch.target, dtype=np.int64)
            class_names = [str(c) for c in getattr(bunch, "target_names", np.unique(y))]
        else:
            y = np.asarray(bunch.target, dtype=np.float32)
            class_names = None
        feats = [str(f) for f in getattr(bunch, "feature_names", [])] or [f"x{i}" for i in range(X[0].size)]
        return Dataset(name, task, kind, X, y, feats, class_names, description)

    DATASETS.register(name, load, help=description, task=task)


_sklearn("digits", "classification", "load_digits", "scikit-learn digits: 1797 8×8 grayscale images, 10 classes")
_sklearn("breast_cancer", "classification", "load_breast_cancer", "scikit-learn breast cancer: 569 rows, 30 features, 2 classes")
_sklearn("wine", "classification", "load_wine", "scikit-learn wine: 178 rows, 13 features, 3 classes")
_sklearn("iris", "classification", "load_iris", "scikit-learn iris: 150 rows, 4 features, 3 classes")
_sklearn("diabetes", "regression", "load_diabetes", "scikit-learn diabetes: 442 rows, 10 features, regression")


@DATASETS.register("csv", help="a CSV file (data.path) with a target column (data.target); numeric features", task=None)
def load_csv(data_cfg) -> Dataset:
    """Read a CSV; the task is inferred from the target (text or ≤ 20 integer values: classification)."""
    import pandas as pd

    path = Path(data_cfg.path)
    if not path.is_file():
        raise DataError(f"{path}: CSV file not found (data.path)")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: CSV file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({str(exc).splitlines()[0]})") from None
    target = data_cfg.target
    if target not in df.columns:
        raise DataError(f"{path}: data.target column {target!r} not found; columns: {choices(list(df.columns))}")
    if len(df) == 0:
        raise DataError(f"{path}: CSV file has a header but no rows")
    features = [c for c in df.columns if c != target]
    if not features:
        raise DataError(f"{path}: no feature columns besides the target {target!r}")
    for col in features:
        if not pd.api.types.is_numeric_dtype(df[col]):
            bad = df[col][pd.to_numeric(df[col], errors="coerce").isna() & df[col].notna()]
            row = int(bad.index[0]) + 2 if len(bad) else "?"
            raise DataError(
                f"{path} row {row}: column {col!r} is not numeric (value {bad.iloc[0]!r}); "
                "only numeric feature columns are supported"
            )
    yraw = df[target]
    missing = yraw.isna()
    if missing.any():
        raise DataError(f"{path} row {int(missing.idxmax()) + 2}: missing value in target column {target!r}")
    feat_nan = df[features].isna()
    if feat_nan.any().any():
        r, c = np.argwhere(feat_nan.to_numpy())[0]
        raise DataError(f"{path} row {r + 2}: missing value in feature column {features[c]!r}")
    X = df[features].to_numpy(dtype=np.float32)
    numeric_target = pd.api.types.is_numeric_dtype(yraw) and not pd.api.types.is_bool_dtype(yraw)
    integer_like = numeric_target and np.all(np.asarray(yraw, dtype=float) == np.round(np.asarray(yraw, dtype=float)))
    if not numeric_target or (integer_like and yraw.nunique() <= 20):
        classes, y = np.unique(yraw.astype(str) if not numeric_target else yraw.to_numpy(), return_inverse=True)
        return Dataset(path.stem, "classification", "tabular", X, y.astype(np.int64), features,
                       [str(c) for c in classes], f"CSV {path.name}: {len(df)} rows")
    return Dataset(path.stem, "regression", "tabular", X, yraw.to_numpy(dtype=np.float32), features,
                   None, f"CSV {path.name}: {len(df)} rows")


# Generated and text datasets register themselves on import.
from methodo.data import shapes as _shapes, text as _text  # noqa: E402,F401
