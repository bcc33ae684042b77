"""New inputs for a trained model, read and checked against its :class:`~methodo.use.schema.InputSchema`.

- **Tables**: a CSV file is streamed in blocks by Arrow (bounded memory whatever its size: each block
  is converted, checked, predicted and written before the next is read); a pandas DataFrame or a NumPy
  array is checked the same way. Columns may come in any order; the target and the run's ignored
  columns may be present (they are not features). A missing feature column, a column the model does
  not know, a text cell in a numeric column, a value beyond float32, or a missing value the run had no
  imputer for: one :class:`~methodo.errors.DataError` naming the file, the column and the row (the
  file line, as ``methodo run`` names them).
- **Images**: a folder (every PNG/JPEG under it, hidden folders skipped), or image files. Each
  header is checked first: a color image for a model trained on grayscale images (unless the run
  converted them, ``data.channels: 1``), or another size when the run did not resize
  (``data.image_size``), is refused naming the file. Files are decoded as the run's loader does.
- **Text** (character language models): lines of a text file, or strings.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from methodo.errors import DataError, choices, short

F32_MAX = float(np.finfo(np.float32).max)
CSV_BLOCK = 1 << 22  # bytes Arrow reads per block of a streamed CSV (tens of thousands of rows)
IMAGE_CHUNK = 256  # images decoded per chunk


@dataclass
class Chunk:
    """One block of rows: the raw features (numeric float32, categorical object or None), the labels as
    read (or None), and each row's identifier (its file line, or its file path)."""

    num: np.ndarray
    cat: np.ndarray | None
    ids: np.ndarray
    y: np.ndarray | None = None


# --------------------------------------------------------------------------- tables


def check_columns(schema, cols: list[str], source: str) -> None:
    """Every feature column is there; every other column is the target or an ignored one."""
    feats = schema.columns + schema.categorical
    have = set(cols)
    missing = [c for c in feats if c not in have]
    if missing:
        raise DataError(f"{source}: missing column {short(missing[0])}"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                        + f"; the model reads the columns {choices(feats)}")
    known = set(feats) | set(schema.ignore) | ({schema.target} if schema.target else set())
    extra = [c for c in cols if c not in known]
    if extra:
        optional = ([f"the target {short(schema.target)}"] if schema.target else []) + (
            [f"the ignored columns {choices(schema.ignore)}"] if schema.ignore else [])
        raise DataError(f"{source}: column {short(extra[0])} is not one the model was trained on"
                        + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
                        + "; a file for this model holds its feature columns"
                        + (f" and, optionally, {' and '.join(optional)}" if optional else "") + "; remove it")
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise DataError(f"{source}: column {short(dup[0])} appears twice")


def check_numeric(num: np.ndarray, schema, source: str, where) -> np.ndarray:
    """float64 feature values → float32, refusing a value beyond float32 and, without an imputer, a
    missing value (``where(i)`` names row ``i``)."""
    with np.errstate(invalid="ignore"):
        big = np.abs(num) > F32_MAX
    if big.any():
        r, c = np.argwhere(big)[0]
        raise DataError(f"{source} {where(r)}: column {short(schema.columns[c])} holds {num[r, c]:g}, not a finite "
                        f"number within ±{F32_MAX:.3g}")
    if not schema.imputes:
        nan = np.isnan(num)
        if nan.any():
            r, c = np.argwhere(nan)[0]
            raise DataError(f"{source} {where(r)}: column {short(schema.columns[c])} is missing; the run had no "
                            "imputer (data.features: [impute]), so every feature value must be given")
    return num.astype(np.float32)


