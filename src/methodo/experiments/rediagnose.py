"""`methodo diagnose RUN_DIR`: recompute a run's findings from its run dir alone and compare them with the
findings recorded in its ``summary.json``.

Every finding family is recomputed by the same pure checks the run used, fed from files instead of memory:

- **data stage** (:func:`methodo.data.audit.audit`): the data ``config.yaml`` names (or ``--data PATH``),
  loaded as the run loaded it and checked against the sha256 digest the run recorded (``data.digest``), split
  by ``splits.csv`` (never split again);
- **run stage** (:func:`methodo.diagnose.diagnose` over :class:`~methodo.diagnose.Facts`): the learning curves
  from ``metrics.csv``, the decided test predictions from ``predictions_test.csv``, the metrics, intervals,
  baselines, reference model, transfer results and skipped batches from ``summary.json``, the weight
  statistics from ``monitor.json``, the label-issue search repeated by cleanlab over ``label_scores.csv``
  (the out-of-sample scores the run's search read, at full precision), the split sizes from ``splits.csv``
  and the validation-loss standard error from ``summary.json`` → ``diagnosis``;
- **trust** (:func:`methodo.trust.findings.trust_findings`): ``summary.json`` → ``fairness`` and ``robustness``;
- **transfer**: the transfer checks are run-stage checks reading ``summary.json`` → ``transfer``.

The comparison is by finding id: the same ids, and for each the same severity, title, evidence and action.
Numbers are compared exactly (they went through JSON, or were recomputed from the same full-precision
inputs), except in the findings listed in :data:`FROM_PREDICTION_TEXT` for tasks whose test predictions are
values (regression): ``predictions_test.csv`` keeps those with 6 significant digits, so each number of such
a finding (in the evidence or inside its texts) must agree within one unit in the last digit written
(the finer of the two), and everything else exactly.

Examples
--------
>>> from methodo.experiments.rediagnose import rediagnose
>>> rep = rediagnose("runs/breast-cancer")      # doctest: +SKIP
>>> rep.equal, rep.verdict                      # doctest: +SKIP
(True, '2 findings recomputed from the run dir: all equal to the recorded ones')
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from methodo.errors import BadInput
from methodo.rundir import LAYOUT, RunDir

# Findings whose evidence reads the test predictions, when those are values re-read from the text of
# predictions_test.csv (6 significant digits: regression); compared within one unit in the last digit written.
FROM_PREDICTION_TEXT = ("constant_predictions", "no_signal")
SPLITS = ("train", "val", "test")


@dataclass
class Rediagnosis:
    """The findings recomputed from a run dir, beside the recorded ones."""

    run_dir: str
    files: list[str]  # the run dir's files read
    data: dict  # what data was read: {source, path, digest}
    findings: list[dict]  # recomputed, as summary.json writes them
    recorded: list[dict]
    differences: list[dict] = field(default_factory=list)  # {id, what: missing|extra|differs, field, recorded, now}
    tolerant: list[str] = field(default_factory=list)  # ids compared within one unit in the last digit written

    @property
    def equal(self) -> bool:
        return not self.differences

    @property
    def verdict(self) -> str:
        n = len(self.findings)
        head = f"{n} finding{'s' * (n != 1)} recomputed from the run dir"
        if self.equal:
            said = "all equal to the recorded ones" if n else "none recorded either"
            tol = [i for i in self.tolerant if any(f["id"] == i for f in self.findings)]
            if tol:
                said += (f" ({', '.join(tol)} within one unit in the last digit written: re-derived from the "
                         f"6-digit values of {LAYOUT['predictions_test']})")
            return f"{head}: {said}"
        return f"{head}: {describe(self.differences)}"

    def to_dict(self) -> dict:
        return {"run_dir": self.run_dir, "files": self.files, "data": self.data, "equal": self.equal,
                "verdict": self.verdict, "findings": self.findings, "recorded": self.recorded,
                "differences": self.differences, "tolerance": {
                    "findings": self.tolerant,
                    "rule": "numbers within one unit in the last digit written (the finer of the two); "
                            "all other values exactly equal"}}


def describe(differences: list[dict], limit: int = 3) -> str:
    """The differences in one line: which findings differ and how (the first ``limit`` fields of each)."""
    ids = list(dict.fromkeys(d["id"] for d in differences))
    parts = []
    for i in ids:
        ds = [d for d in differences if d["id"] == i]
        if ds[0]["what"] == "missing":
            parts.append(f"{i} is recorded but not found again")
        elif ds[0]["what"] == "extra":
            parts.append(f"{i} is found but was not recorded")
        else:
            shown = "; ".join(f"{d['field']}: recorded {_short(d['recorded'])}, now {_short(d['now'])}"
                              for d in ds[:limit])
            parts.append(f"{i} ({shown}{'; ...' if len(ds) > limit else ''})")
    return f"{len(ids)} differ{'s' * (len(ids) == 1)} from the recorded ones: " + "; ".join(parts)


def _short(v: Any, width: int = 60) -> str:
    text = json.dumps(v, default=str, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return text if len(text) <= width else text[:width - 3] + "..."


# --------------------------------------------------------------------------- the command


def rediagnose(run_dir: str | Path, *, data: str | Path | None = None) -> Rediagnosis:
    """Recompute the findings of ``run_dir`` from its files (and the data it names, or ``data``), and compare
    them with ``summary.json`` → ``findings``. Bad input (not a run dir, a damaged or missing file, other
    data than the run's) raises :class:`~methodo.errors.BadInput` naming the file."""
    from methodo import diagnose as dg
    from methodo import stages
    from methodo.data.audit import AuditFacts, audit
    from methodo.record import FindingRecord
    from methodo.tasks import task_spec
    from methodo.trust.findings import trust_findings

    rd = RunDir.open(run_dir, needs="summary")
    record = rd.read_record()
    raw = rd.read_json(LAYOUT["summary"])  # the findings as written (JSON), compared as such
    files = [LAYOUT["summary"]]
    where = rd.file(LAYOUT["summary"])
    if record.kfold is not None:
        raise BadInput(f"{rd.path}: a k-fold run; its findings are its folds' (each finding at its most severe "
                       f"fold): diagnose each fold, e.g. methodo diagnose {rd.path}/{LAYOUT['folds']}/fold-1")
    if record.status != "finished":
        raise BadInput(f"{rd.path}: the run did not finish (status {record.status!r}): its findings were not all "
                       "made; resume it (methodo run --resume) before checking them")
    cfg = _read_config(rd)
    files.append(LAYOUT["config"])
    if record.diagnosis is None:
        raise BadInput(f"{where}: no diagnosis section (the validation-loss standard error the overfitting check "
                       f"reads): the run was made by an older methodo; re-run it (methodo reproduce {rd.path}) "
                       "to check its findings")
    spec = task_spec(record.task)
    if spec.pixel_classes:
        raise BadInput(f"{rd.path}: a {record.task} run: the per-pixel test predictions the constant_predictions "
                       "check reads are not kept in the run dir, so its findings cannot be recomputed from it")

    # 1. The run dir's files (cheap, read first: a damaged one is found before the data is loaded).
    indices = read_splits(rd)
    history = read_history(rd)
    files += [LAYOUT["splits"], LAYOUT["metrics"]]
    classes = record.data.classes if record.data is not None else None
    test_rows = test_pred = None
    if spec.decide is not None:
        test_rows, test_pred = read_test_predictions(rd, spec, classes)
        files.append(LAYOUT["predictions_test"])
        if not np.array_equal(test_rows, indices["test"]):
            raise BadInput(f"{rd.file(LAYOUT['predictions_test'])}: its rows are not the test rows of "
                           f"{LAYOUT['splits']} (in their order)")
    scores = None
    if spec.label_issues is not None:
        scores = read_label_scores(rd, classes, cfg, indices)
        files.append(LAYOUT["label_scores"])
    monitor = []
    if cfg.train.monitor.enabled:
        monitor = read_monitor(rd)
        files.append(LAYOUT["monitor"])

    # 2. The data, as the run read it (checked by its digest), split by splits.csv: the audit.
    ds, data_info = load_run_data(cfg, record, data, rd)
    named = [(LAYOUT["splits"], np.concatenate(list(indices.values())))]
    named += [(LAYOUT["label_scores"], scores[0])] if scores is not None else []
    for name, rows in named:
        if len(rows) and rows.max() >= len(ds.y):
            raise BadInput(f"{rd.file(name)}: names row {int(rows.max())}, beyond the data's {len(ds.y)} rows")
    data_findings = audit(AuditFacts.from_dataset(ds, indices), max_queries=2000)

    # 3. The run checks: the facts the run gave them, from the files (and the data's labels).
    test_true = None if test_rows is None else np.asarray(ds.y[test_rows]).ravel()
    issues = None
    if scores is not None:
        issues = search_label_issues(scores, ds, spec, cfg)
    facts = dg.Facts(
        task=record.task, history=history, metrics=record.metrics, baselines=record.baselines,
        test_pred=test_pred, test_true=test_true, intervals=(record.intervals or {}).get("test", {}),
        undefined=(record.undefined or {}).get("test", {}), class_names=ds.class_names,
        lr=cfg.train.optimizer.lr, label_issues=issues, monitor=monitor,
        skipped_batches=record.training.skipped_batches if record.training else [],
        reference=record.reference.model_dump() if record.reference else None,
        transfer=record.transfer.model_dump() if record.transfer else None,
        n_rows={s: int(len(ix)) for s, ix in indices.items()}, val_loss_se=record.diagnosis.val_loss_se)

    # 4. Trust, from what the fairness and robustness stages measured; every finding, as the run sorted them.
    found = sorted(data_findings + dg.diagnose(facts) + trust_findings(record.fairness, record.robustness),
                   key=lambda x: dg.SEVERITY_ORDER.get(x.severity, 9))
    for f in found:  # the suspects' feature values, as the run attached them
        if f.id == "label_errors" and ds.kind == "tabular":
            stages.attach_inputs(f.evidence["top"], ds)
    now = [json.loads(json.dumps(FindingRecord.model_validate(f.to_dict()).model_dump(), default=str))
           for f in found]
    recorded = raw.get("findings") if isinstance(raw, dict) else None
    tolerant = list(FROM_PREDICTION_TEXT) if (spec.decide is not None and not spec.decided_classes
                                              and spec.label_issues is None) else []
    return Rediagnosis(run_dir=str(rd.path), files=files, data=data_info, findings=now, recorded=recorded,
                       differences=compare(recorded, now, tolerant=tolerant), tolerant=tolerant)


# --------------------------------------------------------------------------- reading the run dir


def _read_config(rd: RunDir):
    from methodo.config import load_config

    path = rd.file(LAYOUT["config"])
    if not rd.has(LAYOUT["config"]):
        raise BadInput(f"{path}: missing: the run's resolved config, which says what data it read")
    rd.read_text(LAYOUT["config"])  # guarded read (no link, bounded size) before the loader opens it
    try:
        return load_config(path)
    except BadInput as exc:
        raise BadInput(f"{path}: no longer a valid config: {exc}") from None


def _needed(rd: RunDir, name: str, what: str) -> None:
    if not rd.has(name):
        raise BadInput(f"{rd.file(name)}: missing: {what}")


def _arrow_table(rd: RunDir, name: str, types: dict, what: str, *, prefix: str | None = None):
    """The columns ``types`` (and those whose name starts with ``prefix``, as float64) of the CSV ``name``;
    :class:`BadInput` naming the file, the column or the row that is wrong."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    _needed(rd, name, what)
    path = rd.file(name)
    body = rd.read_bytes(name)
    first = body.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")
    header = next(csv.reader([first]), [])
    absent = [c for c in types if c not in header]
    if absent:
        raise BadInput(f"{path}: no column {absent[0]!r} (header: {first[:200]!r}); not a file methodo wrote")
    extra = [c for c in header if prefix is not None and c.startswith(prefix)]
    types = {**types, **{c: pa.float64() for c in extra}}
    try:
        table = pacsv.read_csv(pa.BufferReader(body), convert_options=pacsv.ConvertOptions(
            column_types=types, include_columns=list(types), null_values=[], strings_can_be_null=False,
            quoted_strings_can_be_null=False))
    except (pa.ArrowException, ValueError) as exc:
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"{path}: not a CSV file methodo wrote ({said[:300]})") from None
    return table, extra


def read_splits(rd: RunDir) -> dict[str, np.ndarray]:
    """``splits.csv`` → ``{split: sorted row ids}``, in the order train, val, test (the run's indices)."""
    table, _ = _arrow_table(rd, LAYOUT["splits"], _types(row="int64", split="string"),
                            "every row of the data and its split (kept by methodo since issue 12)")
    rows = table.column("row").to_numpy()
    enc = table.column("split").combine_chunks().dictionary_encode()
    names, codes = enc.dictionary.to_pylist(), enc.indices.to_numpy(zero_copy_only=False)
    path = rd.file(LAYOUT["splits"])
    bad = sorted(set(names) - set(SPLITS))
    if bad:
        raise BadInput(f"{path}: split {bad[0][:40]!r} is not train, val or test")
    split = np.asarray(names, dtype=object)[codes] if len(names) else np.zeros(0, dtype=object)
    if len(rows) and rows.min() < 0:
        raise BadInput(f"{path}: row {int(rows.min())} is negative")
    uniq, counts = np.unique(rows, return_counts=True)
    if (counts > 1).any():
        raise BadInput(f"{path}: row {int(uniq[counts > 1][0])} is listed {int(counts.max())} times")
    out = {s: np.sort(rows[split == s]).astype(np.int64) for s in SPLITS if (split == s).any()}
    if "train" not in out or "test" not in out:
        raise BadInput(f"{path}: no {'train' if 'train' not in out else 'test'} row; not a file methodo wrote")
    return out


def _types(**kinds):
    import pyarrow as pa

    return {k: getattr(pa, v)() for k, v in kinds.items()}


_INT = re.compile(r"-?\d+")


def read_history(rd: RunDir) -> list[dict]:
    """``metrics.csv`` → the epoch rows as the loop made them: integers as ints, numbers as the floats whose
    text Python wrote (``repr``: exact), an empty cell as ``None``."""
    name = LAYOUT["metrics"]
    _needed(rd, name, "the learning curves (one row per epoch)")
    path = rd.file(name)
    reader = csv.reader(io.StringIO(rd.read_text(name), newline=""))
    header = next(reader, None)
    if not header or "epoch" not in header:
        raise BadInput(f"{path}: no header with an epoch column; not a file methodo wrote")
    rows = []
    for line, cells in enumerate(reader, 2):
        if not cells:
            continue
        if len(cells) != len(header):
            raise BadInput(f"{path}: line {line}: {len(cells)} fields where the header has {len(header)}")
        row = {}
        for k, v in zip(header, cells):
            try:
                row[k] = None if v == "" else int(v) if _INT.fullmatch(v) else float(v)
            except ValueError:
                raise BadInput(f"{path}: line {line}, column {k!r}: {v[:40]!r} is not a number") from None
        rows.append(row)
    if not rows:
        raise BadInput(f"{path}: no epoch row")
    return rows


def read_test_predictions(rd: RunDir, spec, class_names: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """``predictions_test.csv`` → ``(row ids, decided predictions)`` as the checks read them: class indices
    (one class per row), 0/1 per label flattened (multi-label), or the predicted values (6 significant digits)."""
    name = LAYOUT["predictions_test"]
    path = rd.file(name)
    values = spec.decide is not None and not spec.decided_classes and spec.label_issues is None
    table, _ = _arrow_table(rd, name, _types(row="int64", predicted="float64" if values else "string"),
                            "the test predictions")
    rows = table.column("row").to_numpy().astype(np.int64)
    if values:
        return rows, table.column("predicted").to_numpy()
    said = table.column("predicted").to_pylist()
    names = list(class_names or [])
    code = {n: i for i, n in enumerate(names)}
    if spec.label_issues == "multilabel":  # the labels present, joined by "|"
        bits = np.zeros((len(said), len(names)), dtype=np.int64)
        for i, text in enumerate(said):
            for part in filter(None, text.split("|")):
                if part not in code:
                    raise BadInput(f"{path}: row {int(rows[i])}: predicted label {part[:40]!r} is not one of the "
                                   "run's labels")
                bits[i, code[part]] = 1
        return rows, bits.ravel()
    out = np.empty(len(said), dtype=np.int64)
    for i, text in enumerate(said):
        if text not in code:
            raise BadInput(f"{path}: row {int(rows[i])}: predicted class {text[:40]!r} is not one of the run's "
                           "classes")
        out[i] = code[text]
    return rows, out


def read_monitor(rd: RunDir) -> list[dict]:
    name = LAYOUT["monitor"]
    _needed(rd, name, "the weight and gradient statistics (train.monitor.enabled is on in config.yaml)")
    mon = rd.read_json(name)
    if not isinstance(mon, list) or not all(isinstance(r, dict) and isinstance(r.get("layers"), dict)
                                            and "epoch" in r for r in mon):
        raise BadInput(f"{rd.file(name)}: not a list of epoch records with layers; not a file methodo wrote")
    return mon


def read_label_scores(rd: RunDir, classes: list[str] | None, cfg, indices: dict):
    """``label_scores.csv`` → ``(rows, splits, scores)``: what the run's label-issue search read, the scores as
    the float64 values written (shortest round-trip text: exact)."""
    name = LAYOUT["label_scores"]
    if not rd.has(name):
        raise BadInput(f"{rd.file(name)}: missing: the scores the label-issue search read, kept by methodo runs "
                       "since `methodo diagnose` exists; this run dir was made by an older methodo: re-run it "
                       f"(methodo reproduce {rd.path}) to check its findings")
    table, cols = _arrow_table(rd, name, _types(row="int64", split="string"), "", prefix="p_")
    path = rd.file(name)
    names = list(classes or [])
    if len(cols) != len(names):
        raise BadInput(f"{path}: {len(cols)} score columns for the {len(names)} classes of the run")
    rows = table.column("row").to_numpy().astype(np.int64)
    if len(rows) and rows.min() < 0:
        raise BadInput(f"{path}: row {int(rows.min())} is negative")
    if cfg.evaluate.label_issues != "cross_val":  # the run's own scores: its validation, then test rows
        held_out = np.concatenate([indices.get(s, np.zeros(0, np.int64)) for s in ("val", "test")])
        if not np.array_equal(rows, held_out):
            raise BadInput(f"{path}: its rows are not the validation and test rows of {LAYOUT['splits']}")
    splits = np.asarray(table.column("split").to_pylist(), dtype=object)
    proba = np.stack([table.column(c).to_numpy() for c in cols], 1) if cols else np.zeros((len(rows), 0))
    return rows, splits, proba


def search_label_issues(scores, ds, spec, cfg):
    """The label-issue search again (:func:`methodo.evaluate.label_issues.find_label_issues`, as
    :func:`methodo.stages.label_issues` calls it) over what the run's search read and the data's labels."""
    from methodo.evaluate.label_issues import find_label_issues

    rows, splits, proba = scores
    multilabel = spec.label_issues == "multilabel"
    if cfg.evaluate.label_issues == "cross_val":
        return find_label_issues(proba, ds.y[rows], rows=rows, splits=splits, class_names=ds.class_names,
                                 multilabel=multilabel, method="cross_val", folds=cfg.evaluate.label_folds)
    return find_label_issues(proba, ds.y[rows], rows=rows, splits=splits, class_names=ds.class_names,
                             multilabel=multilabel)


def load_run_data(cfg, record, data: str | Path | None, rd: RunDir):
    """The dataset as the run read it (loaded, its task set, raw text tokenized), checked against the digest
    the run recorded; and ``{source, path, digest}``."""
    from methodo import stages
    from methodo.data import load_dataset
    from methodo.tasks import task_spec

    data_cfg = cfg.data if data is None else cfg.data.model_copy(update={"path": str(data)})
    named = f"--data {data}" if data is not None else (
        f"data.path {cfg.data.path}" if cfg.data.path else f"data.source {cfg.data.source}")
    recorded = record.data.digest if record.data is not None else None
    if recorded is None:
        raise BadInput(f"{rd.file(LAYOUT['summary'])}: no data.digest (the sha256 of the data the run read): the "
                       "run was made by an older methodo, so the data cannot be checked against it")
    try:
        ds = load_dataset(data_cfg)
    except BadInput as exc:
        if data is not None:
            raise type(exc)(f"--data {data}: {exc}") from None
        raise type(exc)(f"{exc} (the data {rd.file(LAYOUT['config'])} names; give it with --data PATH)") from None
    if cfg.task is not None and cfg.task != ds.task and ds.task in task_spec(cfg.task).data_tasks:
        import dataclasses

        ds = dataclasses.replace(ds, task=cfg.task)
    if ds.kind == "text" and ds.X.dtype == object:  # raw text: tokenized as the run tokenized it
        ds = stages.tokenize_dataset(cfg, ds)
    digest = ds.digest()
    if digest != recorded:
        raise BadInput(f"{named}: not the data this run read: its sha256 digest is {digest}, the run recorded "
                       f"{recorded} ({rd.file(LAYOUT['summary'])} → data.digest)")
    return ds, {"source": cfg.data.source, "path": None if data_cfg.path is None else str(data_cfg.path),
                "digest": digest}


# --------------------------------------------------------------------------- comparing


def compare(recorded: list[dict] | None, now: list[dict], *, tolerant=()) -> list[dict]:
    """The differences between the recorded findings and the recomputed ones, by id: a finding recorded and not
    found again (``missing``), found and not recorded (``extra``), or with another value at some ``field``
    (``differs``: a dotted path into the finding). ``tolerant`` ids are compared number by number within one
    unit in the last digit written."""
    recorded = recorded or []
    old = {f.get("id"): f for f in recorded if isinstance(f, dict)}
    new = {f["id"]: f for f in now}
    out = []
    for i in old:
        if i not in new:
            out.append({"id": i, "what": "missing", "field": None, "recorded": old[i], "now": None})
    for i, f in new.items():
        if i not in old:
            out.append({"id": i, "what": "extra", "field": None, "recorded": None, "now": f})
            continue
        for path, a, b in _diff(old[i], f, "", i in tolerant):
            out.append({"id": i, "what": "differs", "field": path, "recorded": a, "now": b})
    return out


def _diff(a, b, path: str, tolerant: bool):
    """``(path, a, b)`` for every place where ``a`` (recorded) and ``b`` (now) differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            sub = f"{path}.{k}" if path else str(k)
            if k not in a or k not in b:
                yield sub, a.get(k), b.get(k)
            else:
                yield from _diff(a[k], b[k], sub, tolerant)
        return
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield path, a, b
            return
        for i, (x, y) in enumerate(zip(a, b)):
            yield from _diff(x, y, f"{path}[{i}]", tolerant)
        return
    if not _same(a, b, tolerant):
        yield path, a, b


def _same(a, b, tolerant: bool) -> bool:
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if num(a) and num(b):
        if a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
            return True
        return tolerant and _within_last_digit(json.dumps(a), json.dumps(b))
    if isinstance(a, str) and isinstance(b, str) and tolerant and a != b:
        ta, tb = _NUMBER.split(a), _NUMBER.split(b)
        na, nb = _NUMBER.findall(a), _NUMBER.findall(b)
        return ta == tb and len(na) == len(nb) and all(_within_last_digit(x, y) for x, y in zip(na, nb))
    return type(a) is type(b) and a == b


_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def _unit(text: str) -> float:
    """One unit in the last digit of a number as written: ``0.0123`` → 1e-4, ``3.1e-05`` → 1e-6, ``12`` → 1."""
    mantissa, _, exp = text.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (int(exp or 0) - decimals)


def _within_last_digit(a: str, b: str) -> bool:
    try:
        x, y = float(a), float(b)
    except ValueError:
        return a == b
    return abs(x - y) <= min(_unit(a), _unit(b)) * (1 + 1e-9)
