"""``methodo suggest DATA_OR_CONFIG``: read the data, print a ready-to-run config with a reason per choice.

The course's last table maps data types to architectures (tables → MLP, images → CNN / ResNet, per-pixel
classes → FCN / U-Net, text → reuse a pretrained transformer, token sequences → GRU / transformer) and its
methodology chapters say how to split, balance, measure and stop. This module applies that table to what it
reads off the data itself — kind, shape, size, target, class balance, categorical and missing values, a text
column — and writes each decision as a YAML comment beside the key it sets::

    methodo suggest data.csv > exp.yaml && methodo run exp.yaml

The data is loaded by the same loaders ``methodo run`` uses (so a bad file fails here with the same one-line
error), and the printed config is validated by the same strict code before a byte is printed.

Examples
--------
>>> from methodo.experiments.suggest import suggest
>>> text = suggest("iris")
>>> "name: mlp" in text and "source: iris" in text
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from methodo.errors import ConfigError, DataError, choices

# A column is read as the target when --target is not given and it has one of these names (any case);
# else the last column is.
TARGET_NAMES = ("target", "label", "labels", "class", "y", "outcome")
# Imbalance (smallest class / largest) under which balancing is suggested: the course's 1:4 rule of thumb.
IMBALANCED = 0.25
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# CSV columns read as sensitive attributes (a word of the column's name, any case): the course's COMPAS and
# recruiting cases. They become data.sensitive: per-group metrics, and kept out of the features.
TIME_NAMES = ("time", "date", "datetime", "timestamp", "ds", "month", "day", "week", "year")
SENSITIVE_WORDS = {"gender", "sex", "race", "ethnicity", "ethnic", "age", "religion", "nationality", "disability",
                   "marital"}


@dataclass
class Profile:
    """What :func:`suggest` read off the data."""

    data: dict[str, Any]  # the config's data section (source, path, target, options)
    name: str
    kind: str
    task: str
    rows: int
    input_shape: tuple[int, ...]
    class_counts: list[int] = field(default_factory=list)
    categorical: int = 0
    missing: float = 0.0  # share of missing feature values (tables)

    @property
    def features(self) -> int:
        """Table columns the model reads: numeric and categorical."""
        return (int(np.prod(self.input_shape)) if self.input_shape else 0) + self.categorical

    @property
    def imbalance(self) -> float | None:
        """Smallest class over largest (None: no classes)."""
        c = [n for n in self.class_counts if n > 0]
        return min(c) / max(c) if len(c) > 1 else None


Entry = tuple[tuple[str, ...], Any, str]  # (key path, value, reason)


def suggest(arg: str, *, target: str | None = None, text: str | None = None, time: str | None = None,
            name: str | None = None) -> str:
    """The suggested config for ``arg`` (a dataset name, a CSV file, a class-folder, or a config), as YAML
    text with a comment per choice. Raises ConfigError / DataError (one line) on bad input."""
    prof = profile(arg, target=target, text=text, time=time)
    rule = RULES.get((prof.kind, prof.task))
    if rule is None:
        known = sorted(f"{k}/{t}" for k, t in RULES)
        raise DataError(f"{arg}: no suggestion for {prof.kind} data with task {prof.task}; "
                        f"suggest knows {', '.join(known)}")
    entries: list[Entry] = [(("name",), name or f"{_slug(prof.name)}-{_model_of(rule(prof))}",
                             "the run dir and the MLflow experiment are named after it"),
                            (("seed",), 0, "every split, initialization and batch order follows from it"),
                            (("task",), prof.task, _task_reason(prof))]
    entries += _data_entries(prof)
    entries += rule(prof)
    out = render(entries, header=_header(arg, prof))
    _check(out, arg)
    return out


# --------------------------------------------------------------------------- reading the data


def profile(arg: str, *, target: str | None = None, text: str | None = None, time: str | None = None) -> Profile:
    """Load the data ``arg`` names with methodo's own loaders and measure what the rules read."""
    from methodo.config import DataConfig
    from methodo.data.sources import load_dataset

    data, label = _data_section(arg, target=target, text=text, time=time)
    try:
        dcfg = DataConfig.model_validate(data)
    except Exception as exc:  # pydantic's message, on one line
        raise ConfigError(f"{arg}: cannot describe it as a data section ({' '.join(str(exc).split())[:200]})") from None
    ds = load_dataset(dcfg)
    from methodo.tasks import task_spec

    spec = task_spec(ds.task)
    counts: list[int] = []
    if spec.has_classes:
        counts = np.bincount(np.asarray(ds.y, dtype=np.int64), minlength=ds.n_classes).tolist()
    missing = 0.0
    if ds.kind == "tabular" and ds.X.size:
        missing = float(np.isnan(ds.X).mean()) if ds.X.dtype.kind == "f" else 0.0
    return Profile(data=data, name=label or ds.name, kind=ds.kind, task=ds.task, rows=len(ds.y),
                   input_shape=tuple(ds.X.shape[1:]), class_counts=counts,
                   categorical=len(ds.cat_names or []), missing=missing)


