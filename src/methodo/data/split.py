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


def split_groups(groups: np.ndarray, *, val: float, test: float, seed: int) -> dict[str, np.ndarray]:
    """Split rows so that each group (e.g. the document a text window was cut from) is in one split.

    Groups are visited in a seeded random order; each goes to ``test`` if it still fits within the
    test share of rows (5% slack), else to ``val`` if it fits there, else to ``train``. So held-out
    groups are a random pick and the fractions come out close to ``val``/``test`` when there are
    many groups; a split left empty takes the smallest training group.

    Examples
    --------
    >>> g = np.repeat(np.arange(10), 10)
    >>> parts = split_groups(g, val=0.2, test=0.2, seed=0)
    >>> [len(parts[s]) for s in ("train", "val", "test")]
    [60, 20, 20]
    >>> set(g[parts["train"]]) & set(g[parts["test"]])
    set()
    """
    groups = np.asarray(groups)
    ids, sizes = np.unique(groups, return_counts=True)
    if len(ids) < 3:
        raise DataError(f"data.split: {len(ids)} documents cannot fill train, val and test; use more text")
    order = np.random.default_rng(seed).permutation(len(ids))
    target = {"val": val * len(groups) * 1.05, "test": test * len(groups) * 1.05}
    chosen: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    filled = {"val": 0, "test": 0}
    for i in order:
        home = next((k for k in ("test", "val") if filled[k] + sizes[i] <= target[k]), "train")
        chosen[home].append(i)
        if home != "train":
            filled[home] += sizes[i]
    for k in ("test", "val"):
        if not chosen[k]:  # every group was too large for it: take the smallest training group
            smallest = min(chosen["train"], key=lambda i: sizes[i])
            chosen["train"].remove(smallest)
            chosen[k].append(smallest)
    return {k: np.sort(np.flatnonzero(np.isin(groups, ids[v]))) for k, v in chosen.items()}
