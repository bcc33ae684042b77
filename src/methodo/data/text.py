"""``python_docs``: a real English corpus that ships with CPython, for character-level language models.

In-domain text: ``pydoc_data.topics`` — the 79 reference topics of the Python documentation
(statements, data model, string methods, ...) that ``help()`` shows, about 465,000 characters,
part of the standard library of every CPython install. Out-of-domain text: the 14 dataset
descriptions (``sklearn/datasets/descr/*.rst``, about 43,000 characters) that scikit-learn ships —
English prose too, about statistics and data collection, with reStructuredText tables.

Tokens are characters from a fixed vocabulary (newline, the 95 printable ASCII characters and
``<unk>`` for anything else; tabs become 4 spaces). The vocabulary is fixed, not counted from the
corpus, so nothing is fitted on held-out text. Each topic is cut into non-overlapping windows of
``seq_len`` inputs and the ``seq_len`` next characters as targets; rows keep their topic in
``groups`` so the split holds out whole topics.

Examples
--------
>>> from methodo.data.text import VOCAB, encode, decode
>>> ids = encode("print(1)\\tx\\u00e9")
>>> decode(ids)
'print(1)    x<unk>'
>>> len(VOCAB)
97
"""

from __future__ import annotations

import numpy as np

from methodo.data.dataset import DATASETS, Dataset
from methodo.errors import DataError

VOCAB = ["\n"] + [chr(i) for i in range(32, 127)] + ["<unk>"]
UNK = len(VOCAB) - 1
_INDEX = {c: i for i, c in enumerate(VOCAB[:-1])}


def encode(text: str) -> np.ndarray:
    """Character ids (int64); tabs become 4 spaces, characters outside the vocabulary ``<unk>``."""
    return np.fromiter((_INDEX.get(c, UNK) for c in text.expandtabs(4)), dtype=np.int64)


def decode(ids) -> str:
    return "".join(VOCAB[int(i)] for i in ids)


def python_doc_topics() -> dict[str, str]:
    """The Python documentation topics that ship with CPython (``pydoc_data.topics``)."""
    from pydoc_data.topics import topics

    return {k: topics[k] for k in sorted(topics)}


def sklearn_dataset_descriptions() -> dict[str, str]:
    """The dataset descriptions scikit-learn ships (``sklearn/datasets/descr/*.rst``)."""
    from importlib import resources

    files = sorted((f for f in resources.files("sklearn.datasets.descr").iterdir() if f.name.endswith(".rst")),
                   key=lambda f: f.name)
    return {f.name: f.read_text(encoding="utf-8") for f in files}


