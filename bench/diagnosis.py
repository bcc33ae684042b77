"""How right are methodo's findings? Precision and recall of every finding family on planted problems,
each beside a clean control (how often the finding fires when the problem is absent).

For each family a problem is planted, at a known place, into small real data (scikit-learn's digits and
breast_cancer written as CSV tables, digits as an image folder), for several seeds; methodo runs on it
through its own pipeline (``methodo.run``, ``methodo data inspect``'s ``inspect_data``, and the stages of
``methodo data label-issues``) and the finding is scored against what was planted:

- **row-level** precision and recall where the finding names rows (label issues: every row of
  ``label_issues.csv``; duplicates: the pairs named in the evidence and the counts);
- **detection rate** (fires / seeds) where the finding is about the whole run or dataset.

Every family has a **clean control**: the same data and config without the problem; its column is the
fraction of control seeds where the same finding fires (a false alarm rate).

Label noise (digits, 5/15/30 %, symmetric and class-conditional) compares methodo (5-fold cross-fitting of
the configured MLP, then confident learning) with cleanlab's ``find_label_issues`` on the *same*
probabilities, and with cleanlab on the probabilities of a cross-validated scikit-learn model (logistic
regression, ``cross_val_predict``). deepchecks' train-test checks run side by side when deepchecks imports.

This is a benchmark, not a test: run it by hand on an idle machine (a few minutes).

    python bench/diagnosis.py [--seeds 5] [--families label_noise,duplicates,...] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import shutil
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from _common import MAX_LOAD, ROOT, code_version, cpu_and_nproc, load_too_high, loadavg, replace_section  # bench/ is sys.path[0]

SECTION = "## Diagnosis accuracy"
RATES = (0.05, 0.15, 0.30)
FOLDS = 5  # cross-fitting folds of the label-noise family

# --------------------------------------------------------------------------- planting (pure, tested)

# Class-conditional noise on digits: each class is mistaken for one look-alike class (a fixed map).
LOOK_ALIKE = {0: 6, 1: 7, 2: 3, 3: 8, 4: 9, 5: 6, 6: 0, 7: 1, 8: 3, 9: 4}


def flip_symmetric(y: np.ndarray, rate: float, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy labels, flipped rows)``: a seeded ``rate`` of the rows (``round(rate * n)``) gets another
    class, each of the other ``n_classes - 1`` as likely."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y).copy()
    rows = np.sort(rng.choice(len(y), int(round(rate * len(y))), replace=False))
    y[rows] = (y[rows] + rng.integers(1, n_classes, len(rows))) % n_classes
    return y, rows


def flip_class_conditional(y: np.ndarray, rate: float, seed: int, mapping: dict[int, int] = LOOK_ALIKE
                           ) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy labels, flipped rows)``: class ``c`` is relabeled ``mapping[c]`` in a share of its rows that
    differs by class (weights 0.5 … 1.5 over the classes, in a seeded order, so the noise depends on the class),
    with ``round(rate * n)`` rows flipped in all."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y).copy()
    classes = np.unique(y)
    w = rng.permutation(np.linspace(0.5, 1.5, len(classes)))
    counts = np.array([(y == c).sum() for c in classes])
    want = rate * len(y) * w * counts / (w * counts).sum()  # rows to flip per class, rate of the total
    k = np.floor(want).astype(int)
    k[np.argsort(-(want - k))[: int(round(rate * len(y))) - k.sum()]] += 1  # largest remainders
    rows = []
    for c, kc in zip(classes, k):
        rows.append(rng.choice(np.flatnonzero(y == c), min(kc, (y == c).sum()), replace=False))
    rows = np.sort(np.concatenate(rows))
    y[rows] = [mapping[int(c)] for c in y[rows]]
    return y, rows


def add_exact_copies(X: np.ndarray, y: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X, y, pairs)`` with ``k`` rows copied byte for byte (label too) and appended; ``pairs[i]`` is
    ``(original row, copy row)``."""
    rng = np.random.default_rng(seed)
    src = np.sort(rng.choice(len(X), k, replace=False))
    pairs = np.stack([src, len(X) + np.arange(k)], 1)
    return np.concatenate([X, X[src]]), np.concatenate([y, y[src]]), pairs


def near_copy(img: np.ndarray, rng: np.random.Generator, *, max_value: float = 255.0) -> np.ndarray:
    """A near copy of an image (H, W in [0, max_value]): contrast × 0.9, brightness + 8, and noise of
    1 gray level (as a re-encoded, brightness-shifted copy would be); uint8-rounded."""
    out = img.astype(np.float64) * 0.9 + 8 + rng.normal(scale=1.0, size=img.shape)
    return np.clip(np.rint(out), 0, max_value)


