"""Dataset sources: a registry of loaders, each returning a :class:`Dataset` held in memory.

Images are float32 in ``[0, 1]``, shaped ``(n, C, H, W)``; tables are ``(n, F)`` float32 with
``NaN`` for a missing numeric value, plus raw categorical columns (encoded later, on the training
split only). Every loader has two modes: strict (the default, used by ``methodo run``: the first
unreadable file or bad label is a :class:`~methodo.errors.DataError` naming the file and row) and
audit (``audit=True``, used by ``methodo data inspect``: problems are collected in
``Dataset.problems`` and the bad rows or files left out, so every problem is reported at once).

Examples
--------
>>> from methodo.data.sources import DATASETS
>>> "digits" in DATASETS
True
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from methodo.errors import DataError, choices, clip, short
from methodo.tasks import task_spec
from methodo.data.dataset import DATASETS, Dataset  # noqa: F401  (Dataset: imported from here by many)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def check_dataset_options(source: str, options: dict) -> None:
    """``data.options`` must be keyword options of the source's loader (a ConfigError names the key)."""
    from methodo.registry import check_kwargs

    if source in DATASETS:
        check_kwargs(DATASETS.get(source), options, reserved=("data_cfg", "audit"), what=f"dataset {source!r}")


def load_dataset(data_cfg, *, audit: bool = False) -> Dataset:
    """Load the dataset named by ``data_cfg.source`` (a :class:`~methodo.config.DataConfig`).

    ``data_cfg.options`` are passed to the loader as keywords. With ``audit=True`` unreadable files
    and bad labels are collected in ``Dataset.problems`` instead of raising at the first one.
    """
    loader = DATASETS.get(data_cfg.source, key="data.source")
    ds = loader(data_cfg, audit=audit, **getattr(data_cfg, "options", {}))
    if len(ds.y) == 0:
        raise DataError(f"dataset {ds.name!r} has no rows" + (
            f" ({len(ds.problems)} unreadable: first {ds.problems[0]})" if ds.problems else ""))
    if not audit:  # `data inspect` reports these as findings (single_class, constant_target)
        reason = unusable_target(ds)
        if reason:
            where = getattr(data_cfg, "path", None) or f"dataset {ds.name!r}"
            raise DataError(f"{where}: {reason}")
    return ds


def unusable_target(ds: Dataset) -> str | None:
    """Why the target leaves nothing to learn (one class; a constant regression target), or None."""
    if task_spec(ds.task).has_classes and ds.y.ndim == 1:
        present = np.unique(ds.y)
        if len(present) < 2:
            name = ds.class_names[int(present[0])] if ds.class_names else str(present[0])
            what = "folder" if ds.kind == "image" and "path" in ds.meta else "class"
            return (f"only one {what} ({name!r}, {len(ds.y)} {'images' if ds.kind == 'image' else 'rows'}): classification needs at least 2 classes "
                    + ("(one subfolder of images per class)" if what == "folder" else "(is data.target the right "
                       "column?)" if "row" in ds.meta else ""))
    if task_spec(ds.task).standardize_target and len(ds.y) and np.all(ds.y == ds.y[0]):
        return (f"the target is {float(ds.y[0]):g} in every row ({len(ds.y)} rows): there is nothing to predict "
                "(is data.target the right column?)")
    return None


# --------------------------------------------------------------------------- scikit-learn


def _keep_classes(X, y, class_names: list[str], classes, name: str):
    """``data.options.classes``: the rows of those classes only (names or indices), relabeled 0..k-1 in the
    order given: the everyday transfer split (pretrain on some classes, reuse on the others)."""
    if not isinstance(classes, (list, tuple)) or len(classes) < 2:
        raise DataError(f"data.options.classes: a list of at least 2 of dataset {name!r}'s classes "
                        f"{choices(class_names)} (got {short(classes)})")
    picked = []
    for c in classes:
        key = str(c)
        if key not in class_names:
            raise DataError(f"data.options.classes: {short(c)} is not a class of dataset {name!r}; choose from "
                            f"{choices(class_names)}")
        if key in picked:
            raise DataError(f"data.options.classes: {short(c)} is given twice")
        picked.append(key)
    old = np.array([class_names.index(k) for k in picked])
    keep = np.isin(y, old)
    relabel = np.full(len(class_names), -1, dtype=np.int64)
    relabel[old] = np.arange(len(old))
    return X[keep], relabel[y[keep]], picked