def windows(ids: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping ``(inputs, next-token targets)`` windows; a tail shorter than a window is dropped."""
    n = (len(ids) - 1) // seq_len
    if n <= 0:
        return np.empty((0, seq_len), np.int64), np.empty((0, seq_len), np.int64)
    x = ids[: n * seq_len].reshape(n, seq_len)
    y = ids[1: n * seq_len + 1].reshape(n, seq_len)
    return x, y


def _cut(docs: dict[str, str], seq_len: int, max_chars: int | None):
    xs, ys, groups, used = [], [], [], 0
    for g, text in enumerate(docs.values()):
        if max_chars is not None and used >= max_chars:
            break
        x, y = windows(encode(text), seq_len)
        xs.append(x)
        ys.append(y)
        groups.append(np.full(len(x), g, dtype=np.int64))
        used += len(text)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(groups), used


@DATASETS.register("python_docs", help="real text: the Python documentation topics shipped with CPython "
                   "(in-domain) and scikit-learn's dataset descriptions (out-of-domain); characters",
                   task="language_modeling", kind="text")
def load_python_docs(data_cfg, *, audit: bool = False, seq_len: int = 128, max_chars: int | None = None) -> Dataset:
    """Options (``data.options``): ``seq_len`` characters per training window; ``max_chars`` to
    keep only the first topics (alphabetically) up to about that many characters (small tests),
    the out-of-domain text being cut to the same share."""
    if seq_len < 2 or (max_chars is not None and max_chars < seq_len * 20):
        raise DataError(f"data.options: python_docs needs seq_len >= 2 and max_chars >= 20 × seq_len "
                        f"(got seq_len={seq_len}, max_chars={max_chars})")
    topics = python_doc_topics()
    X, y, groups, used = _cut(topics, seq_len, max_chars)
    ood_docs = sklearn_dataset_descriptions()
    ood_chars = sum(map(len, ood_docs.values()))
    ood_limit = None if max_chars is None else max(seq_len * 4, int(ood_chars * used / sum(map(len, topics.values()))))
    Xo, yo, _, ood_used = _cut(ood_docs, seq_len, ood_limit)
    if len(np.unique(groups)) < 3:
        raise DataError(f"data.options.max_chars={max_chars}: fewer than 3 topics to split; raise it")
    return Dataset(
        "python_docs", "language_modeling", "text", X, y, [], None,
        f"Python documentation topics (CPython's pydoc_data.topics): {len(np.unique(groups))} topics, "
        f"{used:,} characters, {len(X)} windows of {seq_len} characters",
        groups=groups, extra={"ood": (Xo, yo)}, vocab=list(VOCAB),
        extra_descriptions={"ood": f"scikit-learn dataset descriptions (sklearn/datasets/descr/*.rst): "
                                   f"{ood_used:,} characters, {len(Xo)} windows"})


# --------------------------------------------------------------------------- labeled text (classification)


def _labels(values, where: str):
    """Class indices and names from label strings (sorted names)."""
    classes, y = np.unique(np.asarray(values, dtype=str), return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{where}: only one label ({classes[0]!r} if any): classification needs at least 2 classes")
    return y.astype(np.int64), [str(c) for c in classes]


@DATASETS.register("text_csv", help="labeled text: a CSV file (data.path) with a text column (data.options.text, "
                   "default 'text') and a label column (data.target); tokenized by the hf: model's tokenizer",
                   task="classification", kind="text", needs="path")
def load_text_csv(data_cfg, *, audit: bool = False, text: str = "text") -> Dataset:
    """Read a CSV of texts and labels (every cell as text). ``X`` holds the raw strings ``(n, 1)``; the
    pipeline tokenizes them with the model's own tokenizer (``model.max_length`` tokens)."""
    import pandas as pd
    from pathlib import Path

    path = Path(data_cfg.path)
    if not path.is_file():
        raise DataError(f"{path}: CSV file not found (data.path)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the CSV ({' '.join(str(exc).split())[:160]})") from None
    for col, key in ((text, "data.options.text"), (data_cfg.target, "data.target")):
        if col not in df.columns:
            raise DataError(f"{path}: no column {col!r} ({key}); columns: {', '.join(map(repr, df.columns[:10]))}")
    labels = df[data_cfg.target].str.strip()
    bad = np.flatnonzero(labels.to_numpy() == "")
    problems = [{"id": "bad_label", "row": int(r) + 2, "value": "", "reason": "missing label"} for r in bad]
    if len(bad) and not audit:
        raise DataError(f"{path} row {int(bad[0]) + 2}: missing label in column {data_cfg.target!r} "
                        f"({len(bad)} rows in all); fill or drop them")
    keep = labels.to_numpy() != ""
    y, names = _labels(labels.to_numpy()[keep], str(path))
    X = df[text].to_numpy(dtype=object)[keep].reshape(-1, 1)
    rows = (np.arange(len(df)) + 2)[keep]
    return Dataset(path.stem, "classification", "text", X, y, [text], names,
                   f"text CSV {path.name}: {len(y)} texts, {len(names)} labels", meta={"row": rows},
                   problems=problems)


@DATASETS.register("textfolder", help="labeled text: a folder (data.path) with one subfolder of .txt files per "
                   "class; tokenized by the hf: model's tokenizer", task="classification", kind="text", needs="path")
def load_textfolder(data_cfg, *, audit: bool = False, suffix: str = ".txt") -> Dataset:
    """One text per file, the class its subfolder's name (dot-prefixed folders are not classes)."""
    from pathlib import Path

    root = Path(data_cfg.path)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (data.path)")
    texts, labels, paths = [], [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))):
        for f in sorted(sub.rglob(f"*{suffix}")):
            try:
                texts.append(f.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(f"{f}: not readable as UTF-8 text ({exc})") from None
            labels.append(sub.name)
            paths.append(str(f))
    if not texts:
        raise DataError(f"{root}: no {suffix} files in class subfolders (data.path holds one folder per class)")
    y, names = _labels(labels, str(root))
    return Dataset(root.name, "classification", "text", np.asarray(texts, dtype=object).reshape(-1, 1), y, ["text"],
                   names, f"text folder {root.name}: {len(y)} files, {len(names)} classes",
                   meta={"path": np.asarray(paths, dtype=object)})