def _data_section(arg: str, *, target: str | None, text: str | None,
                  time: str | None = None) -> tuple[dict[str, Any], str | None]:
    from methodo.data.dataset import DATASETS

    p = Path(arg)
    if p.suffix.lower() in (".yaml", ".yml") and p.is_file():
        from methodo.config import load_config

        cfg = load_config(p)
        keep = {"source", "path", "target", "options", "sensitive"}
        return cfg.data.model_dump(exclude_defaults=True, include=keep), cfg.name
    if p.is_file():
        return _csv_section(p, target=target, text=text, time=time), p.stem
    if p.is_dir():
        return _folder_section(p), p.name
    import methodo.data.sources  # noqa: F401 (registers the loaders)

    entry = DATASETS.entry(arg) if arg in DATASETS else None
    if entry is None:
        named = [n for n in DATASETS.names() if DATASETS.entry(n).meta.get("needs") != "path"]
        raise ConfigError(f"{arg}: not a file, a folder or a dataset name; give a CSV file, an image or text "
                          f"folder (one subfolder per class), a config (.yaml), or one of {choices(named)}")
    if entry.meta.get("needs") == "path":
        raise ConfigError(f"{arg}: this source reads your files; give the file or folder itself "
                          f"(methodo suggest data.csv, methodo suggest images/)")
    return {"source": arg}, arg