def _sklearn(name: str, task, loader_name: str, description: str):
    def load(data_cfg, audit: bool = False, classes: list | None = None) -> Dataset:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        X = np.asarray(bunch.data, dtype=np.float32)
        kind = "tabular"
        if name == "digits":  # the 8×8 images (values 0..16), as 1-channel images in [0, 1]
            X = np.asarray(bunch.images, dtype=np.float32)[:, None, :, :] / np.float32(16.0)
            kind = "image"
        if task_spec(task).has_classes:
            y = np.asarray(bunch.target, dtype=np.int64)
            class_names = [str(c) for c in getattr(bunch, "target_names", np.unique(y))]
        else:
            y = np.asarray(bunch.target, dtype=np.float32)
            class_names = None
        feats = [str(f) for f in getattr(bunch, "feature_names", [])] or [f"x{i}" for i in range(X[0].size)]
        if classes is not None:
            if not task_spec(task).has_classes:
                raise DataError(f"data.options.classes: dataset {name!r} is a {task} dataset, it has no classes")
            X, y, class_names = _keep_classes(X, y, class_names, classes, name)
            return Dataset(name, task, kind, X, y, feats, class_names,
                           f"{description}; classes {', '.join(class_names)} only ({len(y)} rows)")
        return Dataset(name, task, kind, X, y, feats, class_names, description)

    DATASETS.register(name, load, help=description, task=task, kind="image" if name == "digits" else "tabular")


_sklearn("digits", "classification", "load_digits", "scikit-learn digits: 1797 8×8 grayscale images, 10 classes")
_sklearn("breast_cancer", "classification", "load_breast_cancer", "scikit-learn breast cancer: 569 rows, 30 features, 2 classes")
_sklearn("wine", "classification", "load_wine", "scikit-learn wine: 178 rows, 13 features, 3 classes")
_sklearn("iris", "classification", "load_iris", "scikit-learn iris: 150 rows, 4 features, 3 classes")
_sklearn("diabetes", "regression", "load_diabetes", "scikit-learn diabetes: 442 rows, 10 features, regression")


@DATASETS.register("circles", help="two concentric noisy circles (x, y), 1000 rows, 2 classes: "
                   "the course's case for the polar (r, θ) feature", task="classification", kind="tabular")
def load_circles(data_cfg, audit: bool = False) -> Dataset:
    from sklearn.datasets import make_circles

    X, y = make_circles(n_samples=1000, noise=0.08, factor=0.5, random_state=0)  # fixed: the data, not the seed
    return Dataset("circles", "classification", "tabular", X.astype(np.float32), y.astype(np.int64),
                   ["x", "y"], ["outer", "inner"], "two concentric circles: 1000 rows, features x and y, 2 classes")


# Attributes of each digit class, for the multi-label example: an image can be even *and* have a loop.
DIGIT_ATTRIBUTES = {
    "even": (0, 2, 4, 6, 8),
    "above_4": (5, 6, 7, 8, 9),
    "prime": (2, 3, 5, 7),
    "loop": (0, 6, 8, 9),  # a closed loop in the usual handwritten shape (4 is drawn open as often as not)
    "straight": (1, 4, 7),  # drawn with straight strokes only
}


@DATASETS.register("digits_attributes", help="scikit-learn digits as a multi-label set: 1797 8×8 images, 5 "
                   "yes/no attributes of the digit (even, above_4, prime, loop, straight)", task="multilabel",
                   kind="image")
def load_digits_attributes(data_cfg, audit: bool = False) -> Dataset:
    import sklearn.datasets

    bunch = sklearn.datasets.load_digits()
    X = np.asarray(bunch.images, dtype=np.float32)[:, None, :, :] / np.float32(16.0)
    digit = np.asarray(bunch.target)
    names = list(DIGIT_ATTRIBUTES)
    y = np.stack([np.isin(digit, DIGIT_ATTRIBUTES[n]) for n in names], axis=1).astype(np.float32)
    return Dataset("digits_attributes", "multilabel", "image", X, y, [], names,
                   "scikit-learn digits, 1797 8×8 images, 5 attributes per image: " + ", ".join(
                       f"{n} ({' '.join(map(str, DIGIT_ATTRIBUTES[n]))})" for n in names),
                   meta={"digit": digit})


