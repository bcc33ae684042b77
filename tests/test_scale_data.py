"""The data stage, the data audit and the figures stay bounded as the rows grow (issue 11): a CSV is read
by Arrow as float32 columns (no table of every cell as text), the audit's duplicate and near-duplicate
checks are vectorized with stated caps, and figures draw a few thousand points whatever the rows."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from methodo.config import validate
from methodo.data import load_dataset


def _numeric_csv(path: Path, n: int, d: int = 20) -> Path:
    """``n`` rows of ``d`` float features (6 decimals) and a 0/1 label, written by Arrow."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(0)
    cols = {f"f{j}": np.round(rng.normal(size=n), 6) for j in range(d)}
    cols["label"] = (cols["f0"] + rng.normal(size=n) > 0).astype(np.int64)
    pacsv.write_csv(pa.table(cols), path, write_options=pacsv.WriteOptions(quoting_style="none"))
    return path


def _status_mib(key: str) -> float:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) / 1024


def test_a_100k_row_csv_loads_as_float32_in_bounded_memory(tmp_path, monkeypatch):
    from methodo.data import csvread

    n = 100_000
    cfg = validate({"data": {"source": "csv", "path": str(_numeric_csv(tmp_path / "big.csv", n)), "target": "label"},
                    "model": {"name": "mlp"}})
    load_dataset(cfg.data)  # first call: lazy imports and Arrow's thread pool, not counted
    monkeypatch.setattr(csvread, "read_text", lambda path: pytest.fail("a clean numeric CSV went through pandas"))
    rss = Path("/proc/self/clear_refs")
    measure_rss = rss.exists()
    if measure_rss:
        before = _status_mib("VmRSS:")
        try:
            rss.write_text("5")  # resets the peak (VmHWM) to the current RSS
        except OSError:
            measure_rss = False
    tracemalloc.start()
    ds = load_dataset(cfg.data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert ds.X.shape == (n, 20) and ds.X.dtype == np.float32 and ds.class_names == ["0", "1"]
    # NumPy allocations: X (7.6 MiB) and a column at a time; the all-text read peaked at 5× X.
    assert peak < 3 * ds.X.nbytes, f"tracemalloc peak {peak / 2**20:.1f} MiB for X of {ds.X.nbytes / 2**20:.1f} MiB"
    if measure_rss:  # Arrow's own buffers are not traced: the process's peak RSS counts them (file: 19 MB)
        grew = _status_mib("VmHWM:") - before
        assert grew < 150, f"peak RSS grew by {grew:.0f} MiB"


# --------------------------------------------------------------------------- the data audit


def _facts(n: int, *, d: int = 20, seed: int = 0):
    """``n`` rows: 20% exact copies of the first rows, and a feature that leaks the label."""
    from methodo.data.audit import AuditFacts

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    X[:, 5] = y + rng.normal(0, 0.01, n)
    X[n // 2:n // 2 + n // 5], y[n // 2:n // 2 + n // 5] = X[:n // 5], y[:n // 5]
    perm = rng.permutation(n)
    idx = {"train": perm[:int(0.7 * n)], "val": perm[int(0.7 * n):int(0.85 * n)], "test": perm[int(0.85 * n):]}
    return AuditFacts(X=X, y=y, kind="tabular", task="classification", indices=idx,
                      feature_names=[f"f{j}" for j in range(d)], class_names=["0", "1"])


def test_the_audit_of_100k_rows_states_its_caps_in_bounded_memory():
    from methodo.data.audit import LEAKAGE_ROWS, _single_feature_scores, audit

    audit(_facts(200))  # lazy imports (pandas, scikit-learn) not counted
    f = _facts(100_000)
    tracemalloc.start()
    found = {x.id: x for x in audit(f)}
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # NumPy/pandas allocations: a few arrays of one int64 per row; the per-row hex digests (an object array)
    # and the float64 copy of every column peaked at 2.8× X.
    assert peak < 2 * f.X.nbytes, f"tracemalloc peak {peak / 2**20:.1f} MiB for X of {f.X.nbytes / 2**20:.1f} MiB"
    within, across = found["duplicates_within_split"].evidence, found["duplicates_across_splits"].evidence
    assert within["checked_rows"] == across["checked_rows"] == 100_000
    assert within["sampled"] is False and across["sampled"] is False  # exact: every row hashed
    # 20 000 copied rows: each pair is counted once, inside a split or across two
    assert sum(within["duplicates"].values()) + across["train_test"] + across["train_val"] + across["val_test"] == 20_000
    leak = found["target_leakage"].evidence
    assert "f5" in leak["features"] and leak["sampled"] is False and 70_000 <= LEAKAGE_ROWS
    assert leak["checked_rows"] == {"train": 70_000, "held_out": 30_000}
    scores, used = _single_feature_scores(f, max_rows=5_000)  # beyond the cap: a seeded sample
    assert used == {"train": 5_000, "held_out": 5_000, "sampled": True}
    assert dict((n, s) for n, s, _ in scores)["f5"] > 0.99 and _single_feature_scores(f, max_rows=5_000)[0] == scores


def test_duplicate_groups_are_exact_even_when_row_hashes_collide(monkeypatch):
    import pandas as pd

    from methodo.data.audit import _row_groups

    X = np.array([[0, 1], [0, 1], [2, 3], [np.nan, 1], [np.nan, 1], [-0.0, 1]], dtype=np.float32)
    cat = np.array([["a"], ["a"], ["a"], [None], [None], ["a"]], dtype=object)
    want = [0, 0, 1, 2, 2, 3]  # NaN rows are equal byte for byte; -0.0 is not 0.0 (as the byte hash was)
    assert _row_groups(X, cat).tolist() == want
    real = pd.util.hash_pandas_object
    monkeypatch.setattr(pd.util, "hash_pandas_object", lambda obj, **kw: real(obj, **kw) * 0)  # all collide
    ids = _row_groups(X, cat)
    assert [len({ids[i] for i in np.flatnonzero(np.array(want) == g)}) for g in range(4)] == [1, 1, 1, 1]
    assert len(set(ids.tolist())) == 4  # ... and no two different rows share an id
    cat[1, 0] = "b"  # same features, another category: another input
    assert len(set(_row_groups(X, cat).tolist())) == 5


def test_near_duplicates_compare_a_capped_seeded_sample():
    from methodo.data.audit import AuditFacts, near_duplicates_across_splits

    rng = np.random.default_rng(0)
    base = (0.9 * rng.random((600, 1, 4, 4))).repeat(2, 2).repeat(2, 3).astype(np.float32)  # smooth 8×8 images
    X = np.concatenate([base, base * 1.05 + 0.02])  # rows 600..1199: brighter copies of rows 0..599
    idx = {"train": np.arange(600), "val": np.arange(600, 900), "test": np.arange(900, 1200)}
    f = AuditFacts(X=X, y=np.zeros(1200, np.int64), kind="image", task="classification", indices=idx)
    full = near_duplicates_across_splits(f).evidence
    assert (full["val"], full["test"], full["sampled"]) == (300, 300, False)
    assert full["checked_rows"] == {"train": 600, "val": 300, "test": 300}
    capped = near_duplicates_across_splits(f, max_queries=50, max_index=400).evidence
    assert capped["checked_rows"] == {"train": 400, "val": 50, "test": 50} and capped["sampled"] is True
    assert capped["sampled_queries"] == {"val": 50, "test": 50}
    assert 0 < capped["val"] <= 50 and 0 < capped["test"] <= 50  # only copies of indexed images are found
    assert near_duplicates_across_splits(f, max_queries=50, max_index=400).evidence == capped  # seeded
