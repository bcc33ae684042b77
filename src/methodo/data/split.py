"""Seeded train/val/test splits. Each method returns sorted, disjoint index arrays covering all rows.

Examples
--------
>>> import numpy as np
>>> from methodo.data.split import split_indices
>>> y = np.array([0] * 80 + [1] * 20)
>>> parts = split_indices(y, method="stratified", val=0.1, test=0.2, seed=0)
>>> [int((y[parts[s]] == 1).sum()) for s in ("train", "val", "test")]
[14, 2, 4]
"""

from __future__ import annotations

import numpy as np

from methodo.errors import DataError
from methodo.registry import Registry

SPLITS = Registry("split")


def split_indices(y: np.ndarray, *, method: str, val: float, test: float, seed: int,
                  task: str = "classification") -> dict[str, np.ndarray]:
    """Split row indices into ``train``/``val``/``test`` with the named method."""
    fn = SPLITS.get(method, key="data.split.method")
    parts = fn(np.asarray(y), val=val, test=test, seed=seed, task=task)
    for name, idx in parts.items():
        if len(idx) == 0:
            raise DataError(
                f"data.split: the {name} split is empty ({len(y)} rows, val={val}, test={test}); "
                "use more data or larger fractions"
            )
    return {k: np.sort(v) for k, v in parts.items()}


def _two_stage(y, *, val, test, seed, stratify):
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        rest, te = train_test_split(idx, test_size=test, random_state=seed,
                                    stratify=None if stratify is None else stratify)
        strat_rest = None if stratify is None else stratify[rest]
        tr, va = train_test_split(rest, test_size=val / (1 - test), random_state=seed + 1,
                                  stratify=strat_rest)
    except ValueError as exc:
        raise DataError(f"data.split: cannot split {len(y)} rows this way: {exc}") from None
    return {"train": tr, "val": va, "test": te}


@SPLITS.register("random", help="shuffle rows, then cut train/val/test by the fractions")
def random_split(y, *, val, test, seed, task):
    return _two_stage(y, val=val, test=test, seed=seed, stratify=None)


@SPLITS.register("stratified", help="keep class proportions in every split (quantile bins for regression)")
def stratified_split(y, *, val, test, seed, task):
    strata = y
    if task == "regression":  # stratify a continuous target by its quintiles
        strata = np.digitize(y, np.quantile(y, [0.2, 0.4, 0.6, 0.8]))
    return _two_stage(y, val=val, test=test, seed=seed, stratify=strata)