# --------------------------------------------------------------------------- CSV


_F32_MAX = float(np.finfo(np.float32).max)


def _finite32(values: np.ndarray) -> np.ndarray:
    """Mask of values that stay finite as float32 (NaN counts as finite here: it is "missing")."""
    with np.errstate(invalid="ignore"):
        return np.isnan(values) | (np.abs(values) <= _F32_MAX)


def _numbers(s):
    """``(values as float64 with NaN, mask of cells that are numbers)`` for a column of strings."""
    import pandas as pd

    conv = pd.to_numeric(s, errors="coerce")
    return conv.to_numpy(dtype=np.float64, copy=True), conv.notna().to_numpy()


@DATASETS.register("csv", help="a CSV file (data.path) with a target column (data.target); numeric and "
                   "categorical feature columns", task=None, kind="tabular", needs="path")
def load_csv(data_cfg, audit: bool = False) -> Dataset:
    """Read a CSV; the task is inferred from the target (text or ≤ 20 integer values: classification).

    A feature column is categorical when listed in ``data.categorical`` or when fewer than half of
    its values are numbers; it is kept raw here and one-hot encoded later, fitted on the training
    split only. A numeric column holding a few non-numbers is an error naming the row (in audit
    mode: a ``bad_value`` problem, the cell read as missing). Missing numeric values stay ``NaN``.
    Numeric columns are read as float32 by Arrow (:mod:`methodo.data.csvread`); only text columns,
    and a numeric column with a bad cell, are looked at as text.
    """
    from methodo.data import csvread

    path = Path(data_cfg.path)
    if not path.is_file():
        raise DataError(f"{path}: CSV file not found (data.path)")
    forced_cat = set(getattr(data_cfg, "categorical", []) or [])
    target, group_col, features, table, renamed = _csv_table(path, data_cfg, forced_cat)
    n = table.num_rows
    columns = dict(zip(table.column_names, table.columns))
    del table  # each column's memory goes once it is converted
    rows = np.arange(n) + 2  # file line of each row (line 1 is the header)
    problems: list[dict] = []
    keep = np.ones(n, dtype=bool)
    ctx = _CsvContext(path, rows, keep, problems, audit, renamed)

    # 1. The target: a missing label, or a non-number in a numeric label column, is a bad label.
    yvals, is_num, ytext = _csv_target(ctx, columns[target], target)
    meta = {"row": rows}
    if group_col is not None:
        meta["group"] = columns[group_col].fill_null("(missing)").to_numpy(zero_copy_only=False)
    sensitive = {c: _csv_sensitive(ctx, columns, c) for c in getattr(data_cfg, "sensitive", []) or []}

    # 2. Features: numeric (NaN when missing) or categorical (raw strings, None when missing).
    X, num_names, cat, cat_names = _csv_features(ctx, columns, features, forced_cat)
    del columns
    csvread.release()

    if not keep.all():
        X, rows, yvals, is_num = X[keep], rows[keep], yvals[keep], is_num[keep]
        ytext = ytext[keep] if ytext is not None else None
        cat = cat[keep] if cat is not None else None
        meta = {k: v[keep] for k, v in meta.items()}
        sensitive = {k: v[keep] for k, v in sensitive.items()}
    desc = f"CSV {path.name}: {len(rows)} rows, {len(num_names)} numeric + {len(cat_names)} categorical features"
    numeric_target = bool(len(yvals)) and bool(is_num.all())
    integer_like = numeric_target and np.all(yvals == np.round(yvals))
    common = dict(cat=cat, cat_names=cat_names, meta=meta, problems=problems, sensitive=sensitive)
    if not numeric_target or (integer_like and len(np.unique(yvals)) <= 20):
        keys = ytext.to_numpy(dtype=str) if not numeric_target else yvals
        classes, y = np.unique(keys, return_inverse=True)
        names = [str(c) if not numeric_target else f"{c:g}" for c in classes]
        return Dataset(path.stem, "classification", "tabular", X, y.astype(np.int64), num_names, names, desc, **common)
    return Dataset(path.stem, "regression", "tabular", X, yvals.astype(np.float32), num_names, None, desc, **common)


