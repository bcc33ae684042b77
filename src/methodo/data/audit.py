"""The data audit: what is wrong with the data, found before any training, all at once.

Every check is a pure function ``(AuditFacts) -> Finding | None`` registered in the findings
registry (``stage="data"``), so ``methodo list findings`` shows them next to the run checks.
``inspect_data(cfg)`` loads the data in audit mode (unreadable files and bad labels are collected,
not raised), splits it as the run would, and returns the split sizes and every finding;
``methodo data inspect CONFIG [--json]`` prints it. ``methodo run`` adds the same findings to
``summary.json``.

Examples
--------
>>> import numpy as np
>>> from methodo.data.audit import AuditFacts, duplicates_across_splits
>>> X = np.array([[0.0, 1], [1, 1], [2, 1], [0, 1]]); y = np.array([0, 1, 0, 0])
>>> f = duplicates_across_splits(AuditFacts(X=X, y=y, kind="tabular", task="classification",
...         indices={"train": np.array([0, 1]), "val": np.array([2]), "test": np.array([3])}))
>>> f.id, f.severity, f.evidence["train_test"]
('duplicates_across_splits', 'critical', 1)
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from methodo.findings import FINDINGS, SEVERITY_ORDER, Finding, certainty, fmt_interval, wilson
from methodo.progress import bar
from methodo.tasks import task_spec

# Thresholds, with their reasons.
IMBALANCE_MEDIUM = 3.0  # largest/smallest class count: accuracy starts to flatter the majority
IMBALANCE_HIGH = 10.0
NEAR_DUPLICATE_DISTANCE = 0.05  # L2 distance of normalized 16×16 gray thumbnails (cos > 0.9987);
#                                 the closest distinct pair in scikit-learn digits is at 0.107
LEAKAGE_SCORE = 0.99  # held-out balanced accuracy (or R²) of ONE feature that counts as leakage
MAX_EXAMPLES = 5  # rows or files quoted in a finding's evidence
# Caps of the checks whose cost grows with the rows (issue 11); each finding's evidence states what it checked.
MAX_INDEX = 200_000  # training images in the near-duplicate index (a seeded sample beyond)
LEAKAGE_ROWS = 100_000  # train and held-out rows each single-feature tree is fitted and scored on (seeded sample)
LEAKAGE_THREADS = 2  # single-feature trees fitted at once (each holds its own copies of the sampled rows)
VERIFY_CHUNK = 65_536  # rows compared at once when confirming that equal row hashes are equal rows


@dataclass
class AuditFacts:
    """What the data checks look at (all splits of the loaded, readable rows)."""

    X: np.ndarray
    y: np.ndarray
    kind: str
    task: str
    indices: dict[str, np.ndarray]
    feature_names: list[str] = field(default_factory=list)
    class_names: list[str] | None = None
    cat: np.ndarray | None = None
    cat_names: list[str] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)
    where: Any = None  # row index → "path" / "row N"

    def at(self, i: int) -> str:
        return self.where(int(i)) if self.where is not None else f"index {int(i)}"

    @cached_property
    def row_groups(self) -> np.ndarray:
        """One id per row, shared by the rows whose input is the same (features byte for byte, and the
        categorical values): computed once, used by the duplicate checks."""
        return _row_groups(self.X, self.cat)

    @classmethod
    def from_dataset(cls, ds, indices) -> "AuditFacts":
        return cls(X=ds.X, y=ds.y, kind=ds.kind, task=ds.task, indices=indices, feature_names=list(ds.feature_names),
                   class_names=ds.class_names, cat=ds.cat, cat_names=list(ds.cat_names), problems=list(ds.problems),
                   where=ds.where)


def _counted(what: str) -> dict:
    """The certainty of a finding that counts over every row or file: exact, no sample."""
    return certainty("exact count", f"{what}, counted over every row or file read: exact, not a sample.")


# --------------------------------------------------------------------------- unreadable inputs


@FINDINGS.register("unreadable_file", stage="data", check=False,
                    help="an input file cannot be read: 0-byte, truncated, or not an image")
def unreadable_file(f: AuditFacts) -> Finding | None:
    bad = [p for p in f.problems if p["id"] == "unreadable_file"]
    if not bad:
        return None
    return Finding(
        "unreadable_file", "high", f"{len(bad)} input file(s) cannot be read and were left out",
        {"count": len(bad), "files": [{"path": p["path"], "reason": p["reason"]} for p in bad[:MAX_EXAMPLES]],
         "certainty": _counted("Unreadable files")},
        "Delete or re-export these files (a run stops at the first one, naming it); check the copy or download "
        "that produced them.")


@FINDINGS.register("bad_label", stage="data", check=False,
                    help="a label is missing (NaN) or is text in a numeric label column")
def bad_label(f: AuditFacts) -> Finding | None:
    bad = [p for p in f.problems if p["id"] == "bad_label"]
    if not bad:
        return None
    return Finding(
        "bad_label", "high", f"{len(bad)} row(s) have a bad label and were left out",
        {"count": len(bad), "rows": [{"row": p["row"], "value": p["value"], "reason": p["reason"]}
                                     for p in bad[:MAX_EXAMPLES]], "certainty": _counted("Bad labels")},
        "Fix or drop these rows: a run stops at the first one. A label typed as text in a numeric column "
        "often means a shifted or mis-parsed line.")


@FINDINGS.register("bad_value", stage="data", check=False, help="a numeric feature column holds text in some rows")
def bad_value(f: AuditFacts) -> Finding | None:
    bad = [p for p in f.problems if p["id"] == "bad_value"]
    if not bad:
        return None
    cols = sorted({p["column"] for p in bad})
    return Finding(
        "bad_value", "medium", f"{len(bad)} text value(s) in numeric column(s) {', '.join(map(repr, cols))}",
        {"count": len(bad), "columns": cols, "cells": [{"row": p["row"], "column": p["column"], "value": p["value"]}
                                                       for p in bad[:MAX_EXAMPLES]],
         "certainty": _counted("Text cells in numeric columns")},
        "Fix the cells (a run stops at the first one), or list the column in data.categorical if it is a category.")


@FINDINGS.register("non_finite_value", stage="data", check=False,
                   help="a numeric feature holds inf, -inf or a number beyond float32's range (1e308)")
def non_finite_value(f: AuditFacts) -> Finding | None:
    bad = [p for p in f.problems if p["id"] == "non_finite_value"]
    if not bad:
        return None
    cols = sorted({p["column"] for p in bad})
    return Finding(
        "non_finite_value", "high", f"{len(bad)} infinite or overflowing value(s) in column(s) "
        f"{', '.join(map(repr, cols[:MAX_EXAMPLES]))}",
        {"count": len(bad), "columns": cols, "cells": [{"row": p["row"], "column": p["column"], "value": p["value"]}
                                                       for p in bad[:MAX_EXAMPLES]],
         "certainty": _counted("Infinite or overflowing cells")},
        "Fix these cells at the source (a division by zero, a sentinel such as 1e308, an overflow): a network "
        "cannot train on them, so a run stops at the first one. Once removed, an imputer (data.features: "
        "[impute]) can fill them.")


@FINDINGS.register("empty_class", stage="data", check=False, help="a class folder holds no image (it is not a class)")
def empty_class(f: AuditFacts) -> Finding | None:
    bad = [p for p in f.problems if p["id"] == "empty_class"]
    if not bad:
        return None
    return Finding(
        "empty_class", "high", f"{len(bad)} class folder(s) hold no image and were left out: "
        + ", ".join(repr(p["path"]) for p in bad[:MAX_EXAMPLES]),
        {"count": len(bad), "folders": [p["path"] for p in bad[:MAX_EXAMPLES]],
         "certainty": _counted("Empty class folders")},
        "Remove the empty folders or add their images: a run stops on an empty class folder. Hidden folders "
        "(.git, __MACOSX) are ignored.")


# --------------------------------------------------------------------------- labels


@FINDINGS.register("single_class", stage="data", check=False,
                   help="the labels hold one class only: there is nothing to classify")
def single_class(f: AuditFacts) -> Finding | None:
    if not task_spec(f.task).has_classes or f.y.ndim != 1 or len(f.y) == 0:
        return None
    present = np.unique(f.y)
    if len(present) >= 2:
        return None
    name = f.class_names[int(present[0])] if f.class_names else str(present[0])
    return Finding(
        "single_class", "critical", f"Every row has the same label {name!r}: a classifier cannot learn anything",
        {"class": name, "rows": int(len(f.y)), "certainty": _counted("Classes")},
        "Check data.target (is it the right column?) or the image folder (one subfolder per class); a run refuses "
        "data with fewer than 2 classes.")


@FINDINGS.register("constant_target", stage="data", check=False,
                   help="the regression target has the same value in every row")
def constant_target(f: AuditFacts) -> Finding | None:
    if not task_spec(f.task).standardize_target or len(f.y) == 0 or not np.all(f.y == f.y[0]):
        return None
    return Finding(
        "constant_target", "critical", f"The target is {float(f.y[0]):g} in every row: there is nothing to predict",
        {"value": float(f.y[0]), "rows": int(len(f.y)), "certainty": _counted("Target values")},
        "Check data.target (is it the right column?); a run refuses a constant target.")


@FINDINGS.register("class_imbalance", stage="data", check=False,
                    help="some classes have many times more rows than others")
def class_imbalance(f: AuditFacts) -> Finding | None:
    if not task_spec(f.task).has_classes or not f.class_names:
        return None
    counts = np.bincount(f.y, minlength=len(f.class_names))
    present = counts[counts > 0]
    if len(present) < 2:
        return None
    ratio = float(present.max() / present.min())
    if ratio < IMBALANCE_MEDIUM:
        return None
    small, big = int(np.argmin(np.where(counts > 0, counts, counts.max() + 1))), int(np.argmax(counts))
    return Finding(
        "class_imbalance", "high" if ratio >= IMBALANCE_HIGH else "medium",
        f"Classes are imbalanced: {f.class_names[big]!r} has {ratio:.1f}× the rows of {f.class_names[small]!r}",
        {"class_counts": {c: int(n) for c, n in zip(f.class_names, counts)}, "ratio": round(ratio, 2),
         "minority_class": f.class_names[small], "majority_share": round(float(counts.max() / counts.sum()), 4),
         "certainty": _counted(f"Class counts ({int(present.max())} vs {int(present.min())} rows)")},
        "Balance the training split (data.balance: class_weights, smote, oversample, undersample or "
        "weighted_sampler; val/test stay as they are), keep the stratified split, and judge by balanced "
        "accuracy, per-class recall and F1 rather than accuracy.")


@FINDINGS.register("class_missing_in_split", stage="data", check=False,
                    help="a class has no row in the validation or test split")
def class_missing_in_split(f: AuditFacts) -> Finding | None:
    if not task_spec(f.task).has_classes or not f.class_names:
        return None
    present = set(np.unique(f.y).tolist())
    missing = {s: [f.class_names[c] for c in sorted(present - set(np.unique(f.y[idx]).tolist()))]
               for s, idx in f.indices.items()}
    missing = {s: v for s, v in missing.items() if v}
    if not missing:
        return None
    return Finding(
        "class_missing_in_split", "high", "Some classes are absent from a split: "
        + "; ".join(f"{s}: {', '.join(map(repr, v[:MAX_EXAMPLES]))}" for s, v in missing.items()),
        {"missing": missing, "certainty": _counted("Classes per split")},
        "Use a stratified split, larger val/test fractions, or (group/cluster splits) more groups or clusters.")


# --------------------------------------------------------------------------- duplicates


def _row_words(X: np.ndarray) -> np.ndarray:
    """The bytes of each row as unsigned integers (a view, no copy when X is contiguous); raw texts (an
    object array, labeled text before tokenization) as one 64-bit hash of each cell's string."""
    if X.dtype == object:
        import pandas as pd

        flat = X.reshape(len(X), -1)
        return np.stack([pd.util.hash_array(flat[:, j].astype(str).astype(object)) for j in range(flat.shape[1])], 1)
    b = np.ascontiguousarray(X.reshape(len(X), int(np.prod(X.shape[1:]))))
    size = b.shape[1] * b.itemsize
    return b.view(np.uint64 if size % 8 == 0 else np.uint32 if size % 4 == 0 else np.uint8)