def _csv_section(path: Path, *, target: str | None, text: str | None, time: str | None = None) -> dict[str, Any]:
    import pandas as pd

    try:
        df = pd.read_csv(path, nrows=20_000, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read it as a CSV ({' '.join(str(exc).split())[:160]})") from None
    cols = [str(c) for c in df.columns]
    if len(cols) < 2:
        raise DataError(f"{path}: {len(cols)} column(s); a table needs feature columns and a target column")
    for col, flag in ((time, "--time"), (text, "--text")):
        if col is not None and col not in cols:
            raise ConfigError(f"{flag} {col!r}: no such column in {path}; columns: {', '.join(map(repr, cols[:12]))}")
    time = time or _time_column(df, cols)
    if target is None:
        rest = [c for c in cols if c != time]
        target = next((c for c in rest if c.strip().lower() in TARGET_NAMES), rest[-1])
    elif target not in cols:
        raise ConfigError(f"--target {target!r}: no such column in {path}; columns: {', '.join(map(repr, cols[:12]))}")
    if time is not None and time != target and _numeric(df[target]):
        # a time column and a numeric target: a series to forecast (the course's trajectories and time series)
        n = len(df)
        period = _period(df[time])
        window = int(max(4, min(48, n // 20, 2 * period[0] if period else 48)))
        options = {"time": time, "window": window, "horizon": max(1, min(12, window // 4))}
        if period:
            options["period"] = period[0]
        return {"source": "series_csv", "path": str(path), "target": target, "options": options}
    text = text or _text_column(df, [c for c in cols if c != target])
    if text is not None:
        return {"source": "text_csv", "path": str(path), "target": target, "options": {"text": text}}
    sensitive = [c for c in cols if c != target
                 and SENSITIVE_WORDS & set("".join(ch if ch.isalnum() else " " for ch in c.lower()).split())]
    return {"source": "csv", "path": str(path), "target": target, **({"sensitive": sensitive} if sensitive else {})}


def _numeric(s) -> bool:
    import pandas as pd

    v = pd.to_numeric(s.replace("", None), errors="coerce")
    return bool(v.notna().mean() > 0.95) and v.nunique() > 20


def _time_column(df, cols: list[str]) -> str | None:
    """A column named like a time whose values are distinct and parse as dates or increasing numbers."""
    import pandas as pd

    for c in cols:
        if c.strip().lower() not in TIME_NAMES:
            continue
        s = df[c]
        if s.nunique() < len(s):  # repeated times: records of many things, not one series
            continue
        num = pd.to_numeric(s, errors="coerce")
        if num.notna().all() and num.is_monotonic_increasing:
            return c
        if _dates(s).notna().mean() > 0.95:
            return c
    return None


def _dates(s):
    import warnings

    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pd.to_datetime(s, errors="coerce")


# the seasonal period of a series by the step between its dates (pandas' frequency alias, first letters)
PERIODS = {"h": (24, "hourly: a day is 24 steps"), "D": (7, "daily: a week is 7 steps"),
           "B": (5, "business days: a week is 5 steps"), "W": (52, "weekly: a year is 52 steps"),
           "M": (12, "monthly: a year is 12 steps"), "Q": (4, "quarterly: a year is 4 steps")}


def _period(s) -> tuple[int, str] | None:
    import pandas as pd

    d = _dates(s).dropna().sort_values()
    if len(d) < 3 or pd.to_numeric(s, errors="coerce").notna().all():
        return None
    try:
        freq = pd.infer_freq(d.iloc[:1000])
    except (TypeError, ValueError):
        return None
    if not freq:
        return None
    f = freq.upper()
    if f.startswith("MIN"):  # minutes, not months
        return None
    for k, v in PERIODS.items():
        if f.startswith(k.upper()):
            return v
    return None


def _text_column(df, cols: list[str]) -> str | None:
    """The one column that holds prose (several words per cell, mostly distinct cells), when the other columns
    are few: a text dataset rather than a table with a free-text field."""
    prose = []
    for c in cols:
        s = df[c].astype(str)
        if len(s) and s.str.split().str.len().median() >= 4 and s.nunique() > 0.5 * len(s):
            prose.append(c)
    return prose[0] if len(prose) == 1 and len(cols) <= 2 else None


def _folder_section(root: Path) -> dict[str, Any]:
    subs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith((".", "__"))]
    if not subs:
        raise DataError(f"{root}: no class subfolders (an image or text folder holds one subfolder per class)")
    suffixes: dict[str, int] = {}
    for d in subs:
        for f in d.rglob("*"):
            if f.is_file():
                suffixes[f.suffix.lower()] = suffixes.get(f.suffix.lower(), 0) + 1
    images = sum(n for s, n in suffixes.items() if s in IMAGE_SUFFIXES)
    texts = suffixes.get(".txt", 0)
    if images >= texts and images:
        return {"source": "imagefolder", "path": str(root)}
    if texts:
        return {"source": "textfolder", "path": str(root)}
    raise DataError(f"{root}: its class subfolders hold neither images ({', '.join(IMAGE_SUFFIXES)}) nor .txt files")


# --------------------------------------------------------------------------- the course's table


def _task_reason(p: Profile) -> str:
    if p.task in ("classification", "graph_classification"):
        return f"{len(p.class_counts)} classes, one per {'graph' if p.kind == 'graph' else 'row'}"
    if p.task == "regression":
        return "the target is a number"
    if p.task == "multilabel":
        return "several yes/no labels per row"
    if p.task == "segmentation":
        return "one class per pixel"
    if p.task == "language_modeling":
        return "predict each next token of the text"
    if p.task == "forecasting":
        return "predict the next values of the series from its past"
    return f"the task of {p.name}"


def _data_entries(p: Profile) -> list[Entry]:
    d: list[Entry] = []
    shape = ("texts" if p.kind == "text" and p.task == "classification"
             else f"{p.features} features" if p.kind == "tabular" else f"input {'×'.join(map(str, p.input_shape))}")
    for k in ("source", "path", "target", "sensitive"):
        if k in p.data:
            why = {"source": f"{p.rows} rows, {p.kind}, {shape}",
                   "path": "relative to the working directory methodo runs in",
                   "target": "the column to predict",
                   "sensitive": "who the errors fall on: per-group metrics and disparities, and these columns are "
                                "kept out of the features"}[k]
            d.append((("data", k), p.data[k], why))
    if p.data.get("options"):
        why = ("the time column, the past steps the model reads (window) and the steps it predicts (horizon)"
               if p.task == "forecasting" else "the loader's options")
        d.append((("data", "options"), p.data["options"], why))
    if p.task == "forecasting":
        d.append((("data", "split"), {"method": "time", "val": 0.15, "test": 0.15},
                  "in time order: train on the past, validate and test on the latest windows (a random split "
                  "would leak the future)"))
    elif p.task == "language_modeling":
        d.append((("data", "split"), {"method": "random", "val": 0.1, "test": 0.1},
                  "the loader keeps each document whole in one split; 10% each is plenty of tokens"))
    elif p.class_counts and p.task in ("classification", "graph_classification", "multilabel", "segmentation"):
        small = min(c for c in p.class_counts if c > 0) if p.class_counts else 0
        d.append((("data", "split"), {"method": "stratified", "val": 0.15, "test": 0.15},
                  f"stratified: every split keeps the class shares (smallest class: {small} rows)"))
    elif p.task == "regression":
        d.append((("data", "split"), {"method": "random", "val": 0.15, "test": 0.3},
                  "random; a larger test split narrows the interval of the error"))
    else:
        d.append((("data", "split"), {"method": "stratified", "val": 0.15, "test": 0.15},
                  "70/15/15: train, early stopping and model choice, one final measure"))
    imb = p.imbalance
    if imb is not None and imb < IMBALANCED and p.task == "classification":
        if p.kind == "tabular" and not p.categorical and p.missing == 0:
            d.append((("data", "balance"), "smote", f"smallest class is {imb:.0%} of the largest: SMOTE synthesizes "
                      "minority rows between neighbours, on the training split only"))
        else:
            d.append((("data", "balance"), "class_weights", f"smallest class is {imb:.0%} of the largest: weight the "
                      "loss by class (SMOTE needs numeric features)"))
    if p.kind == "tabular" and p.missing > 0:
        d.append((("data", "scale"), "standard", f"{p.missing:.1%} of the values are missing: methodo imputes "
                  "them (train medians) and flags them in the audit; scaling fitted on train only"))
    return d


def _epochs(rows: int) -> int:
    """More passes over small data, fewer over large: about 50k-200k samples seen, between 10 and 100 epochs."""
    return int(min(100, max(10, round(100_000 / max(rows * 0.7, 1), -1))))


def _batch(rows: int) -> int:
    return 32 if rows < 2_000 else 64 if rows < 20_000 else 256


def _stop(p: Profile, epochs: int, monitor: str = "val_loss") -> Entry:
    patience = max(3, epochs // 6)
    return (("train", "early_stopping"), {"monitor": monitor, "patience": patience},
            f"stop when {monitor} has not improved for {patience} epochs; the best epoch's weights are kept")


def _metrics(p: Profile) -> list[Entry]:
    imb = p.imbalance
    if p.task == "classification" and imb is not None and imb < IMBALANCED:
        return [(("evaluate", "metrics"), ["balanced_accuracy", "f1", "recall", "precision", "average_precision",
                                            "accuracy"],
                 "imbalanced: accuracy alone flatters the majority class; balanced accuracy, F1 and PR-AUC do not")]
    return []


def tabular(p: Profile) -> list[Entry]:
    f = max(p.features, 1)
    w = int(min(256, max(32, 2 ** math.ceil(math.log2(max(2 * f, 2))))))
    ep = _epochs(p.rows)
    out: list[Entry] = [
        (("model", "name"), "mlp", f"a table of {f} features: the course's table says MLP (fully connected layers)"),
        (("model", "hidden"), [w, w // 2], f"two layers, the first about 2× the {f} inputs (rounded to a power of 2)"),
        (("model", "dropout"), 0.2 if p.rows < 5_000 else 0.1,
         f"{p.rows} rows: {'more' if p.rows < 5_000 else 'less'} dropout against overfitting"),
        (("train", "epochs"), ep, "an upper bound: early stopping ends the run"),
        (("train", "batch_size"), _batch(p.rows), "small batches for small data: more, noisier steps"),
        (("train", "optimizer"), {"name": "adamw", "lr": 0.001, "weight_decay": 0.01},
         "AdamW at 1e-3 is the robust default for MLPs; decoupled weight decay as L2"),
        (("train", "scheduler"), {"name": "cosine"}, "cosine decay to the end of the epochs"),
        _stop(p, ep),
    ]
    return out + _metrics(p)


def image(p: Profile) -> list[Entry]:
    c, h, w = (p.input_shape + (1, 1, 1))[:3]
    small = max(h, w) <= 64
    ep = min(40, _epochs(p.rows))
    out: list[Entry] = [
        (("model", "name"), "cnn" if small else "resnet",
         f"{c}×{h}×{w} images: convolutions share weights across positions "
         + ("(a small CNN suits small images)" if small else "(residual blocks train deeper nets on larger images)")),
        (("model", "width"), 32, "32 channels in the first stage, doubled per stage"),
        (("train", "epochs"), ep, "an upper bound: early stopping ends the run"),
        (("train", "batch_size"), _batch(p.rows), "batch size by dataset size"),
        (("train", "optimizer"), {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005},
         "SGD with momentum 0.9 and weight decay, the convnets' classic"),
        (("train", "scheduler"), {"name": "onecycle"}, "one cycle: warm up, then anneal (the course: one cycle is enough)"),
        _stop(p, ep),
    ]
    if min(h, w) >= 16:
        aug = [{"random_resized_crop": {"scale": [0.8, 1.0]}}, {"rotation": {"degrees": 10}}]
        why = "crops and small rotations on the training split only: more images of the same classes"
        if c == 3:
            aug.insert(0, "flip")
            why = "mirror, crops and small rotations on the training split only (natural images are mirror-invariant)"
        out.append((("data", "augment"), aug, why))
    if p.task == "classification" and p.imbalance is not None and p.imbalance < IMBALANCED:
        out += _metrics(p)
    return out


def segmentation(p: Profile) -> list[Entry]:
    c, h, w = (p.input_shape + (1, 1, 1))[:3]
    levels = max(1, min(3, int(math.log2(max(min(h, w), 2))) - 2))
    return [
        (("model", "name"), "unet", "one class per pixel: a U-Net (encoder, decoder, skip connections keep the detail)"),
        (("model", "width"), 16, "16 channels at the first level"),
        (("model", "levels"), levels, f"{levels} down-samplings for {h}×{w} images"),
        (("train", "epochs"), 15, "an upper bound: early stopping ends the run"),
        (("train", "batch_size"), 32, "32 images per step"),
        (("train", "optimizer"), {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001}, "AdamW for the U-Net"),
        (("train", "scheduler"), {"name": "onecycle"}, "one cycle"),
        _stop(p, 15),
    ]


def text_classes(p: Profile) -> list[Entry]:
    return [
        (("model", "name"), "hf:sentence-transformers/all-MiniLM-L6-v2",
         f"text, {p.rows} labeled rows: reuse a pretrained transformer (MiniLM, shipped by a package) rather than "
         "learn a language from these rows"),
        (("model", "max_length"), 64, "tokens kept per text"),
        (("transfer", "strategy"), "linear_probe",
         "few labels: freeze the backbone and train a linear head on its features (cached)"),
        (("train", "epochs"), 10, "a linear head converges in a few epochs"),
        (("train", "batch_size"), 32, "32 texts per step"),
        (("train", "optimizer"), {"name": "adamw", "lr": 0.02}, "a linear head takes a large LR"),
        (("explain", "enabled"), False, "token attributions through a transformer are slow on CPU"),
    ]


def tokens(p: Profile) -> list[Entry]:
    return [
        (("model", "name"), "gru", "a sequence of tokens: the recurrent update Y_t = f(W_x X_t + W_y Y_(t-1) + b)"),
        (("model", "embed"), 64, "64-dimensional token embeddings"),
        (("model", "hidden"), 256, "256 recurrent units"),
        (("train", "epochs"), 4, "language models see many tokens per epoch"),
        (("train", "batch_size"), 64, "64 windows per step"),
        (("train", "optimizer"), {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001}, "AdamW"),
        (("train", "scheduler"), {"name": "onecycle"}, "one cycle"),
        _stop(p, 4, "val_perplexity"),
        (("train", "eval_batch_size"), 256, "evaluation batches"),
    ]


def series(p: Profile) -> list[Entry]:
    window = p.input_shape[0] if p.input_shape else 0
    ep = min(60, _epochs(p.rows))
    return [
        (("model", "name"), "recurrent", f"a series: windows of {window} past steps read one step at a time by the "
         "recurrent update Y_t = f(W_x X_t + W_y Y_(t-1) + b)"),
        (("model", "cell"), "lstm", "LSTM gates keep what matters over long windows"),
        (("model", "hidden"), 32, "32 units: small data, few parameters"),
        (("train", "epochs"), ep, "an upper bound: early stopping ends the run"),
        (("train", "batch_size"), 32, "32 windows per step"),
        (("train", "optimizer"), {"name": "adam", "lr": 0.005}, "Adam"),
        _stop(p, ep),
    ]


def graphs(p: Profile) -> list[Entry]:
    ep = min(60, _epochs(p.rows))
    return [
        (("model", "name"), "gin", "graphs (molecules, social networks): message passing; GIN's sum over neighbours "
         "tells structures apart that GCN's normalized mean cannot (as discriminative as the 1-WL test)"),
        (("train", "epochs"), ep, "an upper bound: early stopping ends the run"),
        (("train", "batch_size"), 32, "32 graphs per step"),
        (("train", "optimizer"), {"name": "adam", "lr": 0.003}, "Adam"),
        _stop(p, ep),
    ]


def _multilabel(p: Profile) -> list[Entry]:
    out = image(p) if p.kind == "image" else tabular(p)
    return [e for e in out if e[0] != ("evaluate", "metrics")]


RULES: dict[tuple[str, str], Callable[[Profile], list[Entry]]] = {
    ("tabular", "classification"): tabular,
    ("tabular", "regression"): tabular,
    ("tabular", "multilabel"): _multilabel,
    ("image", "classification"): image,
    ("image", "multilabel"): _multilabel,
    ("image", "segmentation"): segmentation,
    ("text", "classification"): text_classes,
    ("text", "language_modeling"): tokens,
    ("series", "forecasting"): series,
    ("graph", "graph_classification"): graphs,
}


def _model_of(entries: list[Entry]) -> str:
    name = next(v for k, v, _ in entries if k == ("model", "name"))
    return str(name).rsplit("/", 1)[-1].split(":")[-1].lower()


def _slug(s: str) -> str:
    out = "".join(ch if ch.isalnum() else "-" for ch in s.lower()).strip("-")
    return "-".join(filter(None, out.split("-"))) or "data"


# --------------------------------------------------------------------------- YAML with a reason per key


def _header(arg: str, p: Profile) -> list[str]:
    lines = [f"# methodo suggest {arg}: {p.rows} rows of {p.kind} data, task {p.task}."]
    if p.class_counts:
        lines.append(f"# class counts: {p.class_counts}" if len(p.class_counts) <= 12
                     else f"# {len(p.class_counts)} classes, {min(p.class_counts)}-{max(p.class_counts)} rows each")
    lines.append("# Every choice says why beside it; `methodo run` on this file trains, evaluates and diagnoses.")
    return lines


def _flow(v: Any) -> str:
    import yaml

    return yaml.safe_dump(v, default_flow_style=True, sort_keys=False, width=10_000).strip().removesuffix("\n...")


def render(entries: list[Entry], header: list[str] = ()) -> str:
    """YAML text of ``entries`` (in order, nested by key path), each leaf followed by ``# reason``."""
    order: list[str] = []
    tree: dict[str, list[Entry]] = {}
    for k, v, why in entries:
        top = k[0]
        if top not in tree:
            order.append(top)
            tree[top] = []
        tree[top].append((k[1:], v, why))
    lines = list(header)
    for top in order:
        items = tree[top]
        if len(items) == 1 and not items[0][0]:
            _, v, why = items[0]
            lines.append(_line(f"{top}: {_flow(v)}", why))
            continue
        lines.append(f"{top}:")
        for sub, v, why in items:
            k = (top, *sub)
            assert len(sub) == 1, k  # two levels: section and key; deeper values are flow mappings
            lines.append(_line(f"  {sub[0]}: {_flow(v)}", why))
    return "\n".join(lines) + "\n"


def _line(code: str, why: str) -> str:
    return f"{code:<44}  # {why}" if why else code


def _check(text: str, arg: str) -> None:
    import yaml

    from methodo.config import validate

    try:
        validate(yaml.safe_load(text), source=f"suggestion for {arg}")
    except ConfigError as exc:  # a bug of a rule, not the user's input
        raise RuntimeError(f"methodo suggest built an invalid config for {arg}: {exc}") from None