def add_near_copies(images: np.ndarray, y: np.ndarray, k: int, seed: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images, y, pairs)`` with near copies (:func:`near_copy`) of ``k`` images appended."""
    rng = np.random.default_rng(seed)
    src = np.sort(rng.choice(len(images), k, replace=False))
    copies = np.stack([near_copy(images[i], rng) for i in src])
    pairs = np.stack([src, len(images) + np.arange(k)], 1)
    return np.concatenate([images, copies]), np.concatenate([y, y[src]]), pairs


def leak_column(y: np.ndarray, how: str, seed: int) -> np.ndarray:
    """A column that leaks the label ``y`` (0/1): ``equal`` (the label itself), ``computed`` (an affine
    function of it plus small noise: 3.7·y + 1 + N(0, 0.05)), or ``after_outcome`` (a follow-up measured
    after the outcome: months of follow-up, N(20, 4) for y = 1 and N(60, 8) for y = 0: almost, not exactly,
    separable)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    if how == "equal":
        return y.astype(np.float64)
    if how == "computed":
        return 3.7 * y + 1 + rng.normal(scale=0.05, size=len(y))
    if how == "after_outcome":
        return np.where(y == 1, rng.normal(20, 4, len(y)), rng.normal(60, 8, len(y))).round(1)
    raise ValueError(f"how={how!r}: choose equal, computed or after_outcome")


def imbalance(y: np.ndarray, ratio: float, seed: int, minority: int | None = None) -> np.ndarray:
    """Rows to keep so that the largest class has ``ratio`` × the rows of ``minority`` (default: the
    smallest class): a seeded sample of the minority class, every other row kept."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(y)
    minority = int(np.argmin(counts)) if minority is None else minority
    keep_n = max(2, int(counts.max() / ratio))
    kept = rng.choice(np.flatnonzero(y == minority), min(keep_n, counts[minority]), replace=False)
    return np.sort(np.concatenate([np.flatnonzero(y != minority), kept]))


def constant_columns(n: int, seed: int, share: float = 0.99) -> tuple[np.ndarray, np.ndarray]:
    """``(constant, near_constant)``: a column of 1.0, and a column that is 0.0 in ``share`` of the rows
    and a seeded N(0, 1) value in the rest."""
    rng = np.random.default_rng(seed)
    near = np.zeros(n)
    # at most (1 - share) of the rows differ (floor, not round: 18 of 1,797 rows would leave 0.0 in 98.998%)
    odd = rng.choice(n, max(1, int((1 - share) * n)), replace=False)
    near[odd] = rng.normal(size=len(odd))
    return np.ones(n), near


def blank_cells(X: np.ndarray, columns: list[int], share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(X with NaN cells, rows touched)``: in each of ``columns``, a seeded ``share`` of the rows is NaN."""
    rng = np.random.default_rng(seed)
    X = X.astype(np.float64).copy()
    touched = np.zeros(len(X), bool)
    for j in columns:
        rows = rng.choice(len(X), int(round(share * len(X))), replace=False)
        X[rows, j] = np.nan
        touched[rows] = True
    return X, np.flatnonzero(touched)


def shuffled(y: np.ndarray, seed: int) -> np.ndarray:
    """The labels in a seeded random order: no feature can predict them."""
    return np.random.default_rng(seed).permutation(y)


# --------------------------------------------------------------------------- scoring (pure, tested)


def precision_recall(found, planted) -> tuple[float, float]:
    """Row-level precision and recall of the rows ``found`` against the rows ``planted`` (precision 1.0 when
    nothing is found: no false alarm; recall 1.0 when nothing was planted)."""
    found, planted = set(map(int, found)), set(map(int, planted))
    hits = len(found & planted)
    return (hits / len(found) if found else 1.0), (hits / len(planted) if planted else 1.0)


def rate(fired: list[bool]) -> float:
    return sum(map(bool, fired)) / max(len(fired), 1)


# --------------------------------------------------------------------------- data on disk


def write_table(path: Path, X: np.ndarray, y, names: list[str], target: str = "label") -> Path:
    import pandas as pd

    df = pd.DataFrame(X, columns=names)
    df[target] = y
    df.to_csv(path, index=False, na_rep="")
    return path


def write_folder(root: Path, images: np.ndarray, y: np.ndarray) -> Path:
    """PNG files ``root/c{label}/{i:05d}.png`` (dataset rows are the sorted files, so row order is kept)."""
    from PIL import Image

    if root.exists():
        shutil.rmtree(root)
    for c in np.unique(y):
        (root / f"c{c}").mkdir(parents=True)
    for i, (img, c) in enumerate(zip(images, y)):
        Image.fromarray(img.astype(np.uint8), mode="L").save(root / f"c{c}" / f"{i:05d}.png")
    return root