def _row_groups(X: np.ndarray, cat: np.ndarray | None) -> np.ndarray:
    """Group ids (int64): equal ids for equal rows (features byte for byte, and categorical values).

    Vectorized and O(n) in memory: pandas hashes each column of the rows' bytes (and of the categorical
    values) into one 64-bit hash per row, rows are grouped by hash, and each row is compared with the first
    row of its group; the rows that differ from it (a hash collision) are grouped again exactly, so
    different rows never share an id.
    """
    import pandas as pd

    words = _row_words(X)
    cat = cat if cat is not None and cat.shape[1] else None
    h = pd.util.hash_pandas_object(pd.DataFrame(words, copy=False), index=False).to_numpy()
    if cat is not None:
        hc = pd.util.hash_pandas_object(pd.DataFrame(cat, copy=False), index=False).to_numpy()
        h = pd.util.hash_pandas_object(pd.DataFrame({"x": h, "c": hc}), index=False).to_numpy()
    ids = pd.factorize(h)[0].astype(np.int64)
    first = np.unique(ids, return_index=True)[1][ids]  # each row's first row with the same hash
    cand = np.flatnonzero(first != np.arange(len(ids)))
    collided = []
    for lo in range(0, len(cand), VERIFY_CHUNK):  # bounded memory: a chunk of rows compared at a time
        c = cand[lo:lo + VERIFY_CHUNK]
        same = (words[c] == words[first[c]]).all(1)
        if cat is not None:
            same &= (cat[c] == cat[first[c]]).all(1)
        collided.append(c[~same])
    bad = np.concatenate(collided) if collided else cand
    if len(bad):
        cols = pd.concat([pd.DataFrame(words[bad]), pd.DataFrame(cat[bad] if cat is not None else None)], axis=1,
                         ignore_index=True)
        ids[bad] = ids.max() + 1 + cols.groupby(list(cols.columns), dropna=False, sort=False).ngroup().to_numpy()
    return ids


