"""Label issues: rows whose given label looks wrong, found by confident learning (cleanlab).

Confident learning (Northcutt et al., 2021) compares each row's given label with the model's
*out-of-sample* probabilities: per class it estimates how confident the model is on rows of that
class, counts the rows confidently assigned to another class (the confident joint), and flags as
many of the least likely rows as that count says are mislabeled. cleanlab implements it
(:func:`cleanlab.filter.find_label_issues`, its default ``prune_by_noise_rate``, and
:func:`cleanlab.rank.get_label_quality_scores` to rank them); this module only feeds it and
writes the result. Multi-label rows go through :mod:`cleanlab.multilabel_classification`.

The probabilities must come from a model that never trained on the row:

- inside a run (``evaluate.label_issues: val_test``, the default), the validation and test rows,
  with the run's own model: cheap, but it sees only those rows;
- :func:`cross_fit` (``evaluate.label_issues: cross_val`` and ``methodo data label-issues``): K
  models of the configured kind, each trained on K-1 folds (``methodo.train.loop.fit``, the data
  stage's k-fold split) and predicting the fold it never saw, so every row gets an out-of-sample
  probability, as cleanlab recommends.

Examples
--------
>>> import numpy as np
>>> from methodo.evaluate.label_issues import find_label_issues
>>> y = np.array([0, 1, 2] * 20)
>>> p = np.full((60, 3), 0.02); p[np.arange(60), y] = 0.96
>>> y[7] = 0                         # row 7 is a 1 labeled 0
>>> issues = find_label_issues(p, y, class_names=["a", "b", "c"])
>>> [(r["row"], r["given"], r["suggested"]) for r in issues.rows]
[(7, 'a', 'b')]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from methodo.errors import BadInput

COLUMNS = ["row", "split", "given", "suggested", "p_given", "p_suggested", "label_quality", "rank"]
TOP = 5  # suspects shown in the finding's evidence (all of them are in label_issues.csv)
MIN_ROWS = 10  # fewer out-of-sample rows than this: no search


@dataclass
class LabelIssues:
    """The suspects, most suspect first: one dict per row with the keys of :data:`COLUMNS`.

    ``n`` is how many rows were searched, ``method`` where their probabilities came from
    (``val_test`` or ``cross_val``), ``folds`` the K of the cross-fitting (else None). ``searched`` keeps
    what the search read, ``(proba, rows, splits)`` (float64 scores, row ids, split names or None), which a
    run writes to ``label_scores.csv`` (:func:`scores_columns`) so ``methodo diagnose`` can search again.
    """

    rows: list[dict] = field(default_factory=list)
    n: int = 0
    method: str = "val_test"
    folds: int | None = None
    searched: tuple | None = field(default=None, repr=False, compare=False)

    @property
    def count(self) -> int:
        return len(self.rows)

    def csv_rows(self):
        return ([r[c] for c in COLUMNS] for r in self.rows)


def find_label_issues(proba: np.ndarray, labels: np.ndarray, *, rows: np.ndarray | None = None,
                      splits: np.ndarray | None = None, class_names: list[str] | None = None,
                      multilabel: bool = False, method: str = "val_test", folds: int | None = None) -> LabelIssues:
    """Confident learning over out-of-sample probabilities ``proba`` and the given ``labels``.

    ``proba`` is ``(N, C)``: class probabilities (single-label), or per-label probabilities with
    ``labels`` a 0/1 ``(N, C)`` array (``multilabel``). ``rows`` names each row (dataset row ids;
    default 0..N-1) and ``splits`` the split it belongs to. Returns every suspect, ranked by
    cleanlab's label-quality score (normalized margin for single-label, its multi-label
    aggregate otherwise; lower is more suspect).

    Columns: ``given`` / ``suggested`` labels (for multi-label, the labels present joined by ``|``;
    the suggestion is the labels the model gives p ≥ 0.5, for single-label its most likely class
    other than the given one), ``p_given`` / ``p_suggested`` their probabilities under the model
    (multi-label: the product over labels, labels taken as independent), ``label_quality``, ``rank``.
    """
    proba = np.asarray(proba, dtype=np.float64)
    labels = np.asarray(labels)
    n, c = proba.shape
    rows = np.arange(n) if rows is None else np.asarray(rows)
    names = class_names or [str(k) for k in range(c)]
    out = LabelIssues(n=n, method=method, folds=folds, searched=(proba, rows, splits))
    if n < MIN_ROWS:
        return out
    issues, quality, given, suggested, p_given, p_suggested = (
        _multilabel(proba, labels, names) if multilabel else _multiclass(proba, labels, names))
    if not len(issues):
        return out
    order = issues[np.argsort(quality[issues], kind="stable")]
    for rank, i in enumerate(order, 1):
        out.rows.append({"row": int(rows[i]), "split": "" if splits is None else str(splits[i]),
                         "given": given[i], "suggested": suggested[i], "p_given": round(float(p_given[i]), 6),
                         "p_suggested": round(float(p_suggested[i]), 6),
                         "label_quality": round(float(quality[i]), 6), "rank": rank})
    return out


def scores_header(names: list[str]) -> list[str]:
    """The columns of ``label_scores.csv``: row id, split, then one score per class (or label)."""
    return ["row", "split", *[f"p_{c}" for c in names]]


def scores_columns(issues: LabelIssues) -> list:
    """``label_scores.csv``'s columns (:mod:`methodo.csvtext`) from what the search read (``issues.searched``):
    each searched row in search order, its split and its scores as float64 in the shortest text that reads
    back to the same float (Arrow's formatting), so a search over the file gives the same suspects to the bit."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from methodo import csvtext

    proba, rows, splits = issues.searched
    names, codes = (np.array([""]), np.zeros(len(rows), np.int64)) if splits is None else \
        np.unique(np.asarray(splits).astype(str), return_inverse=True)
    return [csvtext.integers(rows), csvtext.labels(codes, [str(n) for n in names]),
            *[pc.cast(pa.array(np.ascontiguousarray(proba[:, k], dtype=np.float64)), pa.string())
              for k in range(proba.shape[1])]]


def _multiclass(p: np.ndarray, y: np.ndarray, names: list[str]):
    from cleanlab.filter import find_label_issues as cl_find
    from cleanlab.rank import get_label_quality_scores

    y = y.astype(np.int64)
    c = p.shape[1]
    present = np.bincount(y, minlength=c) > 0
    if present.sum() < 2:  # one class: nothing to confuse it with
        return np.array([], dtype=np.int64), *([None] * 5)
    # cleanlab wants every class present in the labels: search over the classes seen (rows renormalized)
    keep = np.flatnonzero(present)
    remap = -np.ones(c, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    yy = remap[y]
    q = _renormalized(p, keep)
    mask = cl_find(yy, q, filter_by="prune_by_noise_rate", n_jobs=1)
    quality = get_label_quality_scores(yy, q, method="normalized_margin")
    del q
    issues = np.flatnonzero(mask)
    # the suggestion (the most likely class other than the given one) for the suspects only: no copy of p
    sug = np.full(len(y), -1, dtype=np.int64)
    other = p[issues].copy()
    other[np.arange(len(issues)), y[issues]] = -1.0
    sug[issues] = other.argmax(1)
    p_sug = np.full(len(y), np.nan)
    p_sug[issues] = p[issues, sug[issues]]
    return issues, quality, _Names(y, names), _Names(sug, names), p[np.arange(len(y)), y], p_sug


class _Names:
    """``names[codes[i]]`` on demand (the label names of the rows that are read, not of every row)."""

    def __init__(self, codes: np.ndarray, names: list[str]):
        self.codes, self.names = codes, names

    def __getitem__(self, i: int) -> str:
        return self.names[self.codes[i]]


def _renormalized(p: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``p`` on the classes ``keep``, each row summing to 1 again."""
    q = p[:, keep]
    return q / np.clip(q.sum(1, keepdims=True), 1e-12, None)


def _multilabel(p: np.ndarray, y: np.ndarray, names: list[str]):
    from cleanlab.multilabel_classification.filter import find_label_issues as cl_find
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    bits = (np.asarray(y) >= 0.5)
    # cleanlab needs both values of every label among the rows: search over the labels that vary
    varies = bits.any(0) & ~bits.all(0)
    if not varies.any():
        return np.array([], dtype=np.int64), *([None] * 5)
    cols = np.flatnonzero(varies)
    sub = [list(np.flatnonzero(b[cols])) for b in bits]
    mask = cl_find(sub, p[:, cols], n_jobs=1)
    quality = get_label_quality_scores(sub, p[:, cols])
    decided = p >= 0.5
    joined = lambda b: "|".join(n for n, v in zip(names, b) if v)  # noqa: E731
    eps = 1e-12
    p_given = np.exp(np.where(bits, np.log(p + eps), np.log(1 - p + eps)).sum(1))
    p_sugg = np.exp(np.where(decided, np.log(p + eps), np.log(1 - p + eps)).sum(1))
    return (np.flatnonzero(mask), quality, [joined(b) for b in bits], [joined(b) for b in decided],
            p_given, p_sugg)


# --------------------------------------------------------------------------- cross-fitting


def check_folds(folds, n_rows: int, *, flag: str = "--folds") -> int:
    """``folds`` must be an integer in [2, rows]: one-line errors naming ``flag`` (an option or a config key)."""
    said = f"{flag} {folds}" if flag.startswith("-") else f"{flag}={folds}"
    if isinstance(folds, bool) or not isinstance(folds, int):
        raise BadInput(f"{said}: give an integer from 2 to the number of rows ({n_rows})")
    if folds < 2:
        raise BadInput(f"{said}: cross-fitting needs at least 2 folds (each row is predicted by a model trained "
                       f"on the others); use 2 to {n_rows}, 5 is usual")
    if folds > n_rows:
        raise BadInput(f"{said}: more folds than the {n_rows} rows; use 2 to {n_rows}, 5 is usual")
    return folds


def cross_fit(cfg, ds, *, folds: int, flag: str = "--folds", progress: bool = False) -> np.ndarray:
    """Out-of-sample scores of every row of ``ds`` by K-fold cross-fitting of the configured model.

    Fold *i* of the data stage's k-fold split (:func:`methodo.data.split.kfold_split`: stratified
    by class) is predicted by a model built from ``cfg.model`` and trained with ``cfg.train``
    (:func:`methodo.train.loop.fit`) on the other folds, minus a validation part carved from them
    (``data.split.val``) for early stopping and model selection; scaling, feature steps and
    balancing are fitted on that fold's training rows only (:func:`methodo.data.preprocess.prepare`).
    ``cfg.train.optimizer.lr`` must be a number (resolve ``auto`` first). Returns ``(N, C)`` scores
    in the dataset's row order. The global RNG states are restored after.
    """
    import random

    import torch

    from methodo.data.preprocess import prepare as prepare_data
    from methodo.data.split import split_indices
    from methodo.errors import DataError
    from methodo.evaluate import predict
    from methodo.models import build_model
    from methodo.seed import seed_everything
    from methodo.train.loop import fit

    n = len(ds.y)
    check_folds(folds, n, flag=flag)
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    parts = []
    try:
        for i in range(1, folds + 1):  # bad folds (a class smaller than K) fail here, before any training
            parts.append(split_indices(ds.y, method="kfold", val=cfg.data.split.val, test=0.0, seed=cfg.seed,
                                       task=ds.task, folds=folds, fold=i))
    except DataError as exc:
        said = f"{flag} {folds}" if flag.startswith("-") else f"{flag}={folds}"
        raise BadInput(f"{said}: {str(exc).split(': ', 1)[-1]}") from None
    out = None
    try:
        for i, idx in enumerate(parts, 1):
            if progress:
                import sys

                print(f"cross-fitting: fold {i}/{folds} ({len(idx['test'])} rows held out)", file=sys.stderr,
                      flush=True)
            seed_everything(cfg.seed + i)
            data = prepare_data(ds, cfg.data, cfg.seed, indices=idx)
            model = build_model(cfg.model.name, input_shape=data.input_shape, n_outputs=data.n_outputs,
                                kind=ds.kind, task=ds.task, **cfg.model.options)
            tcfg = cfg.train.model_copy(update={"progress": False})
            fit(model, data, tcfg, seed=cfg.seed + i, class_weights=data.class_weights)
            p = predict(model, data.inputs("test"), task=ds.task, batch_size=cfg.train.eval_batch_size,
                        inverse_y=data.preprocessor.inverse_y)
            if out is None:
                out = np.zeros((n, *p.shape[1:]), dtype=np.float64)
            out[idx["test"]] = p
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])
    return out


# --------------------------------------------------------------------------- cleaned copy of a CSV


FIXES = ("drop", "relabel")


def fix_csv(path, target: str, issues: LabelIssues, fix: str, out) -> int:
    """Write a copy of the CSV ``path`` without the suspect rows (``drop``) or with their ``target``
    replaced by the suggested label (``relabel``). Every other cell is written as read (text). ``out``
    must not exist (it is created exclusively). Returns the number of rows dropped or relabeled.

    Row ids are dataset rows: a CSV loaded without dropping any row (``methodo run`` refuses bad
    rows), so dataset row *r* is the file's data row *r*.
    """
    import pandas as pd

    if fix not in FIXES:
        raise BadInput(f"--fix {fix}: choose one of {', '.join(FIXES)}")
    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    ids = np.array([r["row"] for r in issues.rows], dtype=np.int64)
    if len(ids) and ids.max() >= len(df):
        raise BadInput(f"{path}: has {len(df)} rows, fewer than the dataset it was loaded as; was it changed?")
    if fix == "drop":
        df = df.drop(index=df.index[ids])
    else:
        col = df.columns.get_loc(target)
        for r in issues.rows:
            df.iat[r["row"], col] = r["suggested"]
    write_new_csv(out, list(df.columns), df.itertuples(index=False, name=None))
    return len(ids)


# --------------------------------------------------------------------------- `methodo data label-issues`


def _new_file(path, flag: str):
    """A path methodo may create: it does not exist yet (never written over), in a folder that does."""
    from pathlib import Path

    p = Path(path)
    if str(path) == "":
        raise BadInput(f"{flag} '': give a file name")
    if p.exists() or p.is_symlink():
        raise BadInput(f"{flag} {path}: exists; methodo never writes over your files: choose a new name or remove it")
    if not p.parent.is_dir():
        raise BadInput(f"{flag} {path}: folder {p.parent} does not exist")
    return p


def write_new_csv(path, header: list[str], rows) -> None:
    """Create ``path`` exclusively (refused if it appeared meanwhile) and write the CSV rows into it."""
    import csv
    import os

    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise BadInput(f"{path}: exists; methodo never writes over your files: choose a new name") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot write there ({exc.strerror or exc})") from None
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


@dataclass
class CommandResult:
    issues: LabelIssues
    accuracy: float  # out-of-sample agreement of the cross-fitted predictions with the given labels
    issues_path: object
    where: dict  # row id → a human pointer for the printed table: "line N" of a CSV file, an image file, "index i"
    fixed: int | None = None
    out: object = None


def label_issues_command(config, overrides=(), *, folds: int = 5, issues_path="label_issues.csv",
                         fix: str | None = None, out=None) -> CommandResult:
    """``methodo data label-issues``: cross-fit the configured model over every row, find the label issues,
    write them to ``issues_path`` and, with ``fix``, a cleaned copy of the CSV dataset to ``out``.

    Every argument and path is checked before any training: ``--fix`` without ``--out`` (or the
    reverse), a dataset that is not a CSV file for ``--fix``, a file that exists already, bad ``--folds``.
    """
    from methodo.config import load_config

    if fix is not None and out is None:
        raise BadInput(f"--fix {fix}: give --out CLEAN.csv, the cleaned copy to write (the dataset is left as it is)")
    if out is not None and fix is None:
        raise BadInput(f"--out {out}: is the cleaned copy that --fix writes; add --fix drop or --fix relabel")
    if fix is not None and fix not in FIXES:
        raise BadInput(f"--fix {fix}: choose one of {', '.join(FIXES)}")
    cfg = load_config(config, list(overrides))
    if fix is not None and cfg.data.source != "csv":
        raise BadInput(f"--fix {fix}: writes a cleaned copy of a CSV dataset; data.source is {cfg.data.source!r}, "
                       "not csv (fix the labels at their source from the rows of --issues)")
    issues_file = _new_file(issues_path, "--issues")
    out_file = _new_file(out, "--out") if out is not None else None
    if out_file is not None and out_file.resolve() == issues_file.resolve():
        raise BadInput(f"--out {out}: is also --issues; give two different files")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        check_folds(folds, 2)  # the one-line error, before the data is read
    split = cfg.data.split
    if split.method == "kfold" and split.fold is None:  # the rows' split column: the run's first fold
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"split": split.model_copy(
            update={"fold": 1})})})
    import torch

    threads = torch.get_num_threads()  # train.threads applies to this command only, as to a run
    try:
        return _command(cfg, folds, fix, issues_file, out_file)
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _command(cfg, folds: int, fix, issues_file, out_file) -> CommandResult:
    from methodo import stages
    from methodo.errors import ConfigError

    prep = stages.prepare(cfg)
    if prep.spec.label_issues is None:
        raise ConfigError(f"data label-issues: a {prep.ds.task} dataset has no labels to check (classification "
                          "and multilabel tasks)")
    check_folds(folds, len(prep.ds.y))
    prep, _, _ = stages.auto_lr(prep)
    ds = prep.ds
    proba = cross_fit(prep.cfg, ds, folds=folds, progress=prep.cfg.train.progress)
    split_of = np.empty(len(ds.y), dtype=object)
    for s, rows in prep.data.indices.items():
        split_of[rows] = s
    multilabel = prep.spec.label_issues == "multilabel"
    issues = find_label_issues(proba, ds.y, splits=split_of, class_names=ds.class_names, multilabel=multilabel,
                               method="cross_val", folds=folds)
    if multilabel:
        accuracy = float(((proba >= 0.5) == (ds.y >= 0.5)).all(1).mean())
    else:
        accuracy = float((proba.argmax(1) == ds.y).mean())
    write_new_csv(issues_file, COLUMNS, issues.csv_rows())
    where = {r["row"]: (f"line {int(ds.meta['row'][r['row']])}" if "row" in ds.meta and "path" not in ds.meta
                        else ds.where(r["row"])) for r in issues.rows}  # the CSV file's line, the image file
    res = CommandResult(issues, accuracy, issues_file, where)
    if fix is not None:
        res.fixed, res.out = fix_csv(cfg.data.path, cfg.data.target, issues, fix, out_file), out_file
    return res