def frame_chunk(df, schema, source: str = "input") -> Chunk:
    """A pandas DataFrame → a :class:`Chunk` (rows named by the frame's index)."""
    import pandas as pd

    cols = [str(c) for c in df.columns]
    check_columns(schema, cols, source)
    df = df.set_axis(cols, axis=1)
    index = df.index.to_numpy()
    where = (lambda i: f"row {index[i]}")  # noqa: E731
    num = np.empty((len(df), len(schema.columns)), dtype=np.float64)
    for j, c in enumerate(schema.columns):
        s = df[c]
        conv = pd.to_numeric(s, errors="coerce")
        bad = conv.isna().to_numpy() & s.notna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{source} {where(i)}: column {short(c)} is numeric in training but holds "
                            f"{short(s.iloc[i])}")
        num[:, j] = conv.to_numpy(dtype=np.float64, na_value=np.nan)
    cat = None
    if schema.categorical:
        cat = np.stack([np.asarray(df[c].astype(object).where(df[c].notna(), None).map(
            lambda v: v if v is None else str(v)), dtype=object) for c in schema.categorical], axis=1)
    y = df[schema.target].to_numpy() if schema.target and schema.target in df.columns else None
    return Chunk(check_numeric(num, schema, source, where), cat, index, y)


def array_chunk(X, schema, source: str = "input") -> Chunk:
    """A 2-D array whose columns are the schema's numeric then categorical columns, in that order."""
    X = np.asarray(X)
    k = len(schema.columns) + len(schema.categorical)
    if X.ndim != 2 or X.shape[1] != k:
        raise DataError(f"{source}: an array of shape {tuple(X.shape)}; the model reads {k} columns "
                        f"({choices(schema.columns + schema.categorical)}), as a 2-D array or a DataFrame")
    where = (lambda i: f"row {i}")  # noqa: E731
    nf = len(schema.columns)
    try:
        num = X[:, :nf].astype(np.float64)
    except (TypeError, ValueError):
        import pandas as pd

        return frame_chunk(pd.DataFrame(X, columns=schema.columns + schema.categorical), schema, source)
    cat = X[:, nf:].astype(object) if schema.categorical else None
    return Chunk(check_numeric(num, schema, source, where), cat, np.arange(len(X)))


def csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            row = next(csv.reader(fh), None)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; a CSV file is expected") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    if not row:
        raise DataError(f"{path}: CSV file is empty")
    return row


def iter_csv(path: str | Path, schema, *, block_size: int = CSV_BLOCK, labels: bool = False) -> Iterator[Chunk]:
    """Stream a CSV file in blocks of rows, each checked and converted (:class:`Chunk`); rows are named by
    their file line (line 1 is the header). ``labels``: the target column must be there (evaluation)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from methodo.data.csvread import _CONVERSION, NA_VALUES

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    cols = csv_header(path)
    check_columns(schema, cols, str(path))
    has_target = bool(schema.target) and schema.target in cols
    if labels and not has_target:
        raise DataError(f"{path}: no target column {short(schema.target)}; evaluation needs the labels")
    types = {c: pa.float64() for c in schema.columns} | {c: pa.string() for c in schema.categorical}
    used = schema.columns + schema.categorical
    if has_target:
        types[schema.target] = pa.string()
        used = used + [schema.target]
    opts = dict(read_options=pacsv.ReadOptions(block_size=block_size),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(column_types=types, include_columns=used,
                                                     null_values=list(NA_VALUES), strings_can_be_null=True))
    seen = 0
    try:
        reader = pacsv.open_csv(path, **opts)
        for batch in reader:
            n = batch.num_rows
            if not n:
                continue
            lines = np.arange(seen + 2, seen + 2 + n)
            where = (lambda i, lines=lines: f"row {lines[i]}")  # noqa: E731
            num = np.empty((n, len(schema.columns)), dtype=np.float64)
            for j, c in enumerate(schema.columns):
                num[:, j] = batch.column(c).to_numpy(zero_copy_only=False)
            cat = None
            if schema.categorical:
                cat = np.stack([np.asarray(batch.column(c).to_pylist(), dtype=object) for c in schema.categorical], 1)
            y = np.asarray(batch.column(schema.target).to_pylist(), dtype=object) if has_target else None
            seen += n
            yield Chunk(check_numeric(num, schema, str(path), where), cat, lines, y)
    except pa.ArrowInvalid as exc:
        m = _CONVERSION.match(str(exc))
        if m and int(m.group(1)) < len(cols):
            raise _bad_cell(path, cols[int(m.group(1))], opts) from None
        raise DataError(f"{path}: not a readable CSV file ({str(exc).splitlines()[0]})") from None
    if not seen:
        raise DataError(f"{path}: CSV file has a header but no rows")


def _bad_cell(path: Path, col: str, opts: dict) -> DataError:
    """The first cell of numeric column ``col`` that is not a number, found by reading it again as text."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pandas as pd

    conv = opts["convert_options"]
    again = pacsv.ConvertOptions(column_types={col: pa.string()}, include_columns=[col],
                                 null_values=conv.null_values, strings_can_be_null=True)
    seen = 0
    for batch in pacsv.open_csv(path, read_options=opts["read_options"], parse_options=opts["parse_options"],
                                convert_options=again):
        s = pd.Series(batch.column(0).to_pylist(), dtype=object)
        bad = pd.to_numeric(s, errors="coerce").isna().to_numpy() & s.notna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return DataError(f"{path} row {seen + i + 2}: column {short(col)} is numeric in training but holds "
                             f"{short(s.iloc[i])}")
        seen += batch.num_rows
    return DataError(f"{path}: column {short(col)} holds a value that is not a number")