def _csv_table(path: Path, data_cfg, forced_cat: set[str]):
    """``(target, group column or None, feature columns, pyarrow.Table of those columns, the column names
    given to Arrow or None)``: Arrow's typed read when it can parse the file, else pandas' read of every
    cell as text (as before)."""
    from methodo.data import csvread

    head = csvread.header(path)
    table = csvread.read_text(path) if head is None else None
    has_rows = head[2] if head else table.num_rows > 0
    target, group_col, features = _csv_columns(path, data_cfg, head[0] if head else table.column_names, has_rows)
    renamed = None
    if table is None:
        sens = list(getattr(data_cfg, "sensitive", []) or [])
        used = list(dict.fromkeys([*features, target, *([group_col] if group_col else []), *sens]))
        text = head[1] | forced_cat | ({group_col} if group_col else set()) | set(sens)
        renamed = head[3]
        table = csvread.read(path, head[0], used, text=text, wide={target}, renamed=renamed)
        if table is None:
            table, renamed = csvread.read_text(path), None
    return target, group_col, features, table, renamed


def _csv_columns(path: Path, data_cfg, cols: list[str], has_rows: bool) -> tuple[str, str | None, list[str]]:
    """``(target, group column or None, feature columns)``, each named column checked against the header."""
    target = data_cfg.target
    if target not in cols:
        raise DataError(f"{path}: data.target column {short(target)} not found; columns: {choices(cols)}")
    if not has_rows:
        raise DataError(f"{path}: CSV file has a header but no rows")
    group_col = getattr(data_cfg.split, "group", None) if data_cfg.split.method in ("group",) else None
    if group_col is not None and group_col not in cols:
        raise DataError(f"{path}: data.split.group column {short(group_col)} not found; columns: {choices(cols)}")
    ignore = list(getattr(data_cfg, "ignore", []) or [])
    for c in ignore + list(getattr(data_cfg, "categorical", []) or []):
        if c not in cols:
            raise DataError(f"{path}: column {short(c)} (data.ignore / data.categorical) not found; columns: {choices(cols)}")
    sensitive = list(getattr(data_cfg, "sensitive", []) or [])
    for c in sensitive:
        if c not in cols:
            raise DataError(f"{path}: data.sensitive column {short(c)} not found; columns: {choices(cols)}")
        if c == target:
            raise DataError(f"{path}: data.sensitive column {short(c)} is the target (data.target); name the "
                            "column holding each row's group")
    hidden = set() if getattr(data_cfg, "sensitive_as_feature", False) else set(sensitive)
    features = [c for c in cols if c != target and c != group_col and c not in ignore and c not in hidden]
    if not features:
        raise DataError(f"{path}: no feature columns besides the target {short(target)}")
    return target, group_col, features


def _csv_sensitive(ctx, columns: dict, col: str) -> np.ndarray:
    """A sensitive column's values as text (an object array): each row's group. A missing value is a group
    of its own, ``(missing)``, so that who is left without a recorded attribute is counted too."""
    arr = columns[col]
    values = arr.cast("string").fill_null("(missing)") if not str(arr.type) == "string" else arr.fill_null("(missing)")
    out = values.to_numpy(zero_copy_only=False).astype(object)
    if len(out) and len(set(out.tolist())) < 2:
        raise DataError(f"{ctx.path}: data.sensitive column {short(col)} holds one group only ({short(out[0])}); "
                        "per-group metrics need at least 2")
    return out


@dataclass
class _CsvContext:
    """What the CSV checks share: the file, each row's line, the rows kept, the problems (audit mode)."""

    path: Path
    rows: np.ndarray
    keep: np.ndarray
    problems: list[dict]
    audit: bool
    renamed: list[str] | None = None  # the column names Arrow was given (csvread.header), None: the file's


