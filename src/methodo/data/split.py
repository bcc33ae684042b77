"""Seeded train/val/test splits. Each method returns sorted, disjoint index arrays covering all rows
(``time`` on forecasting windows leaves out the gap rows between its parts).

Methods (``data.split.method``):

- ``random``: shuffle, cut by the fractions.
- ``stratified``: class proportions kept in every split, up to rounding (quantile bins for regression).
- ``group``: rows sharing a group (``data.split.group``) never straddle two splits.
- ``cluster``: KMeans clusters of the inputs; whole clusters go to one split (cluster sampling:
  the test split holds regions of input space the model never saw).
- ``kfold``: ``folds`` folds; fold *i* is the test split of run *i*, val is carved from the rest.
- ``official``: the dataset's own test split (MNIST, CIFAR-10, ...), val carved from its train part.
- ``time``: rows in time order (forecasting windows): past trains, later validates, latest tests, with a gap.

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
                  task: str = "classification", X: np.ndarray | None = None, groups: np.ndarray | None = None,
                  official: np.ndarray | None = None, folds: int = 5, fold: int | None = None,
                  clusters: int = 8, cluster_on: str = "pca") -> dict[str, np.ndarray]:
    """Split row indices into ``train``/``val``/``test`` with the named method.

    ``X`` is needed by ``cluster``, ``groups`` (one id per row) by ``group``, ``official`` (a
    boolean mask of the dataset's own test rows) by ``official``; ``fold`` (1-based) by ``kfold``.
    """
    fn = SPLITS.get(method, key="data.split.method")
    parts = fn(np.asarray(y), val=val, test=test, seed=seed, task=task, X=X, groups=groups, official=official,
               folds=folds, fold=fold, clusters=clusters, cluster_on=cluster_on)
    for name, idx in parts.items():
        if len(idx) == 0:
            raise DataError(
                f"data.split: the {name} split is empty ({len(y)} rows, method={method}, val={val}, test={test}); "
                "use more data or larger fractions"
            )
    return {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in parts.items()}


def _strata(y, task):
    """What a stratified split keeps in proportion (``TaskSpec.strata``): the class, the target's
    quintile, an image's dominant class, a label combination; ``None`` for nothing."""
    from methodo.tasks import task_spec

    return task_spec(task).strata(y)


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


def _carve_val(rest, y, *, n_total, val, seed, stratify):
    """Take ``val × n_total`` rows of ``rest`` for validation (stratified when asked)."""
    from sklearn.model_selection import train_test_split

    size = min(max(int(round(val * n_total)), 1), len(rest) - 1)
    try:
        tr, va = train_test_split(rest, test_size=size, random_state=seed + 1,
                                  stratify=None if stratify is None else stratify[rest])
    except ValueError as exc:
        raise DataError(f"data.split: cannot carve a validation split from {len(rest)} rows: {exc}") from None
    return tr, va


@SPLITS.register("random", help="shuffle rows, then cut train/val/test by the fractions")
def random_split(y, *, val, test, seed, task, **_):
    return _two_stage(y, val=val, test=test, seed=seed, stratify=None)


@SPLITS.register("stratified", help="keep class proportions in every split (quantile bins for regression)")
def stratified_split(y, *, val, test, seed, task, **_):
    return _two_stage(y, val=val, test=test, seed=seed, stratify=_strata(y, task))


def assign_groups(groups: np.ndarray, *, val: float, test: float, seed: int, what: str = "group") -> dict:
    """Whole groups to splits: shuffled groups fill test, then val, each up to its share of rows."""
    uniq, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    if len(uniq) < 3:
        raise DataError(f"data.split: {what} split needs at least 3 {what}s (found {len(uniq)})")
    sizes = np.bincount(inv)
    n = len(groups)
    order = np.random.default_rng(seed).permutation(len(uniq))
    targets = {"test": test * n, "val": val * n}
    filled = {"test": 0, "val": 0}
    where = {}
    for g in order:
        for part in ("test", "val"):
            f, t = filled[part], targets[part]
            if f == 0 or abs(f + sizes[g] - t) < abs(f - t):  # the group brings this split nearer its share
                filled[part] += sizes[g]
                where[g] = part
                break
        else:
            where[g] = "train"
    if "train" not in where.values():  # the last group always leaves rows for training
        last = order[-1]
        filled[where[last]] -= sizes[last]
        where[last] = "train"
    parts = {s: np.flatnonzero(np.isin(inv, [g for g, p in where.items() if p == s])) for s in ("train", "val", "test")}
    return parts


def split_groups(groups: np.ndarray, *, val: float, test: float, seed: int) -> dict[str, np.ndarray]:
    """Split rows so that each document a text window was cut from is in one split (language modeling).

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


@SPLITS.register("group", help="whole groups (data.split.group: a CSV column, or a regex over image paths) "
                 "per split: no group straddles two splits")
def group_split(y, *, val, test, seed, groups, **_):
    if groups is None:
        raise DataError("data.split.group: the group split needs a group per row: name a CSV column, or for an "
                        "image folder a regex with one (...) capture over the file path")
    return assign_groups(groups, val=val, test=test, seed=seed, what="group")


def cluster_labels(X: np.ndarray, *, clusters: int, seed: int, on: str = "pca") -> np.ndarray:
    """KMeans cluster of every row: on standardized features, or on their first PCA components."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    Z = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    if np.isnan(Z).any():  # clustering needs every value: missing → column mean
        col = np.nanmean(Z, 0)
        Z = np.where(np.isnan(Z), np.nan_to_num(col)[None, :], Z)
    Z = (Z - Z.mean(0)) / np.where(Z.std(0) > 1e-12, Z.std(0), 1.0)
    if on == "pca" and Z.shape[1] > 16:
        Z = PCA(n_components=16, random_state=seed).fit_transform(Z)
    if clusters > len(Z):
        raise DataError(f"data.split.clusters={clusters} is more than the {len(Z)} rows")
    return KMeans(n_clusters=clusters, random_state=seed, n_init=4).fit_predict(Z)


@SPLITS.register("cluster", help="KMeans clusters of the inputs (data.split.clusters, cluster_on features|pca); "
                 "whole clusters per split")
def cluster_split(y, *, val, test, seed, X, clusters, cluster_on, **_):
    if X is None:
        raise DataError("data.split: the cluster split needs the inputs X")
    labels = cluster_labels(X, clusters=clusters, seed=seed, on=cluster_on)
    return assign_groups(labels, val=val, test=test, seed=seed, what="cluster")


@SPLITS.register("kfold", help="k folds (data.split.folds): run i tests on fold i, validates on rows carved "
                 "from the rest; the report shows mean ± std over folds")
def kfold_split(y, *, val, seed, task, folds, fold, **_):
    from sklearn.model_selection import KFold, StratifiedKFold

    if fold is None:
        raise DataError("data.split.fold: a kfold split needs the fold to use (1..folds); `methodo run` runs them all")
    if not 1 <= fold <= folds:
        raise DataError(f"data.split.fold={fold} is outside 1..{folds}")
    from methodo.tasks import task_spec

    strata = _strata(y, task)
    if strata is not None and not task_spec(task).standardize_target:  # strata are classes: keep them per fold
        present = np.bincount(strata)[np.bincount(strata) > 0]
        if present.min() < folds:
            raise DataError(f"data.split.folds={folds}: the smallest class has only {int(present.min())} rows; "
                            "use fewer folds")
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    rest, te = list(splitter.split(np.zeros(len(y)), strata))[fold - 1]
    tr, va = _carve_val(rest, y, n_total=len(y), val=val, seed=seed, stratify=strata)
    return {"train": tr, "val": va, "test": te}


@SPLITS.register("official", help="the dataset's own test split (mnist, fashion_mnist, cifar10); "
                 "val carved (stratified) from its train part")
def official_split(y, *, val, seed, task, official, **_):
    if official is None:
        from methodo.data.sources import DATASETS

        have = [e.name for e in DATASETS.entries() if e.meta.get("official_test")]
        raise DataError(f"data.split.method: this dataset has no official test split; 'official' works for "
                        f"{', '.join(have)}; use stratified")
    rest = np.flatnonzero(~official)
    tr, va = _carve_val(rest, y, n_total=len(rest), val=val, seed=seed, stratify=_strata(y, task))
    return {"train": tr, "val": va, "test": np.flatnonzero(official)}


def time_gap(X: np.ndarray | None, y: np.ndarray) -> int:
    """Rows left out between two time splits: a forecasting row spans ``window + horizon`` time steps,
    so ``window + horizon - 1`` rows dropped at each boundary leave no time step in two splits (one row
    per step for other data)."""
    if X is None or np.ndim(X) != 3 or np.ndim(y) != 2:
        return 0
    return int(X.shape[1]) + int(y.shape[1]) - 1


@SPLITS.register("time", help="rows in time order: the first rows train, the next validate, the last test, never "
                 "shuffled; window + horizon - 1 rows dropped at each boundary so no time step is in two splits")
def time_split(y, *, val, test, X=None, **_):
    """The earliest ``1 - val - test`` of the rows train, then val, then test; ``gap`` rows (:func:`time_gap`)
    between the parts are left out, so no window of one split overlaps a window of the next.

    Examples
    --------
    >>> parts = time_split(np.zeros((100, 2)), val=0.2, test=0.2, X=np.zeros((100, 4, 1)))
    >>> [(int(p[0]), int(p[-1])) for p in parts.values()]
    [(0, 49), (55, 74), (80, 99)]
    """
    n, gap = len(y), time_gap(X, y)
    n_test, n_val = int(round(test * n)), int(round(val * n))
    end_val = n - n_test - gap
    end_train = end_val - n_val - gap
    if end_train < 1 or n_val < 1 or n_test < 1:
        raise DataError(f"data.split: {n} rows in time order cannot make train, val ({n_val}) and test ({n_test}) "
                        f"with {gap} rows between them; use more data, smaller fractions or a shorter window/horizon")
    return {"train": np.arange(end_train), "val": np.arange(end_val - n_val, end_val),
            "test": np.arange(n - n_test, n)}
