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

    audit(_facts(5_000))  # lazy imports and first-call allocations (pandas, scikit-learn's trees) not counted:
    # after only 200 rows the first large call still peaked 2 MiB higher (15.6 MiB) in a fresh process
    f = _facts(100_000)
    tracemalloc.start()
    found = {x.id: x for x in audit(f)}
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # NumPy/pandas allocations: a few arrays of one int64 per row; the per-row hex digests (an object array)
    # and the float64 copy of every column peaked at 2.8× X. Now 1.8-2.05× X: a process that ran other tests
    # first (an xdist worker) peaked at 2.05× even after the warm-up, a fresh one at 1.8-1.95×.
    assert peak < 2.4 * f.X.nbytes, f"tracemalloc peak {peak / 2**20:.1f} MiB for X of {f.X.nbytes / 2**20:.1f} MiB"
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


# --------------------------------------------------------------------------- figures


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plotting helpers save (kept open for inspection)."""
    from methodo.report import plots

    figs = []

    def keep(fig, path):
        figs.append(fig)
        fig.savefig(path, dpi=30)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    yield figs
    for fig in figs:
        plots._plt().close(fig)


def _scores(n: int, classes: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[y]
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True), y


def _distance_to_line(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance of each point to the polyline ``line`` (k, 2)."""
    a, b = line[:-1][None], line[1:][None]
    ab = b - a
    t = np.clip(((points[:, None] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-30), 0, 1)
    return np.sqrt(((points[:, None] - (a + t[..., None] * ab)) ** 2).sum(-1)).min(1)


@pytest.mark.parametrize("which", ["roc", "pr"])
def test_curves_draw_a_capped_number_of_points_and_score_every_row(tmp_path, drawn, which):
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    from methodo.report import plots

    probs, y = _scores(200_000)
    (plots.roc_curves if which == "roc" else plots.pr_curves)(probs, y, ["a", "b"], tmp_path / "c.png")
    ax = drawn[0].axes[0]
    line = ax.lines[0]  # the curve (then the chance diagonal for ROC)
    x, v = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    assert 100 < len(x) <= plots.MAX_CURVE_POINTS
    pos = y == 1
    if which == "roc":
        fx, fy, _ = roc_curve(pos, probs[:, 1])
        assert f"AUC {roc_auc_score(pos, probs[:, 1]):.3f}" in line.get_label()  # every row, not the drawn points
    else:
        fy, fx, _ = precision_recall_curve(pos, probs[:, 1])
        assert f"AP {average_precision_score(pos, probs[:, 1]):.3f}" in line.get_label()
    assert (x[0], v[0], x[-1], v[-1]) == (fx[0], fy[0], fx[-1], fy[-1])  # both ends kept
    full = np.stack([fx, fy], 1)[np.random.default_rng(0).choice(len(fx), 2000, replace=False)]
    assert _distance_to_line(full, np.stack([x, v], 1)).max() < 2e-3  # the shape is kept
    assert f"{len(x):,} of {len(fx):,} curve points drawn" in ax.get_title()


def test_one_vs_rest_curves_are_each_capped(tmp_path, drawn):
    from methodo.report import plots

    probs, y = _scores(60_000, classes=3)
    plots.roc_curves(probs, y, ["a", "b", "c"], tmp_path / "r.png")
    plots.pr_curves(probs, y, ["a", "b", "c"], tmp_path / "p.png")
    for fig in drawn:
        curves = [ln for ln in fig.axes[0].lines if ln.get_label() != "chance"]
        assert len(curves) == 3 and all(len(ln.get_xdata()) <= plots.MAX_CURVE_POINTS for ln in curves)


def test_small_figures_draw_every_point_and_say_nothing(tmp_path, drawn):
    from sklearn.metrics import roc_curve

    from methodo.report import plots

    probs, y = _scores(300)
    plots.roc_curves(probs, y, ["a", "b"], tmp_path / "r.png")
    pred = np.random.default_rng(1).normal(size=300)
    plots.regression_fit(pred, pred + 0.1, tmp_path / "f.png")
    assert len(drawn[0].axes[0].lines[0].get_xdata()) == len(roc_curve(y == 1, probs[:, 1])[0])
    assert drawn[0].axes[0].get_title() == "ROC (test)"
    assert [len(c.get_offsets()) for c in drawn[1].axes[0].collections] == [300]
    assert drawn[1].axes[0].get_title() == "predicted vs true (test)"


def test_scatters_draw_a_seeded_sample_of_at_most_the_cap(tmp_path, drawn):
    from methodo.report import plots

    n = 200_000
    rng = np.random.default_rng(0)
    y_true = rng.normal(size=n)
    plots.regression_fit(y_true + rng.normal(0, 0.3, n), y_true, tmp_path / "fit.png")
    for ax in drawn[0].axes:
        assert sum(len(c.get_offsets()) for c in ax.collections) == plots.MAX_SCATTER_POINTS
        assert f"5,000 of {n:,} points" in ax.get_title()
    labels = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.2, (labels + 1) % 3, labels)
    plots.embeddings(rng.normal(size=(n, 2)), labels, pred, ["a", "b", "c"], tmp_path / "e.png", method="PCA")
    ax = drawn[1].axes[0]
    by_label = {c.get_label(): len(c.get_offsets()) for c in ax.collections}
    wrong = f"wrong prediction ({int((pred != labels).sum())})"  # counted on every row
    assert sum(by_label[k] for k in ("a", "b", "c")) == plots.MAX_SCATTER_POINTS and 0 < by_label[wrong] < 5000
    assert f"5,000 of {n:,} points drawn" in ax.get_title()
    first = [c.get_offsets().copy() for c in ax.collections]
    plots.embeddings(rng.normal(size=(n, 2)) * 0 + 1, labels, pred, ["a", "b", "c"], tmp_path / "e2.png", method="PCA")
    assert [len(c.get_offsets()) for c in drawn[2].axes[0].collections] == [len(o) for o in first]  # seeded


def test_learning_curves_draw_a_capped_envelope_of_long_step_series(tmp_path, drawn):
    from methodo.report import plots

    n = 54_700  # the optimizer steps of 2 epochs on 10^7 rows, batch 256
    lrs = list(np.linspace(1e-3, 1e-5, n))
    g = np.random.default_rng(0).gamma(2.0, 1.0, n)
    g[12_345], g[777] = 1e4, np.nan  # a spike between two drawn points, and a skipped step
    hist = [{"epoch": e, "train_loss": 0.5, "val_loss": 0.4, "train_accuracy": 0.8, "val_accuracy": 0.8} for e in (1, 2)]
    plots.learning_curves(hist, lrs, tmp_path / "lc.png", grad_norms=list(g))
    lr_ax, g_ax = drawn[0].axes[2:4]
    for ax in (lr_ax, g_ax):
        assert len(ax.lines[0].get_xdata()) <= plots.MAX_CURVE_POINTS and f"{n:,} steps" in ax.get_title()
    drawn_lr = np.asarray(lr_ax.lines[0].get_ydata())
    assert (drawn_lr.max(), drawn_lr.min()) == (max(lrs), min(lrs))  # both ends of the schedule
    assert np.nanmax(g_ax.lines[0].get_ydata()) == 1e4  # the spike is drawn
    plots.learning_curves(hist, lrs[:500], tmp_path / "short.png", grad_norms=list(g[:500]))
    short = drawn[1].axes[2]
    assert len(short.lines[0].get_xdata()) == 500 and short.get_title() == "learning rate"  # every step, no note
