"""bench/diagnosis.py (issue 12, item 4): the planted problems really are there, where the bench says they are,
and (slow) the bench runs end to end and prints a table of rates in [0, 1]."""

from __future__ import annotations

import importlib.util
import re
import sys

import numpy as np
import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "bench"))  # the bench imports its sibling _common
    try:
        spec = importlib.util.spec_from_file_location("bench_diagnosis", ROOT / "bench" / "diagnosis.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_diagnosis"] = mod  # its dataclasses look their module up
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop("bench_diagnosis", None)
        sys.path.remove(str(ROOT / "bench"))


def _labels(n=1000, k=10, seed=0):
    return np.random.default_rng(seed).integers(0, k, n)


def test_symmetric_noise_flips_exactly_the_rows_it_names(bench):
    y0 = _labels()
    y, rows = bench.flip_symmetric(y0, 0.15, 10, seed=3)
    assert len(rows) == 150 and len(set(rows.tolist())) == 150
    assert (y[rows] != y0[rows]).all()  # every named row has another class ...
    assert (np.delete(y, rows) == np.delete(y0, rows)).all()  # ... and no other row changed
    # symmetric: the new class is spread over the others (no class gets most of them)
    shift = (y[rows] - y0[rows]) % 10
    assert set(shift.tolist()) <= set(range(1, 10)) and np.bincount(shift).max() < 0.25 * len(rows)
    again, rows2 = bench.flip_symmetric(y0, 0.15, 10, seed=3)
    assert (again == y).all() and (rows2 == rows).all()  # seeded


def test_class_conditional_noise_follows_the_look_alike_map_at_rates_that_differ_by_class(bench):
    y0 = _labels(2000)
    y, rows = bench.flip_class_conditional(y0, 0.15, seed=1)
    assert len(rows) == 300 and (np.delete(y, rows) == np.delete(y0, rows)).all()
    assert all(y[i] == bench.LOOK_ALIKE[int(y0[i])] for i in rows)
    per_class = [np.isin(np.flatnonzero(y0 == c), rows).mean() for c in range(10)]
    assert max(per_class) > 2 * min(per_class)  # the noise depends on the class


def test_exact_and_near_copies_are_where_the_pairs_say(bench):
    X = np.random.default_rng(0).normal(size=(50, 4))
    y = np.arange(50) % 2
    X2, y2, pairs = bench.add_exact_copies(X, y, 7, seed=0)
    assert len(X2) == 57 and pairs.shape == (7, 2) and (pairs[:, 1] == np.arange(50, 57)).all()
    assert all((X2[a] == X2[b]).all() and y2[a] == y2[b] for a, b in pairs)
    imgs = np.random.default_rng(1).integers(0, 200, size=(30, 8, 8)).astype(float)
    I2, yi, ipairs = bench.add_near_copies(imgs, np.arange(30) % 3, 5, seed=0)
    for a, b in ipairs:
        assert not (I2[a] == I2[b]).all()  # not an exact copy ...
        za, zb = (I2[a] - I2[a].mean()).ravel(), (I2[b] - I2[b].mean()).ravel()
        cos = za @ zb / np.linalg.norm(za) / np.linalg.norm(zb)
        assert cos > 0.999 and yi[a] == yi[b]  # ... but the same picture, brightness and contrast aside


def test_leak_columns_carry_the_label(bench):
    y = np.arange(400) % 2
    assert (bench.leak_column(y, "equal", 0) == y).all()
    c = bench.leak_column(y, "computed", 0)
    assert np.corrcoef(c, y)[0, 1] > 0.999
    a = bench.leak_column(y, "after_outcome", 0)
    assert ((a < 38) == (y == 1)).mean() > 0.97  # nearly separable at one cut, not exactly a copy
    with pytest.raises(ValueError, match="equal, computed or after_outcome"):
        bench.leak_column(y, "sideways", 0)


def test_imbalance_constant_and_missing_plants(bench):
    y = np.r_[np.zeros(300, int), np.ones(200, int)]
    keep = bench.imbalance(y, 5.0, seed=0)
    counts = np.bincount(y[keep])
    assert counts[0] == 300 and counts[1] == 60  # 300 / 5
    const, near = bench.constant_columns(500, seed=0)
    assert (const == 1).all() and (near == 0).mean() == pytest.approx(0.99)
    X = np.random.default_rng(0).normal(size=(200, 5))
    Xm, touched = bench.blank_cells(X, [1, 3], 0.05, seed=0)
    assert np.isnan(Xm).sum() == 20 and set(np.flatnonzero(np.isnan(Xm).any(1))) == set(touched.tolist())
    assert not np.isnan(Xm[:, [0, 2, 4]]).any()
    s = bench.shuffled(y, 0)
    assert sorted(s) == sorted(y) and (s != y).any()


def test_scores(bench):
    assert bench.precision_recall([1, 2, 3, 4], [2, 4, 6]) == (0.5, 2 / 3)
    assert bench.precision_recall([], [1]) == (1.0, 0.0)
    assert bench.rate([True, False, False, True]) == 0.5


def test_bad_families_are_refused(bench, capsys):
    with pytest.raises(SystemExit) as e:
        bench.parse_args(["--families", "label_noise,astrology"])
    assert e.value.code == 2 and "astrology" in capsys.readouterr().err


@pytest.mark.slow
def test_the_bench_prints_its_table(bench, tmp_path, capsys):
    """2 seeds of three families (data and run stage): a table whose rates are numbers in [0, 1]."""
    code = bench.main(["--seeds", "2", "--families", "leakage,imbalance,lr_low", "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith(bench.SECTION)
    rows = [ln for ln in out.splitlines() if ln.startswith("| ") and "`" in ln]
    assert len(rows) >= 5
    for ln in rows:
        fractions = [float(x) for x in re.findall(r"\((\d\.\d\d)\)", ln)]
        assert fractions and all(0 <= v <= 1 for v in fractions), ln
        assert re.search(r"\d/2 \(", ln), ln  # 2 seeds