def _csv_target(ctx: _CsvContext, col, target: str):
    """``(numbers with NaN, mask of numbers, text or None)`` of the target column; a bad label is refused
    (strict load) or recorded and its row left out (audit). The text is kept when the labels are not all
    numbers (text classes); a clean numeric column is never looked at as text."""
    from methodo.data import csvread

    yvals = csvread.numbers(col)
    ytext = None if yvals is not None else csvread.text(ctx.path, col, target, ctx.renamed).to_pandas()
    present = ~np.isnan(yvals) if ytext is None else ytext.notna().to_numpy()
    for i in np.flatnonzero(~present):
        if not ctx.audit:
            raise DataError(f"{ctx.path} row {ctx.rows[i]}: missing value in target column {short(target)}")
        ctx.problems.append({"id": "bad_label", "row": int(ctx.rows[i]), "column": target, "value": None,
                             "reason": "missing label"})
        ctx.keep[i] = False
    if ytext is None:
        return yvals, present, None

    def bad_label(i: int, says: str, reason: str) -> None:
        """Refuse the row (strict load) or record it as a problem and leave it out (audit)."""
        if not ctx.audit:
            raise DataError(f"{ctx.path} row {ctx.rows[i]}: target column {short(target)} {says}")
        ctx.problems.append({"id": "bad_label", "row": int(ctx.rows[i]), "column": target,
                             "value": clip(ytext.iloc[i]), "reason": reason})
        ctx.keep[i] = False

    yvals, is_num = _numbers(ytext)
    numeric_labels = present.any() and is_num[present].mean() >= 0.5
    for i in np.flatnonzero(present & ~is_num) if numeric_labels else []:
        bad_label(i, f"is numeric but holds {short(ytext.iloc[i])}", "a string in a numeric label column")
    for i in np.flatnonzero(present & is_num & ~_finite32(yvals)) if numeric_labels else []:
        bad_label(i, f"holds {short(ytext.iloc[i])}, not a finite number within ±{_F32_MAX:.3g}",
                  "not a finite number within float32's range")
    return yvals, is_num, ytext


def _csv_features(ctx: _CsvContext, columns: dict, features: list[str], forced_cat: set[str]):
    """``(X float32, numeric names, categorical object array or None, categorical names)``. A clean typed
    column is copied into X as it is; the others are looked at as text. Columns are dropped from
    ``columns`` once converted, so the file's table and X are not both held whole."""
    from methodo.data import csvread

    X = np.empty((len(ctx.rows), len(features)), dtype=np.float32)
    num_names, cat_names, cat_cols = [], [], []
    for col in features:
        arr = columns.pop(col)
        values = None if col in forced_cat else csvread.numbers(arr)
        if values is None:
            cells = csvread.text(ctx.path, arr, col, ctx.renamed)
            values = _csv_text_feature(ctx, cells, col, forced=col in forced_cat)
        if values.dtype == object:
            cat_names.append(col)
            cat_cols.append(values)
            continue
        X[:, len(num_names)] = values
        num_names.append(col)
    X = X if len(num_names) == len(features) else np.ascontiguousarray(X[:, :len(num_names)])
    return X, num_names, np.stack(cat_cols, 1) if cat_cols else None, cat_names


def _csv_text_feature(ctx: _CsvContext, arr, col: str, *, forced: bool) -> np.ndarray:
    """A feature column read as text: its float64 numbers (NaN when missing) or, when categorical (listed
    in data.categorical, or fewer than half of its values are numbers), its raw strings (an object array,
    None when missing). A non-number or a value beyond float32 in a numeric column is refused (strict) or
    recorded and read as missing (audit)."""
    if forced:
        return arr.to_numpy(zero_copy_only=False).astype(object, copy=False)
    s = arr.to_pandas()
    nonmissing = s.notna().to_numpy()
    values, num_mask = _numbers(s)
    if (num_mask[nonmissing].mean() if nonmissing.any() else 1.0) < 0.5:
        return arr.to_numpy(zero_copy_only=False).astype(object, copy=False)
    path, rows, problems = ctx.path, ctx.rows, ctx.problems
    for i in np.flatnonzero(nonmissing & ~num_mask):
        if not ctx.audit:
            raise DataError(f"{path} row {rows[i]}: column {short(col)} is not numeric (value {short(s.iloc[i])}); "
                            "list it in data.categorical if it is a category")
        problems.append({"id": "bad_value", "row": int(rows[i]), "column": col, "value": clip(s.iloc[i]),
                         "reason": "a string in a numeric column (read as missing)"})
    for i in np.flatnonzero(num_mask & ~_finite32(values)):  # inf, -inf, 1e400, 1e308 (beyond float32)
        if not ctx.audit:
            raise DataError(f"{path} row {rows[i]}: column {short(col)} holds {short(s.iloc[i])}, not a finite "
                            f"number within ±{_F32_MAX:.3g}; fix the cell, or empty it (a missing value, which data.features=[impute] fills)")
        problems.append({"id": "non_finite_value", "row": int(rows[i]), "column": col, "value": clip(s.iloc[i]),
                         "reason": "not a finite number within float32's range (read as missing)"})
        values[i] = np.nan
    return values