def digits_table():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float64), d.target.astype(int), [f"px{i}" for i in range(64)]


def cancer_table():
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    # methodo's breast_cancer: malignant is class 1 (the positive class); sklearn has malignant = 0
    return d.data.astype(np.float64), (1 - d.target).astype(int), [f"f{i}" for i in range(d.data.shape[1])]


# The configs (YAML text): the bundled examples' models, one thread, no tracking, no explanations.
COMMON = """seed: {seed}
data: {{source: csv, path: {path}, target: label}}
track: {{mlflow: false}}
explain: {{enabled: false}}
evaluate: {{bootstrap: 200}}
"""
DIGITS_MLP = """model: {name: mlp, hidden: [64]}
train: {epochs: 20, batch_size: 64, optimizer: {name: adam, lr: 0.003}, threads: 1, progress: false}
"""
CANCER_MLP = """model: {name: mlp, hidden: [64, 32], dropout: 0.2}
train:
  epochs: 60
  batch_size: 32
  optimizer: {name: adamw, lr: 0.001, weight_decay: 0.01}
  scheduler: {name: cosine}
  early_stopping: {monitor: val_loss, patience: 10}
  threads: 1
  progress: false
"""


def config(work: Path, name: str, csv: Path, seed: int, body: str, extra: str = "") -> Path:
    p = work / f"{name}.yaml"
    p.write_text(f"name: {name}\n" + COMMON.format(seed=seed, path=csv.resolve()) + body + extra, encoding="utf-8")
    return p


# --------------------------------------------------------------------------- running methodo


def run_findings(cfg: Path, out: Path, overrides=()) -> dict:
    """``methodo run`` in-process: ``{finding id: finding}`` (a failed run's findings too), and the status."""
    import methodo
    from methodo.errors import RunFailed

    if out.exists():
        shutil.rmtree(out)
    try:
        res = methodo.run(str(cfg), list(overrides), out=out)
        summary = res.summary
    except RunFailed:
        summary = json.loads((out / "summary.json").read_text())
    return {"status": summary["status"], "findings": {f["id"]: f for f in summary["findings"]}}


def inspect_findings(cfg: Path) -> dict:
    """``methodo data inspect`` in-process: ``{finding id: finding}``."""
    from methodo.config import load_config
    from methodo.data.audit import inspect_data

    return {f["id"]: f for f in inspect_data(load_config(cfg))["findings"]}


def cross_fitted(cfg: Path, folds: int = FOLDS):
    """The stages of ``methodo data label-issues``: out-of-sample probabilities of every row (K-fold
    cross-fitting of the configured model), the labels as loaded, and methodo's label issues and finding."""
    from methodo import diagnose as dg
    from methodo import stages
    from methodo.config import load_config
    from methodo.evaluate.label_issues import cross_fit, find_label_issues

    prep = stages.prepare(load_config(cfg))
    prep, _, _ = stages.auto_lr(prep)
    proba = cross_fit(prep.cfg, prep.ds, folds=folds)
    issues = find_label_issues(proba, prep.ds.y, class_names=prep.ds.class_names, method="cross_val", folds=folds)
    finding = dg.label_errors(dg.Facts(task=prep.ds.task, label_issues=issues, class_names=prep.ds.class_names))
    return proba, prep.ds, issues, finding


