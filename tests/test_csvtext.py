"""CSV text from whole columns (methodo.csvtext) is byte for byte what csv.writer writes row by row."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from methodo import csvtext


def _rows_csv(header, rows) -> bytes:
    buf = io.StringIO(newline="")  # what RunDir.write_csv writes
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def test_fixed_decimals_equal_python_formatting_for_every_float32():
    rng = np.random.default_rng(0)
    v = np.concatenate([
        rng.random(200_000).astype(np.float32),
        (np.arange(2**14) / 2**14).astype(np.float32),  # exact binary fractions: ties at the 7th decimal
        np.array([0, 1, 0.5078125, 1e-7, 5e-7, 4.9999997e-7, 0.9999995, 0.99999946, 123456.79, 2**31 - 256], "f4"),
        (rng.random(20_000) * 1e4).astype(np.float32),
    ])
    for decimals in (6, 3, 1, 0):
        assert csvtext.fixed(v, decimals).to_pylist() == [f"{x:.{decimals}f}" for x in v], decimals


@pytest.mark.parametrize("values", [np.array([-0.0, 0.5], "f4"), np.array([np.nan, np.inf, 0.5], "f4"),
                                    np.array([-1.25, 3.0], "f4"), np.array([0.1, 1 / 3]), np.array([3e9], "f4"),
                                    np.zeros(0, "f4")])
def test_fixed_outside_the_exact_range_is_formatted_by_python(values):
    assert csvtext.fixed(values).to_pylist() == [f"{x:.6f}" for x in values]


def test_a_predictions_file_is_the_bytes_csv_writer_writes():
    rng = np.random.default_rng(1)
    n, names = 5000, ["cat", "dog, big", 'say "hi"', "two\nlines", ""]
    p = rng.dirichlet(np.ones(5), n).astype(np.float32)
    y, rows = rng.integers(0, 5, n), rng.permutation(10 * n)[:n]
    header = ["row", "true", "predicted", *[f"p_{c}" for c in names]]
    want = _rows_csv(header, ([int(r), names[int(t)], names[int(q.argmax())], *[f"{v:.6f}" for v in q]]
                              for r, t, q in zip(rows, y, p)))
    got = csvtext.join(header, [csvtext.integers(rows), csvtext.labels(y, names), csvtext.labels(p.argmax(1), names),
                                *[csvtext.fixed(p[:, k]) for k in range(5)]])
    assert got == want


def test_no_rows_is_the_header_alone():
    assert csvtext.join(["row", "a,b"], [csvtext.integers(np.zeros(0, int))]) == _rows_csv(["row", "a,b"], [])
