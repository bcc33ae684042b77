"""CSV text from whole columns: the bytes Python's ``csv.writer`` writes, without a Python object per row.

A file of a million rows written row by row costs a formatted string per cell in Python (about a
second per 300,000 rows of five columns); here each column is formatted at once by Arrow's string
kernels and the rows are joined the same way, so the file is the same to the last byte (``\\r\\n`` line
ends, fields quoted only where ``csv.writer`` quotes them):

- :func:`integers`: integers as ``str(int)`` writes them;
- :func:`fixed`: numbers as ``f"{v:.6f}"`` writes them (``decimals`` digits), exactly, from float32 values
  (their product with 10^decimals is exact in float64 and rounded half to even, as Python rounds the
  exact value); other dtypes or values outside the exact range are formatted by Python;
- :func:`labels`: a label per row from its code, each distinct label quoted once as ``csv.writer`` would;
- :func:`join`: the header and the columns as CSV bytes.

Examples
--------
>>> import numpy as np
>>> from methodo import csvtext
>>> csvtext.join(["row", "label", "p"], [csvtext.integers(np.array([3, 10])),
...     csvtext.labels(np.array([1, 0]), ["no", "yes, sure"]), csvtext.fixed(np.array([0.25, 1.0], "f4"))])
b'row,label,p\\r\\n3,"yes, sure",0.250000\\r\\n10,no,1.000000\\r\\n'
"""

from __future__ import annotations

import csv
import io

import numpy as np

EXACT_LIMIT = 2.0**31  # float32 values below this, times 10^6, are exact integers in float64 and int64


def _field(text: str) -> str:
    """``text`` as ``csv.writer`` writes it inside a row of several fields."""
    buf = io.StringIO(newline="")
    csv.writer(buf).writerow([text, ""])
    return buf.getvalue()[:-3]  # drop the empty last field: ",\r\n"


def _strings(values: list[str]):
    import pyarrow as pa

    return pa.array(values, pa.string())


def integers(values: np.ndarray):
    """An Arrow string column of integers, as ``str(int(v))``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(pa.array(np.asarray(values).astype(np.int64, copy=False)), pa.string())


def fixed(values: np.ndarray, decimals: int = 6):
    """An Arrow string column of ``values`` as ``f"{v:.{decimals}f}"`` writes each, to the byte.

    Exact and vectorized for float32 values that are finite and in ``[0, 2^31)`` with ``decimals <= 6``
    (the product by 10^decimals then has at most 24 + 14 significant bits: exact in float64, and
    ``rint`` rounds half to even as Python rounds the exact value); anything else is formatted by
    Python, value by value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    v = np.asarray(values)
    if not (v.dtype == np.float32 and decimals <= 6 and v.size and np.isfinite(v).all()
            and not np.signbit(v).any() and v.max() < EXACT_LIMIT):  # -0.0 prints as "-0.000000"
        return _strings([f"{float(x):.{decimals}f}" for x in v.ravel()])
    q = np.rint(v.astype(np.float64).ravel() * 10.0**decimals).astype(np.int64)
    whole, frac = np.divmod(q, 10**decimals)
    if decimals == 0:
        return integers(whole)
    frac_text = pc.utf8_lpad(pc.cast(pa.array(frac), pa.string()), width=decimals, padding="0")
    return pc.binary_join_element_wise(integers(whole), frac_text, ".")


def labels(codes: np.ndarray, names: list[str]):
    """An Arrow string column: ``names[code]`` for each code, quoted as ``csv.writer`` quotes it."""
    import pyarrow as pa

    return pa.DictionaryArray.from_arrays(pa.array(np.asarray(codes).astype(np.int32, copy=False)),
                                          _strings([_field(str(n)) for n in names])).dictionary_decode()


def join(header: list[str], columns: list) -> bytes:
    """The CSV file: ``header`` and the rows of ``columns`` (Arrow string columns of equal length, as made by
    the functions above), ``\\r\\n`` after every line."""
    import pyarrow as pa
    import pyarrow.compute as pc

    head = ",".join(_field(str(h)) for h in header) + "\r\n"
    if not columns or not len(columns[0]):
        return head.encode("utf-8")
    lines = pc.binary_join_element_wise(*columns, ",") if len(columns) > 1 else columns[0]
    lines = pc.binary_join_element_wise(lines, "", "\r\n")  # line + "\r\n" + "": one string per line
    _, offsets, data = lines.buffers()  # the lines end to end in one buffer: the file's body
    width = 8 if pa.types.is_large_string(lines.type) else 4
    ends = np.frombuffer(offsets, dtype=np.int64 if width == 8 else np.int32, count=len(lines) + 1,
                         offset=lines.offset * width)
    return head.encode("utf-8") + data.slice(int(ends[0]), int(ends[-1] - ends[0])).to_pybytes()