# --------------------------------------------------------------------------- images


def image_files(inputs: list[str | Path]) -> list[Path]:
    """The image files named by ``inputs`` (files, or folders searched recursively), in a stable order."""
    from methodo.data.sources import IMAGE_SUFFIXES, _hidden

    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = [f for f in sorted(p.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
                     and not any(_hidden(part) for part in f.relative_to(p).parts)]
            if not found:
                raise DataError(f"{p}: no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} file in this folder")
            out += found
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{p}: not an image file (the model reads {', '.join(IMAGE_SUFFIXES)} files)")
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    return out


def check_image(path: Path, schema) -> None:
    """The header of ``path`` fits the model: readable, channels it can use, its size (unless resized)."""
    from methodo.data.sources import _GRAY_MODES, _header

    head = _header(path)
    if isinstance(head, str):
        raise DataError(f"{path}: {head}")
    mode, (w, h) = head
    if schema.channels == 1 and mode not in _GRAY_MODES and not schema.to_gray:
        raise DataError(f"{path}: a color image ({mode}, 3 channels); the model was trained on grayscale images "
                        "(1 channel): convert it to grayscale first")
    if not schema.resize and [h, w] != list(schema.image_size):
        hh, ww = schema.image_size
        raise DataError(f"{path}: image is {w}×{h}; the model takes {ww}×{hh} images (its run did not resize, "
                        "data.image_size): resize it first")


def iter_images(paths: list[Path], schema, *, chunk: int = IMAGE_CHUNK, labels: list | None = None) -> Iterator[Chunk]:
    """Decode ``paths`` in chunks, as the run's loader did (alpha on white, gray or RGB, resized when the run
    resized): images float32 in [0, 1], ``(n, C, H, W)``."""
    from methodo.data.sources import read_images

    for s in range(0, len(paths), chunk):
        part = paths[s:s + chunk]
        for p in part:
            check_image(p, schema)
        X, _ = read_images([str(p) for p in part], channels=schema.channels, size=tuple(schema.image_size))
        y = None if labels is None else np.asarray(labels[s:s + chunk], dtype=object)
        yield Chunk(X, None, np.asarray([str(p) for p in part], dtype=object), y)


def labeled_image_folder(root: Path, schema) -> tuple[list[Path], list[str]]:
    """A folder with one subfolder per class (the run's class names): its files and their labels."""
    from methodo.data.sources import _hidden

    subs = sorted(p.name for p in root.iterdir() if p.is_dir() and not _hidden(p.name))
    unknown = [s for s in subs if s not in (schema.classes or [])]
    if not subs or unknown:
        raise DataError(f"{root}: a labeled image folder has one subfolder per class of the model "
                        f"({choices(schema.classes or [])})" + (f"; {short(unknown[0])} is not one" if unknown else ""))
    paths, labels = [], []
    for name in subs:
        found = image_files([root / name])
        paths += found
        labels += [name] * len(found)
    return paths, labels


# --------------------------------------------------------------------------- text


def text_lines(path: Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"{path}: no text line")
    return lines
