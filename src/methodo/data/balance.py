"""Class balancing, applied to the training split only (val and test keep their true proportions).

Each balancer takes the training rows ``(X, y)`` and returns a :class:`Balanced`: resampled rows
(``undersample``, ``oversample``, ``smote``: imbalanced-learn, on the features of a table or on
the flattened pixels of an image), or weights for the loss (``class_weights``) or for drawing
batches (``weighted_sampler``: every epoch draws ``n`` rows with replacement, each class equally
likely).

Examples
--------
>>> import numpy as np
>>> from methodo.data.balance import balance
>>> X, y = np.arange(20, dtype=np.float32).reshape(10, 2), np.array([0] * 8 + [1] * 2)
>>> np.bincount(balance("oversample", X, y, n_classes=2, seed=0).y).tolist()
[8, 8]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from methodo.errors import ConfigError, DataError
from methodo.registry import Registry

BALANCERS = Registry("balancer")


@dataclass
class Balanced:
    """The training rows after balancing, and the weights the loop should use (or ``None``)."""

    X: np.ndarray
    y: np.ndarray
    class_weights: np.ndarray | None = None  # per class, for the loss
    sample_weights: np.ndarray | None = None  # per training row, for the batch sampler


def balance(name: str, X: np.ndarray, y: np.ndarray, *, n_classes: int, seed: int) -> Balanced:
    """Apply the balancer ``name`` to the training rows ``(X, y)``."""
    fn = BALANCERS.get(name, key="data.balance")
    return fn(X, y, n_classes=n_classes, seed=seed)


def check_balance(name: str, task: str) -> None:
    from methodo.tasks import task_spec

    spec = task_spec(task)
    if spec.pixel_classes and name == "class_weights":  # weights per pixel class
        return
    if name != "none" and not spec.has_classes:
        hint = "'none' or 'class_weights'" if spec.pixel_classes else "'none'"
        raise ConfigError(f"data.balance: {name!r} balances classes, but the task is {task}; use {hint}")


def _counts(y, n_classes):
    return np.bincount(y, minlength=n_classes)


def _resample(sampler, X, y):
    """imbalanced-learn on 2-D rows; images are flattened, resampled, and reshaped back."""
    shape = X.shape[1:]
    Xr, yr = sampler.fit_resample(X.reshape(len(X), -1), y)
    return np.ascontiguousarray(np.asarray(Xr, dtype=np.float32).reshape(-1, *shape)), np.asarray(yr, dtype=np.int64)


@BALANCERS.register("none", help="train on the split as it is")
def none(X, y, *, n_classes, seed):
    return Balanced(X, y)


@BALANCERS.register("undersample", help="drop random rows of the larger classes down to the smallest (imbalanced-learn)",
                    resamples=True)
def undersample(X, y, *, n_classes, seed):
    from imblearn.under_sampling import RandomUnderSampler

    return Balanced(*_resample(RandomUnderSampler(random_state=seed), X, y))


@BALANCERS.register("oversample", help="repeat random rows of the smaller classes up to the largest (imbalanced-learn)",
                    resamples=True)
def oversample(X, y, *, n_classes, seed):
    from imblearn.over_sampling import RandomOverSampler

    return Balanced(*_resample(RandomOverSampler(random_state=seed), X, y))


@BALANCERS.register("smote", help="synthesize minority rows between neighbours (SMOTE, imbalanced-learn; "
                    "tables: features, images: flattened pixels)", resamples=True)
def smote(X, y, *, n_classes, seed):
    from imblearn.over_sampling import SMOTE

    present = _counts(y, n_classes)
    present = present[present > 0]
    if present.min() < 2:
        raise DataError(f"data.balance: smote needs at least 2 training rows of each class (smallest has "
                        f"{int(present.min())}); use oversample or class_weights")
    k = int(min(5, present.min() - 1))  # SMOTE's default 5 neighbours, fewer for a tiny class
    return Balanced(*_resample(SMOTE(k_neighbors=k, random_state=seed), X, y))


def _inverse_frequency(y, n_classes):
    counts = _counts(y, n_classes).astype(np.float64)
    return len(y) / (n_classes * np.maximum(counts, 1))  # scikit-learn's "balanced" weights


@BALANCERS.register("class_weights", help="weight the loss of each class by n / (classes × count)")
def class_weights(X, y, *, n_classes, seed):
    return Balanced(X, y, class_weights=_inverse_frequency(y, n_classes).astype(np.float32))


@BALANCERS.register("weighted_sampler", help="draw each epoch's batches with replacement, every class equally likely")
def weighted_sampler(X, y, *, n_classes, seed):
    w = _inverse_frequency(y, n_classes)[y]
    return Balanced(X, y, sample_weights=(w / w.sum()).astype(np.float64))