def _differ(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair of rows, whether their labels differ (any entry, for a label vector)."""
    d = y[a] != y[b]
    return d.reshape(len(d), int(np.prod(d.shape[1:]))).any(1)


@FINDINGS.register("duplicates_within_split", stage="data", check=False,
                    help="the same input appears more than once inside a split")
def duplicates_within_split(f: AuditFacts) -> Finding | None:
    g = f.row_groups
    per, conflicts, examples = {}, 0, []
    for s, idx in f.indices.items():
        _, pos, inv = np.unique(g[idx], return_index=True, return_inverse=True)
        first = idx[pos[inv]]  # each row's first row with the same input in this split
        dup = np.flatnonzero(first != idx)
        if task_spec(f.task).has_classes:
            conflicts += int(_differ(f.y, idx[dup], first[dup]).sum())
        for k in dup[: MAX_EXAMPLES - len(examples)]:
            examples.append({"split": s, "rows": [f.at(first[k]), f.at(idx[k])]})
        if len(dup):
            per[s] = int(len(dup))
    if not per:
        return None
    return Finding(
        "duplicates_within_split", "medium" if conflicts else "low",
        f"{sum(per.values())} duplicate input(s) inside splits"
        + (f", {conflicts} with a different label" if conflicts else ""),
        {"duplicates": per, "conflicting_labels": conflicts, "examples": examples,
         "checked_rows": int(sum(len(i) for i in f.indices.values())), "sampled": False,
         "certainty": _counted("Repeated inputs (byte-for-byte comparison)")},
        "Drop the repeats (they weigh more in training and in the metrics); inputs with two labels point to "
        "labelling errors.")


def _shared(g: np.ndarray, ia: np.ndarray, ib: np.ndarray, k: int) -> tuple[int, list[tuple[int, int]]]:
    """Rows of split b whose input is also in split a, and up to ``k`` example pairs ``(row in a, row in b)``:
    the first row of each shared input, inputs in the order they first appear in b."""
    ga, gb = g[ia], g[ib]
    ua, fa = np.unique(ga, return_index=True)
    ub, fb = np.unique(gb, return_index=True)
    common = np.isin(ub, ua, assume_unique=True)
    order = np.argsort(fb[common], kind="stable")[:k]
    shared_b = fb[common][order]
    shared_a = fa[np.searchsorted(ua, ub[common][order])]
    return int(np.isin(gb, ua).sum()), [(int(ia[x]), int(ib[y])) for x, y in zip(shared_a, shared_b)]


@FINDINGS.register("duplicates_across_splits", stage="data", check=False,
                    help="the same input is in train and in val/test: leakage, the test "
                    "score is inflated")
def duplicates_across_splits(f: AuditFacts) -> Finding | None:
    pairs, examples = {}, []
    for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
        if a not in f.indices or b not in f.indices:
            continue
        pairs[f"{a}_{b}"], ex = _shared(f.row_groups, f.indices[a], f.indices[b], MAX_EXAMPLES - len(examples))
        examples += [{a: f.at(i), b: f.at(j)} for i, j in ex]  # rows of b with a copy in a
    if not any(pairs.values()):
        return None
    n_test = len(f.indices.get("test", []))
    return Finding(
        "duplicates_across_splits", "critical" if pairs.get("train_test") else "high",
        f"{pairs.get('train_test', 0)} test input(s) also appear in train"
        + (f" ({100 * pairs['train_test'] / max(n_test, 1):.1f}% of test)" if pairs.get("train_test") else "")
        + f"; {pairs.get('train_val', 0)} val input(s) in train",
        {**pairs, "examples": examples, "checked_rows": int(sum(len(i) for i in f.indices.values())),
         "sampled": False, "certainty": _counted("Inputs shared by two splits (byte-for-byte comparison)")},
        "Deduplicate before splitting (or split by group so copies stay together): the model is tested on "
        "inputs it trained on, so the test score overstates how it will do on new data.")


def _thumbnails(X: np.ndarray, rows: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """16×16 gray thumbnails of ``X[rows]``, mean 0 and norm 1 (insensitive to brightness and contrast
    changes), as float32 ``(len(rows), ≤256)``; computed ``chunk`` images at a time (bounded memory)."""
    import torch
    import torch.nn.functional as F

    out = []
    for lo in range(0, len(rows), chunk):
        t = torch.from_numpy(np.ascontiguousarray(X[rows[lo:lo + chunk]], dtype=np.float32))
        if t.shape[1] == 3:
            t = 0.2989 * t[:, 0:1] + 0.587 * t[:, 1:2] + 0.114 * t[:, 2:3]
        else:
            t = t.mean(1, keepdim=True)
        if t.shape[-1] > 16 or t.shape[-2] > 16:
            t = F.adaptive_avg_pool2d(t, (min(16, t.shape[-2]), min(16, t.shape[-1])))
        z = t.flatten(1).double().numpy()
        z = z - z.mean(1, keepdims=True)
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        out.append((z / np.where(norm > 1e-9, norm, 1.0)).astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def _sample(rows: np.ndarray, cap: int) -> np.ndarray:
    """``rows`` itself, or a seeded sample of ``cap`` of them (sorted)."""
    if len(rows) <= cap:
        return rows
    return np.sort(np.random.default_rng(0).choice(rows, cap, replace=False))


@FINDINGS.register("near_duplicates_across_splits", stage="data", check=False,
                    help="an image in val/test is a near copy (resized, re-encoded, "
                    "brightness-shifted) of a training image")
def near_duplicates_across_splits(f: AuditFacts, *, max_queries: int = 20000,
                                  max_index: int = MAX_INDEX) -> Finding | None:
    """Each val/test image (a seeded sample of at most ``max_queries`` per split) is compared with its
    nearest training image (an index of at most ``max_index`` of them, a seeded sample beyond): time
    O(queries × index), memory O(index) thumbnails of 256 float32."""
    if f.kind != "image" or "train" not in f.indices:
        return None
    from sklearn.neighbors import NearestNeighbors

    tr = _sample(f.indices["train"], max_index)
    Ztr = _thumbnails(f.X, tr)
    solid = np.abs(Ztr).sum(1) > 0  # blank images are all alike: not evidence of copying
    tr, Ztr = tr[solid], Ztr[solid]
    if len(tr) == 0:
        return None
    nn = NearestNeighbors(n_neighbors=1).fit(Ztr)
    g = f.row_groups
    counts, examples, checked, sampled = {}, [], {"train": int(len(tr))}, {}
    for s in ("val", "test"):
        q = f.indices.get(s, np.array([], dtype=int))
        if len(q) > max_queries:
            sampled[s] = max_queries
        q = _sample(q, max_queries)
        Zq = _thumbnails(f.X, q)
        q, Zq = q[np.abs(Zq).sum(1) > 0], Zq[np.abs(Zq).sum(1) > 0]
        checked[s] = int(len(q))
        if len(q) == 0:
            continue
        d, j = nn.kneighbors(Zq)
        d, j = d[:, 0], tr[j[:, 0]]
        near = (d < NEAR_DUPLICATE_DISTANCE) & (g[q] != g[j])  # exact copies are the other finding
        counts[s] = int(near.sum())
        for k in np.flatnonzero(near)[: MAX_EXAMPLES - len(examples)]:
            examples.append({s: f.at(q[k]), "train": f.at(j[k]), "distance": round(float(d[k]), 4)})
    if not any(counts.values()):
        return None
    return Finding(
        "near_duplicates_across_splits", "high",
        f"{counts.get('test', 0)} test and {counts.get('val', 0)} val image(s) are near copies of training images",
        {"test": counts.get("test", 0), "val": counts.get("val", 0), "threshold": NEAR_DUPLICATE_DISTANCE,
         "examples": examples, "checked_rows": checked,
         "sampled": bool(sampled) or len(f.indices["train"]) > max_index,
         **({"sampled_queries": sampled} if sampled else {}),
         "certainty": certainty("threshold rule", f"Images within distance {NEAR_DUPLICATE_DISTANCE} of a training "
                                "image (normalized 16×16 gray thumbnails; the closest distinct pair in scikit-learn's "
                                "digits is at 0.107)" + (": on a seeded sample of the images, so the counts are a "
                                "lower bound." if bool(sampled) or len(f.indices["train"]) > max_index else
                                ", every val/test image compared."))},
        "Remove the copies or split by group (e.g. by source photo or patient) so near copies stay in one split; "
        "otherwise the test score measures memory, not generalization.")


# --------------------------------------------------------------------------- features


@FINDINGS.register("missing_values", stage="data", check=False, help="some feature values are missing")
def missing_values(f: AuditFacts) -> Finding | None:
    if f.kind != "tabular":
        return None
    per = {}
    rows = np.zeros(len(f.y), dtype=bool)
    k = len(f.feature_names)
    missing = np.zeros(k, dtype=np.int64)
    any_nan = bool(k and len(f.X) and np.isnan(np.min(f.X[:, :k])))  # min is NaN when any value is: one pass
    for lo in range(0, len(f.X) if any_nan else 0, VERIFY_CHUNK):  # rows at a time (a column is a strided read)
        m = np.isnan(f.X[lo:lo + VERIFY_CHUNK, :k])
        missing += m.sum(0)
        rows[lo:lo + VERIFY_CHUNK] = m.any(1)
    for j, name in enumerate(f.feature_names):
        if missing[j]:
            per[name] = int(missing[j])
    if f.cat is not None:
        for j, name in enumerate(f.cat_names):
            m = np.equal(f.cat[:, j], None)
            if m.any():
                per[name] = int(m.sum())
                rows |= m
    if not per:
        return None
    share = rows.mean()
    first = [f.at(i) for i in np.flatnonzero(rows)[:MAX_EXAMPLES]]
    return Finding(
        "missing_values", "high" if share > 0.2 else "medium",
        f"{int(rows.sum())} row(s) ({100 * share:.1f}%) have missing values in {len(per)} column(s)",
        {"per_column": per, "rows_affected": int(rows.sum()), "first_rows": first,
         "certainty": _counted("Missing cells")},
        "Add an imputer fitted on the training split (data.features: [impute], strategy median|mean|most_frequent), "
        "or drop the column if mostly empty; a run without one stops and names the first missing cell.")


NEAR_CONSTANT_SHARE = 0.99  # one value in at least this share of a column's rows: near-constant


@FINDINGS.register("constant_feature", stage="data", check=False,
                    help="a feature has the same value in every row (or in at least 99% of them): it carries no "
                         "(or almost no) information")
def constant_feature(f: AuditFacts) -> Finding | None:
    if f.kind != "tabular":
        return None
    const, near = [], {}
    k = len(f.feature_names)
    if len(f.X) and k:
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column: NaN, not constant
            low, high = np.nanmin(f.X[:, :k], axis=0), np.nanmax(f.X[:, :k], axis=0)
        const = [name for j, name in enumerate(f.feature_names) if low[j] == high[j]]  # NaN ignored
        for j, name in enumerate(f.feature_names):
            if low[j] == high[j] or not low[j] == low[j]:  # constant, or all missing
                continue
            col = f.X[:, j]
            probe = col[::max(1, len(col) // 10_000)]  # ≤ 10,000 strided values: most columns end here
            probe = probe[~np.isnan(probe)]
            if len(probe) and np.count_nonzero(probe == np.partition(probe, len(probe) // 2)[len(probe) // 2]) \
                    < 0.9 * len(probe):
                continue
            col = col[~np.isnan(col)]
            # a value held by more than half the rows is the median: O(n) per column, no sort, no np.unique
            mid = np.partition(col, len(col) // 2)[len(col) // 2]
            share = np.count_nonzero(col == mid) / len(col)
            if share >= NEAR_CONSTANT_SHARE:
                near[name] = {"value": float(mid), "share": round(float(share), 4)}
    if f.cat is not None:
        for j, name in enumerate(f.cat_names):
            if len(set(f.cat[:, j].tolist())) == 1:
                const.append(name)
    if not const and not near:
        return None
    named = const + list(near)
    what = (f"{len(const)} constant" if const else "") + (" and " if const and near else "") + \
        (f"{len(near)} near-constant" if near else "")
    return Finding(
        "constant_feature", "low", f"{what} feature(s): {', '.join(map(repr, named[:MAX_EXAMPLES]))}",
        {"features": named, "constant": const, "near_constant": dict(list(near.items())[:MAX_EXAMPLES]),
         "near_constant_share": NEAR_CONSTANT_SHARE, "certainty": _counted("Distinct values per feature")},
        "Drop the constant ones (data.ignore for a CSV column, or data.features: [variance_threshold]); they add "
        "nothing but parameters. A near-constant one (one value in at least 99% of rows) carries little: keep it "
        "only if its rare values matter (a rare flag can), else drop it the same way.")


def _single_feature_columns(f: AuditFacts, rows: np.ndarray, n_train: int):
    """``(name, float64 values of rows)`` for each feature, one column at a time (no float64 copy of X);
    a category becomes the rank of its code among the categories of the training rows (``rows[:n_train]``),
    -1 when unseen there."""
    import pandas as pd

    for j, n in enumerate(f.feature_names):
        yield n, f.X[rows, j].astype(np.float64)
    for j, n in enumerate(f.cat_names if f.cat is not None else []):
        vals = pd.Series(f.cat[rows, j], dtype=object).fillna("\x00").astype(str).to_numpy(dtype=object)
        known = np.unique(vals[:n_train])
        pos = np.searchsorted(known, vals).clip(0, max(len(known) - 1, 0))
        yield n, np.where((known[pos] == vals) if len(known) else False, pos, -1).astype(np.float64)


def _single_feature_scores(f: AuditFacts, max_rows: int = LEAKAGE_ROWS) -> tuple[list[tuple[str, float, float]], dict]:
    """Held-out score of a depth-3 tree on each single feature: ``[(name, score, baseline)]``, and the rows
    used (``{"train": n, "held_out": n, "sampled": bool}``): a seeded sample of at most ``max_rows`` training
    and ``max_rows`` held-out rows, so the cost does not grow with the data."""
    from sklearn.metrics import balanced_accuracy_score, r2_score
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    tr_all = f.indices["train"]
    ho_all = np.concatenate([f.indices[s] for s in ("val", "test") if s in f.indices])
    tr, ho = _sample(tr_all, max_rows), _sample(ho_all, max_rows)
    used = {"train": int(len(tr)), "held_out": int(len(ho)), "sampled": len(tr) < len(tr_all) or len(ho) < len(ho_all)}
    if len(tr) < 10 or len(ho) < 5:
        return [], used
    rows = np.concatenate([tr, ho])
    a, b = np.arange(len(tr)), np.arange(len(tr), len(rows))
    y = f.y[rows]
    classes = task_spec(f.task).has_classes
    chance = 1.0 / max(len(np.unique(f.y)), 1) if classes else 0.0

    def score(column) -> tuple[str, float, float]:
        name, x = column
        # float32, the type scikit-learn's trees convert their input to (the same values, no copy inside fit)
        x = np.nan_to_num(x, nan=-1e30).astype(np.float32)[:, None]
        if classes:
            m = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x[a], y[a])
            return name, float(balanced_accuracy_score(y[b], m.predict(x[b]))), chance
        m = DecisionTreeRegressor(max_depth=6, random_state=0).fit(x[a], y[a])
        return name, float(r2_score(y[b], m.predict(x[b]))), 0.0

    # one tree per feature, independent of the others: fitted in threads (scikit-learn builds a tree
    # without the GIL), collected in feature order, so the scores are those of a loop. At most
    # LEAKAGE_THREADS at once, each column made as a thread takes it: the trees' temporaries stay within
    # the audit's memory bound (tests/test_scale_data.py: a peak under 2x X at 10^5 rows)
    out, pending, workers = [], deque(), min(LEAKAGE_THREADS, _cpus())
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for column in _single_feature_columns(f, rows, len(tr)):
            if len(pending) == workers:
                out.append(pending.popleft().result())
            pending.append(pool.submit(score, column))
        out += [p.result() for p in pending]
    return out, used


def _cpus() -> int:
    """The CPUs this process may run on (a Slurm or container allocation, not the whole machine)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@FINDINGS.register("target_leakage", stage="data", check=False,
                    help="a single feature predicts the label almost perfectly on held-out rows: "
                    "probably the label in disguise")
def target_leakage(f: AuditFacts) -> Finding | None:
    if f.kind != "tabular" or "train" not in f.indices:
        return None
    if len(f.y) == 0 or np.all(f.y == f.y[0]):  # one class or a constant: any feature "predicts" it (single_class)
        return None
    scores, used = _single_feature_scores(f)
    scores = [s for s in scores if s[1] >= LEAKAGE_SCORE]
    if not scores:
        return None
    scores.sort(key=lambda s: -s[1])
    metric = "balanced_accuracy" if task_spec(f.task).has_classes else "r2"
    name, score, base = scores[0]
    n_ho = used["held_out"]
    if task_spec(f.task).has_classes:
        iv = wilson(round(score * n_ho), n_ho)
        sure = certainty("wilson interval", f"Feature {name!r} alone scores balanced accuracy {score:.3f} on {n_ho} "
                         f"held-out rows, Wilson 95% interval {fmt_interval(iv)} (binomial over the held-out rows; "
                         f"alarm at ≥ {LEAKAGE_SCORE}, the largest over {len(f.feature_names) + len(f.cat_names)} "
                         "features, no correction).", interval=iv)
    else:
        sure = certainty("threshold rule", f"Feature {name!r} alone scores R² {score:.3f} on {n_ho} held-out rows "
                         f"(alarm at ≥ {LEAKAGE_SCORE}); no interval on R².")
    return Finding(
        "target_leakage", "critical",
        f"Feature {name!r} alone predicts the target ({metric} {score:.3f} on held-out rows)",
        {"features": {n: round(s, 4) for n, s, _ in scores[:MAX_EXAMPLES]}, "metric": metric,
         "chance": round(base, 4), "checked_rows": {"train": used["train"], "held_out": used["held_out"]},
         "sampled": used["sampled"], "certainty": sure},
        "Check how this column is produced: if it is computed from the label or recorded after the outcome, "
        "drop it (data.ignore); a model using it will fail on real data.")


# --------------------------------------------------------------------------- time order


@FINDINGS.register("time_leakage", stage="data", check=False,
                    help="time-ordered rows (forecasting windows) split without respecting time: held-out windows "
                    "share time steps with training windows, or training sees the future")
def time_leakage(f: AuditFacts) -> Finding | None:
    """Rows of a series are windows in time order: row ``i`` spans steps ``i .. i + window + horizon - 1``.
    A held-out row whose span overlaps a training row's has its targets among the training inputs or
    targets; a training row after a held-out one trains on that row's future."""
    from methodo.data.split import time_gap

    if f.kind != "series" or "train" not in f.indices:
        return None
    span = time_gap(f.X, f.y) + 1  # time steps one row covers
    train = np.sort(np.asarray(f.indices["train"]))
    if not len(train):
        return None
    evidence: dict[str, Any] = {"rows_per_window": span}
    examples = []
    for s in ("val", "test"):
        rows = np.asarray(f.indices.get(s, []))
        if not len(rows):
            continue
        k = np.searchsorted(train, rows)  # the nearest training rows before and after each held-out row
        before = np.where(k > 0, rows - train[np.maximum(k - 1, 0)], np.inf)
        after = np.where(k < len(train), train[np.minimum(k, len(train) - 1)] - rows, np.inf)
        overlap = np.minimum(before, after) < span
        evidence[f"{s}_rows_overlapping_train"] = int(overlap.sum())
        evidence[f"{s}_rows_before_last_train_row"] = int((rows < train[-1]).sum())
        examples += [{s: f.at(r), "train": f.at(r - int(before[i]) if before[i] <= after[i] else r + int(after[i]))}
                     for i, r in zip(np.flatnonzero(overlap)[:MAX_EXAMPLES - len(examples)],
                                     rows[overlap][:MAX_EXAMPLES - len(examples)])]
    n_overlap = evidence.get("test_rows_overlapping_train", 0) + evidence.get("val_rows_overlapping_train", 0)
    n_future = evidence.get("test_rows_before_last_train_row", 0)
    if not n_overlap and not n_future:
        return None
    n_test = len(f.indices.get("test", []))
    evidence.update(examples=examples, certainty=_counted("Held-out windows whose time steps overlap a training "
                                                          "window's, and test windows earlier than training ones"))
    return Finding(
        "time_leakage", "critical",
        f"The split ignores time: {evidence.get('test_rows_overlapping_train', 0)} of {n_test} test windows share "
        f"time steps with training windows, {n_future} come before the last training window",
        evidence,
        "Split in time order with a gap (data.split.method: time, the forecasting default): train on the past, "
        "validate on what follows, test on the latest; a shuffled split scores the model on values it trained on.")


# --------------------------------------------------------------------------- the audit


def audit(facts: AuditFacts, *, max_queries: int = 20000, progress: bool = False) -> list[Finding]:
    """Run every data check; findings ordered by severity. ``max_queries`` caps the val/test images per
    split compared with the training images by the near-duplicate check (the slowest); the other caps are
    the module's constants (``MAX_INDEX``, ``LEAKAGE_ROWS``). Each capped finding's evidence says what it
    checked (``checked_rows``, ``sampled``). ``progress``: a bar over the checks on a terminal, naming
    the one running."""
    found = []
    checks = bar([e for e in FINDINGS.entries() if e.meta.get("stage") == "data"], enabled=progress,
                 desc="audit", unit="check")
    for e in checks:
        checks.set_postfix_str(e.name)
        r = e.obj(facts, max_queries=max_queries) if e.name == "near_duplicates_across_splits" else e.obj(facts)
        if r is not None:
            found.append(r)
    return sorted(found, key=lambda x: SEVERITY_ORDER.get(x.severity, 9))


def split_summary(ds, indices) -> dict:
    out = {}
    for s in ("train", "val", "test"):
        if s not in indices:
            continue
        entry: dict[str, Any] = {"n": int(len(indices[s]))}
        if task_spec(ds.task).has_classes:
            bc = np.bincount(ds.y[indices[s]], minlength=ds.n_classes)
            entry["class_counts"] = {c: int(n) for c, n in zip(ds.class_names, bc)}
        out[s] = entry
    return out


def inspect_data(cfg) -> dict:
    """Load (audit mode), split as the run would, and audit: ``{dataset, ..., splits, findings}``."""
    from methodo.data.preprocess import split_dataset
    from methodo.data.sources import load_dataset

    ds = load_dataset(cfg.data, audit=True)
    method = cfg.data.split.method
    if task_spec(ds.task).default_split and "method" not in cfg.data.split.model_fields_set:
        method = task_spec(ds.task).default_split  # forecasting: time, as the run splits it
    fold = cfg.data.split.fold or (1 if method == "kfold" else None)
    indices = split_dataset(ds, cfg.data, cfg.seed, fold=fold)
    findings = audit(AuditFacts.from_dataset(ds, indices), progress=cfg.train.progress)
    return {
        "dataset": ds.name, "description": ds.description, "task": ds.task, "kind": ds.kind,
        "n": int(len(ds.y)), "input_shape": list(ds.input_shape), "classes": ds.class_names,
        "features": list(ds.feature_names) + list(ds.cat_names),
        "split": {"method": method, **({"fold": fold} if fold else {})},
        "splits": split_summary(ds, indices),
        "findings": [x.to_dict() for x in findings],
    }