# --------------------------------------------------------------------------- image folder


DEFAULT_MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own default (a 2**30-byte RGB image): data.max_image_pixels


@contextmanager
def _pillow_quiet():
    """Pillow without its own decompression-bomb check and warnings: the caller checks the pixel count
    from the header first (with the limit of data.max_image_pixels) and reports it in one line."""
    import warnings

    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def too_many_pixels(size: tuple[int, int], limit: int) -> str | None:
    """The reason an image of ``size`` (width, height) is refused, or None when it is within ``limit``."""
    w, h = size
    if w * h <= limit:
        return None
    return (f"image is {w}×{h} = {w * h / 1e6:.1f} M pixels, over the limit of {limit / 1e6:.1f} M pixels "
            f"(data.max_image_pixels, a guard against decompression bombs); if the image is genuine, raise it, "
            f"e.g. data.max_image_pixels={w * h}")


def _header(path: Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[str, tuple[int, int]] | str:
    """``(mode, (width, height))`` from the file header, or the reason it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        if path.stat().st_size == 0:
            return "0-byte file"
        with _pillow_quiet(), Image.open(path) as im:
            mode, size = im.mode, im.size
    except UnidentifiedImageError:
        return "not an image (no PNG/JPEG content; is it a text file with an image name?)"
    except OSError as exc:
        return f"unreadable ({exc})"
    except Exception as exc:  # noqa: BLE001 - a malformed header raises SyntaxError, ValueError, struct.error...
        return f"unreadable ({' '.join(str(exc).split()) or type(exc).__name__})"
    return too_many_pixels(size, max_pixels) or (mode, size)


def _decode(path: str, channels: int, size: tuple[int, int] | None,
            max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """One image as uint8 ``(C, H, W)``: alpha composited on white, then gray or RGB, then resized."""
    from PIL import Image

    with _pillow_quiet(), Image.open(path) as im:
        refused = too_many_pixels(im.size, max_pixels)
        if refused:
            raise ValueError(refused)
        im.load()  # decode fully now: a truncated file fails here
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, rgba)
        if im.mode.startswith("I") or im.mode == "F":
            arr = np.asarray(im, dtype=np.float64)  # 16/32-bit gray: scale to 8 bits by its range
            hi = 65535.0 if arr.max() > 255 else 255.0
            im = Image.fromarray(np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8), "L")
        im = im.convert("L" if channels == 1 else "RGB")
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


class _ImageFiles:
    """A map-style torch dataset decoding one file per item; never raises (errors come back as text),
    so a corrupt file is reported with its path even from a DataLoader worker."""

    def __init__(self, paths, channels, size, max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
        self.paths, self.channels, self.size, self.max_pixels = paths, channels, size, max_pixels

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            return i, _decode(self.paths[i], self.channels, self.size, self.max_pixels), ""
        except Exception as exc:  # noqa: BLE001 - reported with the file's path by the caller
            reason = " ".join(str(exc).split()) or type(exc).__name__
            if "truncated" in reason.lower():
                reason = f"truncated image ({reason})"
            return i, None, f"unreadable image: {reason}"


def _collate(items):
    return items


def read_images(paths: list[str], *, channels: int, size: tuple[int, int], workers: int = 0,
                audit: bool = False, progress: bool = False,
                max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[np.ndarray, list[dict]]:
    """Decode ``paths`` into one float32 array ``(n, C, H, W)`` in [0, 1], in DataLoader workers.

    Strict mode raises :class:`DataError` with the first unreadable file's path; audit mode returns
    the problems (those rows stay zero; the caller drops them).
    """
    import sys

    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    out = np.zeros((len(paths), channels, *size), dtype=np.float32)
    problems = []
    workers = min(workers, os.cpu_count() or 1)  # more processes than CPUs only adds start-up time (and a warning)
    loader = DataLoader(_ImageFiles(paths, channels, size, max_pixels), batch_size=64, num_workers=workers,
                        collate_fn=_collate, shuffle=False)
    for batch in tqdm(loader, disable=not (progress and sys.stderr.isatty()), desc="decoding images", leave=False):
        for i, arr, err in batch:
            if err:
                if not audit:
                    raise DataError(f"{paths[i]}: {err}")
                problems.append({"id": "unreadable_file", "path": paths[i], "reason": err})
                continue
            out[i] = arr.astype(np.float32) / np.float32(255.0)
    return out, problems


def _hidden(name: str) -> bool:
    """Folders and files that are not data: dot-prefixed (.git, .ipynb_checkpoints, ._x.png) and the
    resource-fork folder macOS adds to zip files."""
    return name.startswith(".") or name in ("__MACOSX", "__pycache__")


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _image_size(value) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    if len(value) == 1:
        return (int(value[0]), int(value[0]))
    return (int(value[0]), int(value[1]))


@DATASETS.register("imagefolder", help="a folder (data.path) with one subfolder per class of PNG/JPEG images "
                   "(RGB, RGBA and grayscale converted consistently)", task="classification", kind="image",
                   needs="path")
def load_imagefolder(data_cfg, audit: bool = False) -> Dataset:
    """Read ``data.path/CLASS/*.png|jpg|jpeg``.

    Channels: ``data.channels: auto`` gives 3 (RGB) when any image has color, else 1; an RGBA image
    is composited on white, a grayscale one repeated to RGB when the folder is in color. Size:
    ``data.image_size`` resizes every image; when unset every image must already have one size.
    Files are decoded in ``data.workers`` DataLoader worker processes.
    """
    root = Path(data_cfg.path)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found (data.path)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not _hidden(p.name))
    if not classes:
        raise DataError(f"{root}: no class subfolders; expected {root}/CLASS_NAME/image.png for each class")
    paths, labels, problems = [], [], []
    kinds = "/".join(s[1:] for s in IMAGE_SUFFIXES)
    empty = []
    for name in classes:
        found = [p for p in sorted((root / name).rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES
                 and not any(_hidden(part) for part in p.relative_to(root / name).parts) and p.is_file()]
        if not found:
            if not audit:
                raise DataError(f"{root / name}: class folder holds no {kinds} file; remove the folder or add its "
                                "images (hidden folders, e.g. .git or __MACOSX, are ignored)")
            problems.append({"id": "empty_class", "path": str(root / name), "reason": f"no {kinds} file"})
            empty.append(name)
            continue
        paths += found
        labels += [name] * len(found)
    classes = [c for c in classes if c not in empty]  # audit mode: an empty folder is not a class
    if not paths:
        raise DataError(f"{root}: no {kinds} files in the class subfolders {choices(classes + empty)}")
    labels = [classes.index(c) for c in labels]
    max_pixels = getattr(data_cfg, "max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS)

    # 1. Headers only (fast): mode and size of every file; a 0-byte or non-image file is caught here.
    heads = []
    for p in paths:
        h = _header(p, max_pixels)
        if isinstance(h, str):
            if not audit:
                raise DataError(f"{p}: {h}")
            problems.append({"id": "unreadable_file", "path": str(p), "reason": h})
        heads.append(h)
    good = [i for i, h in enumerate(heads) if not isinstance(h, str)]
    if not good:
        raise DataError(f"{root}: none of the {len(paths)} image files is readable (first: {problems[0]['path']}: "
                        f"{problems[0]['reason']})")
    channels = {"auto": None, "1": 1, "3": 3}[str(data_cfg.channels)]
    if channels is None:
        channels = 3 if any(heads[i][0] not in _GRAY_MODES for i in good) else 1
    size = _image_size(data_cfg.image_size)
    if size is None:
        sizes = {heads[i][1] for i in good}
        if len(sizes) > 1:
            a, b = sorted(sizes)[:2]
            ia = next(i for i in good if heads[i][1] == a)
            ib = next(i for i in good if heads[i][1] == b)
            raise DataError(f"{root}: images have different sizes ({paths[ia]} is {a[0]}×{a[1]}, {paths[ib]} is "
                            f"{b[0]}×{b[1]}); set data.image_size, e.g. data.image_size=32")
        w, h = sizes.pop()
        size = (h, w)

    need = len(good) * channels * size[0] * size[1] * 4  # bytes of the float32 array
    avail = _available_memory()
    if avail is not None and need > 0.8 * avail:
        raise DataError(f"{root}: {len(good)} images of {size[0]}×{size[1]}×{channels} need {need / 2**30:.1f} GiB "
                        f"of memory once decoded, more than the {avail / 2**30:.1f} GiB available; set a smaller "
                        "data.image_size, e.g. data.image_size=64")

    # 2. Decode the readable files in DataLoader workers; a truncated file is caught here.
    X, decode_problems = read_images([str(paths[i]) for i in good], channels=channels, size=size,
                                     workers=data_cfg.workers, audit=audit, progress=True, max_pixels=max_pixels)
    problems += decode_problems
    bad = {p["path"] for p in decode_problems}
    keep = [k for k, i in enumerate(good) if str(paths[i]) not in bad]
    X = X[keep]
    kept_paths = np.array([str(paths[good[k]]) for k in keep], dtype=object)
    y = np.array([labels[good[k]] for k in keep], dtype=np.int64)
    desc = (f"image folder {root.name}: {len(y)} images, {len(classes)} classes, "
            f"{'RGB' if channels == 3 else 'grayscale'} {size[0]}×{size[1]}")
    return Dataset(root.name, "classification", "image", X, y, [], classes, desc, meta={"path": kept_paths},
                   problems=problems)


# --------------------------------------------------------------------------- torchvision datasets


def default_data_root() -> Path:
    """Where downloaded datasets live: ``$METHODO_DATA``, else ``~/.cache/methodo/datasets``."""
    return Path(os.environ.get("METHODO_DATA") or Path.home() / ".cache" / "methodo" / "datasets")


_TV = {
    # name: (torchvision class, folder under root, files, where to get them)
    "mnist": ("MNIST", "MNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                      "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
              "https://ossci-datasets.s3.amazonaws.com/mnist/ (gunzip each .gz)"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw",
                      ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
                      "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ (gunzip each .gz)"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py",
                ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch", "batches.meta"],
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (extract it)"),
}


def _torchvision(name: str, help: str):
    cls_name, sub, files, url = _TV[name]

    def load(data_cfg, audit: bool = False) -> Dataset:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        root = Path(data_cfg.path) if data_cfg.path else default_data_root()
        folder = root / sub
        put = (f"put {', '.join(files)} in {folder} (from {url})")
        if data_cfg.download:
            try:
                cls(str(root), train=True, download=True)
            except Exception as exc:  # noqa: BLE001 - network errors come in many types
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise DataError(f"{name}: the download to {root} failed ({reason}); offline, {put}") from None
        try:
            # CIFAR-10's files are Python pickles: torchvision unpickles them only after checking
            # each file's MD5 against the official one, so nothing but the official files is loaded.
            parts = [cls(str(root), train=t, download=False) for t in (True, False)]
        except RuntimeError as exc:
            raise DataError(f"{name}: dataset files not found or corrupted under {folder} ({exc}); {put}, "
                            "or set data.download=true when online") from None
        arrays = []
        for p in parts:
            a = p.data.numpy() if hasattr(p.data, "numpy") else np.asarray(p.data)
            a = a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2)  # (n, C, H, W)
            arrays.append(a)
        X = np.concatenate(arrays).astype(np.float32) / np.float32(255.0)
        y = np.concatenate([np.asarray(p.targets, dtype=np.int64) for p in parts])
        official = np.zeros(len(y), dtype=bool)
        official[len(arrays[0]):] = True
        classes = [str(c) for c in parts[0].classes]
        desc = (f"{name}: {len(arrays[0])} train + {len(arrays[1])} official test images, "
                f"{X.shape[1]}×{X.shape[2]}×{X.shape[3]}, {len(classes)} classes")
        return Dataset(name, "classification", "image", X, y, [], classes, desc, official_test=official)

    DATASETS.register(name, load, help=help, task="classification", kind="image", needs="download",
                      official_test=True)


_torchvision("mnist", "torchvision MNIST: 70000 28×28 handwritten digits (downloaded to data.path)")
_torchvision("fashion_mnist", "torchvision Fashion-MNIST: 70000 28×28 clothing images, 10 classes")
_torchvision("cifar10", "torchvision CIFAR-10: 60000 32×32 RGB images, 10 classes (MD5-checked before loading)")


# Generated and text datasets register themselves on import.
from methodo.data import shapes as _shapes, text as _text  # noqa: E402
from methodo.data import series as _series  # noqa: E402,F401
from methodo.data import graphs as _graphs  # noqa: E402

del _shapes, _text
