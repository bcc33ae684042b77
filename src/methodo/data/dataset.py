"""A dataset in memory before any split (:class:`Dataset`), and the ``DATASETS`` registry of loaders.

Loaders live in :mod:`methodo.data.sources` (and ``shapes``, ``text``); they import this module, which
imports none of them, so no import cycle runs through the loaders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from methodo.registry import Registry

DATASETS = Registry("dataset")


@dataclass
class Dataset:
    """A whole dataset in memory, before any split.

    ``X`` is float32, shaped ``(n, C, H, W)`` (values in [0, 1]) for images and ``(n, F)`` for
    tables (``NaN`` where a value is missing), int64 token ids ``(n, T)`` for text, or float32 windows
    ``(n, window, variables)`` of a series (the target first; ``y`` the next ``horizon`` values, and
    ``meta`` also holds the baselines' forecasts and series-level entries: see ``methodo.data.series``). ``y`` is int64
    class indices for classification, float32 for regression, int64 masks ``(n, H, W)`` for
    segmentation, the next tokens ``(n, T)`` for language modeling and float32 0/1 ``(n, L)`` for
    multi-label classification (``class_names`` then names the labels). ``cat`` holds raw categorical
    columns (object array ``(n, K)``, ``None`` where missing) named by ``cat_names``; ``meta`` per-row
    extras (``path`` of an image file, ``row`` of a CSV line, a group column). ``official_test`` marks
    a dataset's own test rows. ``problems`` lists what an audit-mode load left out:
    ``{id, path|row, reason}``.

    ``groups`` (optional) names the document each row was cut from: the split then keeps every
    document whole, so no held-out text was seen in training. ``extra`` holds evaluation-only sets
    that are never split nor trained on, e.g. ``{"ood": (X, y)}`` (out-of-domain text).
    """

    name: str
    task: str  # a name in methodo.tasks.TASKS
    kind: Literal["image", "tabular", "text",
                  "series",  # forecasting: X (n, window, features), y (n, horizon)
                  "graph",  # packed graphs (n, N, N + 1 + F): adjacency, node mask, features
                  ]
    X: np.ndarray
    y: np.ndarray
    feature_names: list[str] = field(default_factory=list)
    class_names: list[str] | None = None
    description: str = ""
    cat: np.ndarray | None = None
    cat_names: list[str] = field(default_factory=list)
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    official_test: np.ndarray | None = None
    problems: list[dict] = field(default_factory=list)
    groups: np.ndarray | None = None
    extra: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    extra_descriptions: dict[str, str] = field(default_factory=dict)
    vocab: list[str] | None = None  # language modeling: the token of each id
    # the group of each row under each sensitive attribute (data.sensitive, or the dataset's own): object
    # arrays of text, kept for evaluation (per-group metrics); not features unless data.sensitive_as_feature
    sensitive: dict[str, np.ndarray] = field(default_factory=dict)

    def digest(self) -> str:
        """``sha256:HEX`` of what training reads: the arrays (their dtype, shape and bytes), the
        categorical values, the feature, class and group names, the evaluation-only sets. Equal data
        gives an equal digest whatever file it came from; one changed value changes it (about 1 s per GB)."""
        import hashlib

        h = hashlib.sha256()

        def add(a) -> None:
            if a is None:
                h.update(b"\0none")
                return
            a = np.asarray(a)
            if a.dtype == object:
                h.update(f"object{a.shape}".encode())
                h.update("\x1f".join("\x00" if v is None else str(v) for v in a.ravel()).encode("utf-8", "replace"))
                return
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(np.ascontiguousarray(a)).cast("B"))

        for a in (self.X, self.y, self.cat, self.groups, self.official_test):
            add(a)
        h.update(repr((self.task, self.feature_names, self.class_names, self.cat_names)).encode())
        for name in sorted(self.extra):
            h.update(name.encode())
            for a in self.extra[name]:
                add(a)
        return f"sha256:{h.hexdigest()}"

    @property
    def n_classes(self) -> int:
        return len(self.class_names or [])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.X.shape[1:])

    def where(self, i: int) -> str:
        """A human pointer to row ``i``: its file, its CSV line, or its index."""
        if "path" in self.meta:
            return str(self.meta["path"][i])
        if "row" in self.meta:
            return f"row {int(self.meta['row'][i])}"
        return f"index {i}"
