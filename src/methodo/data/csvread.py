"""Reading a CSV file into typed columns, for :func:`methodo.data.sources.load_csv`.

The fast path is Arrow's multi-threaded CSV reader with one type per column: feature columns as float32
from the start, the target as float64, and as text only the columns that are text (``data.categorical``,
the group column, and those whose first block holds text). No table of every cell as a string is built
and no Python loop runs per row. A column that turns out to hold a non-number further down is read again
as text (the file is parsed once more). A typed column holding a cell pandas would not call a number
("NAN", "nan(1)") or a value beyond float32's range is not :func:`numbers`: the caller then reads its
cells as text (:func:`text`) to name the first bad one, with the messages it always had.

A header with an empty or repeated column name (``pandas.DataFrame.to_csv`` writes an empty one for the
index) keeps the fast path: the columns get the names pandas gives them ("Unnamed: 0", "a.1"), read from
the header by pandas, and Arrow reads the rows under those names (when the header is one line without
quotes, so that skipping one line skips it).

When Arrow cannot read the file the way pandas does (a ragged row, an unterminated quote, invalid UTF-8,
an empty file), pandas reads it as before, every cell as text (:func:`read_text`), with pandas' own
behaviour and messages. Both readers take pandas' default missing-value strings (:data:`NA_VALUES`) as
missing.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from methodo.errors import DataError

# pandas' default missing-value strings (``read_csv(keep_default_na=True)``), given to Arrow too.
NA_VALUES = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
             "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")
F32_MAX = float(np.finfo(np.float32).max)
# pyarrow names the row too ("Row #103: ") when it reads serially (one thread in its CPU pool)
_CONVERSION = re.compile(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to (?:float|double)")


def _options(types: dict | None = None, include: list[str] | None = None, renamed: list[str] | None = None) -> dict:
    import pyarrow.csv as pacsv

    opts = {"parse_options": pacsv.ParseOptions(newlines_in_values=True),  # quoted line breaks, as pandas reads them
            "convert_options": pacsv.ConvertOptions(column_types=types or {}, include_columns=include or [],
                                                    null_values=list(NA_VALUES), strings_can_be_null=True)}
    if renamed is not None:  # pandas' names for the columns: the header line is skipped, not read
        opts["read_options"] = pacsv.ReadOptions(column_names=renamed, skip_rows=1)
    return opts


def header(path: Path) -> tuple[list[str], set[str], bool, list[str] | None] | None:
    """``(column names, the columns the first block shows as text, whether there is a row, the names given
    to Arrow or None)``, or None when the fast path does not apply: Arrow cannot parse the start of the
    file, or pandas renames a column (an empty or repeated name) in a header this module cannot skip as one
    line. The last item, when not None, is passed on to :func:`read` and :func:`text` as ``renamed``."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        reader = pacsv.open_csv(path, **_options())  # infers each column's type from the first block
        names = reader.schema.names
        has_rows = any(batch.num_rows for batch in reader)  # stops at the first batch with a row
        reader.close()
    except (pa.ArrowException, UnicodeDecodeError):  # a name that is not UTF-8 fails in .names
        return None
    renamed = None
    if len(set(names)) != len(names) or "" in names:
        renamed = _pandas_names(path, len(names))
        if renamed is None:
            return None
        names = renamed
    numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_null)
    text = {name for name, f in zip(names, reader.schema) if not any(is_(f.type) for is_ in numeric)}
    return names, text, has_rows, renamed


def _pandas_names(path: Path, n: int) -> list[str] | None:
    """The names pandas gives the ``n`` columns of a header with an empty or repeated name ("Unnamed: 0",
    "a.1"), read by pandas from the header alone; None when the header line holds a quote (it could span
    lines, and the rows are read by skipping one line) or pandas names another number of columns."""
    import pandas as pd

    with open(path, "rb") as fh:
        if b'"' in fh.readline():
            return None
    try:
        names = [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except (ValueError, UnicodeDecodeError):  # pandas' parser errors are ValueErrors
        return None
    return names if len(names) == n and len(set(names)) == n else None


def read(path: Path, names: list[str], used: list[str], *, text: set[str], wide: set[str],
         renamed: list[str] | None = None):
    """The ``used`` columns as a ``pyarrow.Table``: ``text`` ones as strings, ``wide`` ones as float64, the
    others float32. A column that fails to convert further down is read again as text. None when Arrow
    cannot parse the file (the caller then reads it with :func:`read_text`). ``renamed``: see :func:`header`."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    text = set(text)
    while True:
        types = {c: pa.string() if c in text else pa.float64() if c in wide else pa.float32() for c in used}
        try:
            return pacsv.read_csv(path, **_options(types, used, renamed))
        except pa.ArrowException as exc:
            m = _CONVERSION.match(str(exc))
            col = names[int(m.group(1))] if m and int(m.group(1)) < len(names) else None
            if col is None or col in text:  # not a number conversion: a parse error, invalid UTF-8, ...
                return None
            text.add(col)


def read_text(path: Path):
    """Every cell as text, read by pandas as methodo always did (a file Arrow cannot parse)."""
    import pandas as pd
    import pyarrow as pa

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: CSV file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({str(exc).splitlines()[0]})") from None
    return pa.Table.from_pandas(df, preserve_index=False)


def numbers(col) -> np.ndarray | None:
    """A typed column as a NumPy array (its type; NaN where missing) when every cell is a number within
    float32's range; None for a text column, or one with a cell the caller must read as text to name it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_floating(col.type):
        return None
    if pc.any(pc.is_nan(col)).as_py():  # a non-missing NaN was text such as "NAN": not a number for pandas
        return None
    top = pc.max(pc.abs(col)).as_py()
    if top is not None and top >= F32_MAX:  # inf, 1e308, or a cell rounded to float32's largest value
        return None
    return col.to_numpy()


def text(path: Path, col, name: str, renamed: list[str] | None = None):
    """The column's cells as text (a ``pyarrow.ChunkedArray``): itself when it was read as text, else the
    one column read again from the file as text (``renamed``: see :func:`header`)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col
    return pacsv.read_csv(path, **_options({name: pa.string()}, [name], renamed))[name]


def release() -> None:
    """Give the memory Arrow's allocator keeps cached back to the system (once the columns are converted)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