def cleanlab_rows(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    from cleanlab.filter import find_label_issues

    return np.flatnonzero(find_label_issues(labels, proba, n_jobs=1))


def sklearn_cv_proba(X: np.ndarray, y: np.ndarray, seed: int, folds: int = FOLDS) -> np.ndarray:
    """Out-of-sample probabilities of a scikit-learn logistic regression (standardized inputs), K-fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cross_val_predict(model, X, y, cv=cv, method="predict_proba")


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the table: a family, the finding scored, and per-seed values (planted and control)."""

    family: str
    finding: str
    who: str = "methodo"
    kind: str = "detection"  # detection (fires / seeds) or rows (precision, recall)
    fired: list = field(default_factory=list)  # detection: planted seeds where it fired
    control: list = field(default_factory=list)  # control seeds where it fired
    precision: list = field(default_factory=list)
    recall: list = field(default_factory=list)
    note: str = ""


class Results:
    def __init__(self) -> None:
        self.rows: dict[tuple, Row] = {}

    def row(self, family: str, finding: str, who: str = "methodo", kind: str = "detection", note: str = "") -> Row:
        key = (family, finding, who)
        if key not in self.rows:
            self.rows[key] = Row(family, finding, who, kind, note=note)
        return self.rows[key]


def _med(v: list) -> str:
    return f"{statistics.median(v):.2f}" if v else "–"


def fmt_table(res: Results) -> str:
    head = ["family (planted problem)", "finding", "detector", "planted: fires / seeds", "precision (median)",
            "recall (median)", "clean control: fires / seeds"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---:|---:|---:|---:|"]
    for r in res.rows.values():
        fires = f"{sum(map(bool, r.fired))}/{len(r.fired)} ({rate(r.fired):.2f})" if r.fired else "–"
        ctrl = f"{sum(map(bool, r.control))}/{len(r.control)} ({rate(r.control):.2f})" if r.control else "–"
        fam = r.family + (f" — {r.note}" if r.note else "")
        lines.append("| " + " | ".join([fam, f"`{r.finding}`", r.who, fires, _med(r.precision), _med(r.recall),
                                         ctrl]) + " |")
    return "\n".join(lines)


def as_json(res: Results) -> list[dict]:
    return [r.__dict__ for r in res.rows.values()]


# --------------------------------------------------------------------------- families


NOISE_KINDS = ("symmetric", "class-conditional")


def fam_label_noise(work: Path, seeds: list[int], res: Results, rates=RATES, kinds=NOISE_KINDS) -> None:
    """Digits with 5/15/30 % of labels flipped (symmetric, class-conditional) and a clean control."""
    X, y0, names = digits_table()
    settings = [("control", 0.0)] + [(k, r) for k in kinds for r in rates]
    for seed in seeds:
        for kind, r in settings:
            if kind == "symmetric":
                y, flipped = flip_symmetric(y0, r, 10, seed)
            elif kind == "class-conditional":
                y, flipped = flip_class_conditional(y0, r, seed)
            else:
                y, flipped = y0.copy(), np.array([], int)
            csv = write_table(work / f"noise_{seed}.csv", X.astype(int), y, names)
            cfg = config(work, f"noise_{seed}", csv, seed, DIGITS_MLP)
            t0 = time.perf_counter()
            proba, ds, issues, finding = cross_fitted(cfg)
            assert (ds.y == y).all(), "the CSV's labels are the planted ones"
            found = {"methodo": [i["row"] for i in issues.rows], "cleanlab, same probabilities":
                     cleanlab_rows(ds.y, proba),
                     "cleanlab + scikit-learn CV": cleanlab_rows(y, sklearn_cv_proba(X, y, seed))}
            fired = {w: (finding is not None) if w == "methodo" else len(rows) > 0 for w, rows in found.items()}
            for who, rows in found.items():
                if kind == "control":
                    for k2 in kinds:
                        for r2 in rates:
                            res.row(f"label noise {100 * r2:.0f}% {k2}", "label_errors", who, "rows").control.append(
                                fired[who])
                    continue
                row = res.row(f"label noise {100 * r:.0f}% {kind}", "label_errors", who, "rows")
                p, rc = precision_recall(rows, flipped)
                row.precision.append(p)
                row.recall.append(rc)
                row.fired.append(fired[who])
            print(f"label noise seed {seed} {kind} {r}: " + ", ".join(
                f"{w}: {len(v)} rows, P/R {precision_recall(v, flipped)[0]:.3f}/{precision_recall(v, flipped)[1]:.3f}"
                for w, v in found.items()) + f" ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)


def _split_of(cfg: Path, with_ds: bool = False):
    """The split of every row, as methodo splits the config's data."""
    from methodo.config import load_config
    from methodo.data.preprocess import split_dataset
    from methodo.data.sources import load_dataset

    c = load_config(cfg)
    ds = load_dataset(c.data, audit=True)
    idx = split_dataset(ds, c.data, c.seed)
    split = np.empty(len(ds.y), dtype=object)
    for s, rows in idx.items():
        split[rows] = s
    return (split, ds) if with_ds else split


def _across(pairs: np.ndarray, split: np.ndarray, train_only: bool = False) -> np.ndarray:
    """The planted pairs whose two rows landed in different splits (what the across-splits checks must find);
    ``train_only``: only the pairs with one row in train (the near-duplicate check compares val/test with train)."""
    a, b = split[pairs[:, 0]], split[pairs[:, 1]]
    keep = (a != b) & (((a == "train") | (b == "train")) if train_only else True)
    return pairs[keep]


def _named_pairs(finding: dict | None, key_rows) -> list[tuple[int, int]]:
    """The row pairs a duplicates finding names in its evidence (``examples``), as dataset row ids."""
    if not finding:
        return []
    out = []
    for ex in finding["evidence"].get("examples", []):
        rows = [key_rows(v) for k, v in ex.items() if k in ("train", "val", "test")]
        out.append(tuple(sorted(rows)))
    return out


def _score_pairs(res_row: Row, finding: dict | None, count_key, across: np.ndarray, key_rows) -> None:
    planted = {tuple(sorted(map(int, p))) for p in across}
    named = _named_pairs(finding, key_rows)
    reported = count_key(finding) if finding else 0
    res_row.fired.append(finding is not None)
    # precision: of the pairs the finding names, the planted ones; recall: reported count over planted count
    res_row.precision.append(sum(p in planted for p in named) / len(named) if named else 1.0)
    res_row.recall.append(min(reported, len(planted)) / len(planted) if planted else 1.0)


def fam_duplicates(work: Path, seeds: list[int], res: Results) -> None:
    """Exact copies of 40 breast_cancer rows (a table) and near copies of 60 digits (an image folder)."""
    X, y, names = cancer_table()
    row_of = lambda s: int(s.split()[-1]) - 2  # "row N": the CSV's line N, data row N - 2  # noqa: E731
    for seed in seeds:
        Xd, yd, pairs = add_exact_copies(X, y, 40, seed)
        for planted in (True, False):
            csv = write_table(work / f"dup_{seed}.csv", Xd if planted else X, yd if planted else y, names)
            cfg = config(work, f"dup_{seed}", csv, seed, CANCER_MLP)
            f = inspect_findings(cfg).get("duplicates_across_splits")
            row = res.row("exact duplicates across splits (40 copied rows)", "duplicates_across_splits",
                          kind="rows", note="precision: named pairs; recall: count reported / planted")
            if planted:
                across = _across(pairs, _split_of(cfg))
                _score_pairs(row, f, lambda f: sum(v for k, v in f["evidence"].items() if k in (
                    "train_test", "train_val", "val_test")), across, row_of)
            else:
                row.control.append(f is not None)
    # near copies of images (the check looks at images only)
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images * 255 / 16).round()
    for seed in seeds:
        Xi, yi, pairs = add_near_copies(images, d.target, 60, seed)
        for planted in (True, False):
            root = write_folder(work / "near_images", Xi if planted else images, yi if planted else d.target)
            cfgp = work / f"near_{seed}.yaml"
            cfgp.write_text(f"name: near\nseed: {seed}\ndata: {{source: imagefolder, path: {root.resolve()}}}\n"
                            "model: {name: cnn}\ntrain: {progress: false, threads: 1}\ntrack: {mlflow: false}\n",
                            encoding="utf-8")
            f = inspect_findings(cfgp).get("near_duplicates_across_splits")
            row = res.row("near duplicates across splits (60 re-encoded, brightness-shifted digit images)",
                          "near_duplicates_across_splits", kind="rows",
                          note="pairs with one image in train; precision: named pairs; recall: count reported / "
                               "planted")
            if planted:
                # in planted-array indices (the file stem): the split of each image, the pairs named
                split_rows, ds = _split_of(cfgp, with_ds=True)
                split = np.empty(len(split_rows), dtype=object)
                for r in range(len(split_rows)):
                    split[int(Path(ds.where(r)).stem)] = split_rows[r]
                _score_pairs(row, f, lambda f: f["evidence"]["val"] + f["evidence"]["test"],
                             _across(pairs, split, train_only=True), lambda v: int(Path(v).stem))
            else:
                row.control.append(f is not None)


def fam_leakage(work: Path, seeds: list[int], res: Results) -> None:
    X, y, names = cancer_table()
    for seed in seeds:
        for how in ("equal", "computed", "after_outcome", None):
            Xl = X if how is None else np.c_[X, leak_column(y, how, seed)]
            cols = names if how is None else [*names, "leak"]
            csv = write_table(work / f"leak_{seed}.csv", Xl, y, cols)
            cfg = config(work, f"leak_{seed}", csv, seed, CANCER_MLP)
            f = inspect_findings(cfg).get("target_leakage")
            hows = ("equal", "computed", "after_outcome") if how is None else (how,)
            for h in hows:
                label = {"equal": "a column equal to the label", "computed": "a column computed from the label "
                         "(3.7·y + 1 + noise)", "after_outcome": "a column recorded after the outcome "
                         "(follow-up months, ~99% separable)"}[h]
                row = res.row(f"target leakage: {label}", "target_leakage")
                if how is None:
                    row.control.append(f is not None)
                else:
                    row.fired.append(f is not None and "leak" in f["evidence"]["features"])


def fam_imbalance(work: Path, seeds: list[int], res: Results) -> None:
    X, y, names = cancer_table()
    for seed in seeds:
        keep = imbalance(y, 5.0, seed)
        for planted in (True, False):
            rows = keep if planted else np.arange(len(y))
            csv = write_table(work / f"imb_{seed}.csv", X[rows], y[rows], names)
            cfg = config(work, f"imb_{seed}", csv, seed, CANCER_MLP)
            f = inspect_findings(cfg).get("class_imbalance")
            row = res.row("class imbalance (breast_cancer, malignant cut to 1:5)", "class_imbalance")
            (row.fired if planted else row.control).append(f is not None)


def fam_features(work: Path, seeds: list[int], res: Results) -> None:
    """Constant and near-constant columns, and missing values (5 % of two columns)."""
    X, y, names = cancer_table()
    for seed in seeds:
        const, near = constant_columns(len(y), seed)
        Xm, touched = blank_cells(X, [3, 7], 0.05, seed)
        cases = {"constant": (np.c_[X, const], [*names, "const"]), "near": (np.c_[X, near], [*names, "near"]),
                 "missing": (Xm, names), "control": (X, names)}
        found = {}
        for case, (Xc, cols) in cases.items():
            csv = write_table(work / f"feat_{seed}.csv", Xc, y, cols)
            found[case] = inspect_findings(config(work, f"feat_{seed}", csv, seed, CANCER_MLP))
        c = found["constant"].get("constant_feature")
        row = res.row("constant feature (a column of 1.0)", "constant_feature")
        row.fired.append(c is not None and "const" in c["evidence"]["features"])
        row.control.append("constant_feature" in found["control"])
        n = found["near"].get("constant_feature")
        row = res.row("near-constant feature (0.0 in 99% of rows)", "constant_feature")
        row.fired.append(n is not None and "near" in n["evidence"]["features"])
        row.control.append("constant_feature" in found["control"])
        m = found["missing"].get("missing_values")
        row = res.row("missing values (5% of 2 columns blank)", "missing_values", kind="rows",
                      note="recall: rows_affected reported / planted; precision: first rows named")
        row.fired.append(m is not None)
        row.control.append("missing_values" in found["control"])
        if m is not None:
            named = [int(s.split()[-1]) - 2 for s in m["evidence"]["first_rows"]]
            row.precision.append(precision_recall(named, touched)[0])
            row.recall.append(min(m["evidence"]["rows_affected"], len(touched)) / len(touched))
        else:
            row.precision.append(1.0)
            row.recall.append(0.0)


# Run-stage families: (family label, finding id, data, config body of the planted run, what differs)
RUN_FAMILIES = {
    "overfitting": ("overfitting (a 2×256 MLP, no dropout or weight decay, no early stopping, 150 epochs, "
                    "20% of labels flipped)", "overfitting", "cancer",
                    """model: {name: mlp, hidden: [256, 256], dropout: 0.0}
train: {epochs: 150, batch_size: 32, optimizer: {name: adam, lr: 0.001}, early_stopping: null, threads: 1,
        progress: false}
""", "noisy"),
    "underfitting": ("underfitting (digits, an MLP with 2 hidden units, 10 epochs)", "underfitting", "digits",
                     """model: {name: mlp, hidden: [2]}
train: {epochs: 10, batch_size: 64, optimizer: {name: adam, lr: 0.003}, threads: 1, progress: false}
""", None),
    "noise_floor": ("noise floor (breast_cancer with its labels shuffled, the example's MLP)", "noise_floor",
                    "cancer", CANCER_MLP, "shuffled"),
    "lr_high": ("LR too high (breast_cancer, Adam at lr 0.1, no schedule)", "lr_too_high", "cancer",
                """model: {name: mlp, hidden: [64, 32], dropout: 0.2}
train: {epochs: 30, batch_size: 32, optimizer: {name: adam, lr: 0.1}, early_stopping: null, threads: 1,
        progress: false}
""", None),
    "lr_low": ("LR too low (breast_cancer, SGD at lr 1e-5)", "lr_too_low", "cancer",
               """model: {name: mlp, hidden: [64, 32], dropout: 0.2}
train: {epochs: 30, batch_size: 32, optimizer: {name: sgd, lr: 0.00001}, early_stopping: null, threads: 1,
        progress: false}
""", None),
    "miscalibration": ("miscalibration (digits, label smoothing 0.6: underconfident)", "miscalibrated", "digits",
                       DIGITS_MLP.replace("threads: 1", "regularization: {label_smoothing: 0.6}, threads: 1"), None),
}
CONTROL_BODY = {"cancer": CANCER_MLP, "digits": DIGITS_MLP}


def fam_run(work: Path, seeds: list[int], res: Results, names: list[str], controls: dict) -> None:
    """The run-stage families, and the clean controls (every run-stage finding that fires there)."""
    tables = {"cancer": cancer_table(), "digits": digits_table()}
    for seed in seeds:
        for data in ("cancer", "digits"):
            if (data, seed) in controls:
                continue
            X, y, cols = tables[data]
            csv = write_table(work / f"ctl_{data}_{seed}.csv", X, y, cols)
            out = run_findings(config(work, f"ctl_{data}_{seed}", csv, seed, CONTROL_BODY[data]),
                               work / f"run_ctl_{data}")
            controls[(data, seed)] = out
        for name in names:
            label, fid, data, body, alter = RUN_FAMILIES[name]
            X, y, cols = tables[data]
            if alter == "noisy":
                y, _ = flip_symmetric(y, 0.2, 2, seed)
            elif alter == "shuffled":
                y = shuffled(y, seed)
            csv = write_table(work / f"{name}_{seed}.csv", X, y, cols)
            out = run_findings(config(work, f"{name}_{seed}", csv, seed, body), work / f"run_{name}")
            row = res.row(label, fid)
            row.fired.append(fid in out["findings"])
            row.control.append(fid in controls[(data, seed)]["findings"])
            if name == "noise_floor":  # noise, not bias: underfitting must not be said of a shuffled target
                r2 = res.row(label, "underfitting", note="should not fire: noise, not bias")
                r2.fired.append("underfitting" in out["findings"])
                r2.control.append("underfitting" in controls[(data, seed)]["findings"])
            print(f"{name} seed {seed}: {sorted(out['findings'])} (control {data}: "
                  f"{sorted(controls[(data, seed)]['findings'])})", file=sys.stderr, flush=True)


def clean_control_table(controls: dict) -> str:
    """Every finding that fired on a clean control, and on how many seeds."""
    per: dict[tuple[str, str], int] = {}
    seeds: dict[str, int] = {}
    for (data, _), out in controls.items():
        seeds[data] = seeds.get(data, 0) + 1
        for fid in out["findings"]:
            per[(data, fid)] = per.get((data, fid), 0) + 1
    lines = [f"- clean control `{ {'cancer': 'breast_cancer', 'digits': 'digits'}[d] }` ({n} seeds): "
             + (", ".join(f"`{f}` {k}/{n}" for (dd, f), k in sorted(per.items()) if dd == d) or "no finding")
             for d, n in seeds.items()]
    return "\n".join(lines)


FAMILIES = {"label_noise": fam_label_noise, "duplicates": fam_duplicates, "leakage": fam_leakage,
            "imbalance": fam_imbalance, "features": fam_features, **{k: None for k in RUN_FAMILIES}}


# --------------------------------------------------------------------------- deepchecks, when it imports


# What happened when deepchecks was installed beside our pins (a throwaway venv: torch 2.14.1, numpy 2.4.6,
# pandas 3.1.1, scikit-learn 1.9.1, scipy 1.17.1; `pip install deepchecks` resolved deepchecks 0.19.1).
DEEPCHECKS_TRIED = (
    "deepchecks 0.19.1 installs beside torch 2.14.1, numpy 2.4.6, pandas 3.1.1 and scikit-learn 1.9.1, but does not "
    "import: with setuptools 84.2.1 `import deepchecks.tabular` fails with `ModuleNotFoundError: No module named "
    "'pkg_resources'` (deepchecks/core/serialization/dataframe/html.py:16; setuptools ≥ 81 dropped it); with "
    "setuptools < 81 it then fails with `ValueError: 'max_error' is not a valid scoring value` "
    "(deepchecks/tabular/metric_utils/scorers.py:116 asks scikit-learn 1.9 for a scorer it no longer has). "
    "Its train-test checks are therefore not run side by side")


def deepchecks_status() -> str | None:
    """None when deepchecks imports, else why not (one line)."""
    try:
        import deepchecks.tabular  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure is the answer
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5, help="seeds per family (default 5)")
    p.add_argument("--families", default=",".join(FAMILIES),
                   help=f"comma-separated families (default all): {', '.join(FAMILIES)}")
    p.add_argument("--first-seed", type=int, default=0, help="the first seed (seeds first … first + N - 1)")
    p.add_argument("--rates", default=",".join(map(str, RATES)), help="label_noise: flipped shares (default "
                   "0.05,0.15,0.3)")
    p.add_argument("--noise", default=",".join(NOISE_KINDS), help="label_noise: symmetric, class-conditional or both")
    p.add_argument("--workdir", default="bench_diagnosis_work", help="where the files and run dirs go")
    p.add_argument("--json", metavar="FILE", help="also write every per-seed value as JSON")
    p.add_argument("--write", metavar="FILE", help=f"write/update the '{SECTION}' section of FILE (refused when "
                   f"the 1-minute load average before the run is above {MAX_LOAD})")
    a = p.parse_args(argv)
    fams = [f.strip() for f in a.families.split(",") if f.strip()]
    bad = [f for f in fams if f not in FAMILIES]
    if bad:
        p.error(f"--families: unknown {', '.join(bad)}; choose from {', '.join(FAMILIES)}")
    if a.seeds < 1:
        p.error("--seeds: give at least 1")
    try:
        a.rates = tuple(float(r) for r in a.rates.split(","))
    except ValueError:
        p.error(f"--rates {a.rates}: give comma-separated shares such as 0.05,0.15")
    if not all(0 < r < 1 for r in a.rates):
        p.error(f"--rates {a.rates}: each share must be in (0, 1)")
    a.noise = tuple(k.strip() for k in a.noise.split(",") if k.strip())
    if not a.noise or any(k not in NOISE_KINDS for k in a.noise):
        p.error(f"--noise {','.join(a.noise)}: choose from {', '.join(NOISE_KINDS)}")
    a.families = fams
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    work = (ROOT / a.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    load_before = loadavg()
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))
    res, controls = Results(), {}
    dc_why = deepchecks_status()
    for fam in a.families:
        print(f"family {fam} …", file=sys.stderr, flush=True)
        if fam == "label_noise":
            fam_label_noise(work, seeds, res, rates=a.rates, kinds=a.noise)
        elif FAMILIES[fam] is not None:
            FAMILIES[fam](work, seeds, res)
    run_names = [f for f in a.families if f in RUN_FAMILIES]
    if run_names:
        fam_run(work, seeds, res, run_names, controls)
    wall = time.perf_counter() - t0
    load_after = loadavg()
    cpu, nproc = cpu_and_nproc()
    import torch

    body = "\n".join([
        SECTION, "",
        "Precision and recall of methodo's findings on planted problems, beside a clean control, measured by "
        "`bench/diagnosis.py` (a benchmark run by hand, not a test).", "",
        f"- **Command:** `python bench/diagnosis.py --seeds {a.seeds} --families {','.join(a.families)}"
        + (f" --first-seed {a.first_seed}" if a.first_seed else "")
        + (f" --rates {','.join(map(str, a.rates))}" if a.rates != RATES else "")
        + (f" --noise {','.join(a.noise)}" if a.noise != NOISE_KINDS else "")
        + (f" --write {a.write}`" if a.write else "`"),
        f"- **Date:** {started:%Y-%m-%d %H:%M} UTC; {wall:.0f} s in all; seeds {seeds[0]}…{seeds[-1]}",
        f"- **Machine:** `nproc` = {nproc}, {cpu}; torch {torch.__version__} (CPU), Python {platform.python_version()}",
        f"- **Code measured:** methodo {code_version('src')}",
        f"- **Load:** 1-minute load average {load_before} before, {load_after} after.",
        "- **Data:** scikit-learn's digits (1,797 rows, 64 pixel columns; as a CSV table, and as a folder of 8×8 PNGs "
        "for near copies) and breast_cancer (569 rows, 30 columns), written by the bench with the problem planted "
        "at known rows; seeds 0…N-1 seed both the planting and the run (split, initialization). Configs: the "
        "bundled examples' models (digits: `mlp` [64], Adam 0.003, 20 epochs; breast_cancer: "
        "`examples/breast_cancer.yaml`'s MLP), one thread, no tracking, 200 bootstrap resamples.",
        "- **Scores:** *fires / seeds*: the planted runs where the finding fired; *clean control*: the same data "
        "and config without the problem, the seeds where the same finding fired (false alarms). Row-level "
        "*precision* and *recall* (medians over seeds) where the finding names rows: label issues score every "
        f"row of `label_issues.csv` against the flipped rows ({FOLDS}-fold cross-fitting of the MLP over all rows, "
        f"as `methodo data label-issues --folds {FOLDS}`); *cleanlab, same probabilities*: "
        "`cleanlab.filter.find_label_issues` on methodo's cross-fitted probabilities; *cleanlab + scikit-learn "
        f"CV*: the same on a {FOLDS}-fold `cross_val_predict` of a standardized logistic regression (C = 0.1).",
        "- **deepchecks:** " + (DEEPCHECKS_TRIED + "." if dc_why else
                                "imports here, but the bench does not run it yet (" + DEEPCHECKS_TRIED + ")."), "",
        fmt_table(res), "",
        *(["Every finding that fired on a clean control (run stage and data stage):", "",
           clean_control_table(controls), ""] if controls else []),
    ])
    print(body)
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": as_json(res), "controls": {
            f"{d}/{s}": sorted(o["findings"]) for (d, s), o in controls.items()}}, indent=1), encoding="utf-8")
    if a.write:
        if load_too_high(load_before):
            print(f"refusing to write {a.write}: load average {load_before} > {MAX_LOAD} before the run",
                  file=sys.stderr)
            return 1
        replace_section(Path(a.write), SECTION, body + "\n")
        print(f"wrote section '{SECTION}' of {a.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
