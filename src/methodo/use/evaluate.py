"""``methodo evaluate RUN_DIR DATA [--out DIR]``: a trained model on new labeled data, honestly.

DATA is a labeled CSV (the feature columns and the target column), a folder with one subfolder per
class of images, or a config whose ``data`` section names a dataset (every row of it is evaluated).
The model and its preprocessing come from the run dir (:class:`~methodo.use.predictor.Predictor`);
the new data is streamed in chunks. The evaluation gets what ``methodo run`` gives its test split:
the run's metric set with bootstrap intervals (the run's ``evaluate.bootstrap`` and confidence), the
dummy baselines fitted on the run's *training* labels (from ``drift.json``), the confusion matrix and
per-class table, the curves, the run checks that read predictions (constant predictions, no better
than a dummy, misleading accuracy, no signal, miscalibration), and the drift findings
(:mod:`methodo.use.drift`). Every number is shown beside the run's own test number.

It writes an output dir of its own (default ``runs/NAME-evaluate-TIMESTAMP-XXXX``), created
exclusively like a run dir: ``evaluation.json`` (:class:`EvaluationRecord`), ``evaluate.html``,
``predictions.csv`` and ``figures/``. Nothing is written when the data is refused.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from methodo.errors import BadInput, DataError, choices, short
from methodo.record import BootstrapInfo, FindingRecord, Metrics, _Record
from methodo.rundir import LAYOUT, RunDir

FILES = {"record": "evaluation.json", "report": "evaluate.html", "predictions": "predictions.csv"}


class EvaluationRecord(_Record):
    """``evaluation.json``: the model of ``run_dir`` on the data of ``data``."""

    run_dir: str
    run_name: str | None
    task: str
    data: str  # what was evaluated: a file, a folder, a dataset
    n: int
    metrics: dict[str, float | None]
    undefined: dict[str, str] | None = None
    intervals: dict[str, list[float] | None] | None = None
    bootstrap: BootstrapInfo | None = None
    baselines: Metrics
    tables: dict[str, Any] | None = None
    run_test: dict[str, float | None] | None = None  # the run's own test metrics, for comparison
    run_test_intervals: dict[str, list[float] | None] | None = None
    findings: list[FindingRecord]
    drift: dict[str, Any]  # the per-feature tests, or why there are none
    versions: dict[str, str]
    duration_s: float = 0.0
    _optional = frozenset({"undefined", "intervals", "bootstrap", "tables", "run_test", "run_test_intervals"})


class _Collected:
    """What the chunks of the new data add up to: scores, labels, ids, and the raw features drift reads."""

    def __init__(self):
        self.scores, self.y, self.ids = [], [], []
        self.features: dict[str, list] = {}
        self.categorical: dict[str, list] = {}

    def add(self, predictor, chunk, y):
        from methodo.use.drift import image_features

        self.scores.append(predictor.scores_of(chunk))
        self.y.append(y)
        self.ids.append(np.asarray(chunk.ids))
        s = predictor.schema
        if s.kind == "tabular":
            for j, c in enumerate(s.columns):
                self.features.setdefault(c, []).append(chunk.num[:, j])
            for j, c in enumerate(s.categorical):
                self.categorical.setdefault(c, []).append(chunk.cat[:, j])
        elif s.kind == "image":
            for name, v in image_features(chunk.num).items():
                self.features.setdefault(name, []).append(v)

    def arrays(self):
        cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731
        return (cat(self.scores), cat(self.y), cat(self.ids), {k: cat(v) for k, v in self.features.items()},
                {k: cat(v) for k, v in self.categorical.items()})


def _dataset_chunks(predictor, cfg_path: Path):
    """Every row of the dataset a config names, as chunks with labels (class names matched by name)."""
    from methodo.config import _read_yaml, validate
    from methodo.data import load_dataset
    from methodo.use.inputs import Chunk, check_numeric

    s = predictor.schema
    doc, node = _read_yaml(cfg_path)  # a whole config, or just its data section (the model is the run's)
    ds = load_dataset(validate({"model": {"name": s.model.name}, **doc}, source=str(cfg_path), node=node).data)
    if ds.kind != s.kind:
        raise DataError(f"{cfg_path}: dataset {ds.name!r} holds {ds.kind} data; the model reads {s.kind} data")
    if ds.task != s.task:
        raise DataError(f"{cfg_path}: dataset {ds.name!r} is a {ds.task} dataset; the model does {s.task}")
    y = ds.y
    if s.classes is not None and ds.class_names is not None and list(ds.class_names) != list(s.classes):
        missing = [c for c in ds.class_names if c not in s.classes]
        if missing:
            raise DataError(f"{cfg_path}: class {short(missing[0])} of dataset {ds.name!r} is not a class of the "
                            f"model ({choices(s.classes)})")
        y = np.asarray([s.classes.index(c) for c in ds.class_names])[ds.y]
    ids = ds.meta.get("path", ds.meta.get("row", np.arange(len(ds.y))))
    if s.kind == "tabular":
        have = list(ds.feature_names) + list(ds.cat_names)
        from methodo.use.inputs import check_columns

        check_columns(s, have, str(cfg_path))
        num = np.stack([ds.X[:, ds.feature_names.index(c)] for c in s.columns], 1).astype(np.float64) \
            if s.columns else np.zeros((len(ds.y), 0))
        cat = np.stack([ds.cat[:, ds.cat_names.index(c)] for c in s.categorical], 1) if s.categorical else None
        step = 65536
        for i in range(0, len(ds.y), step):
            part = num[i:i + step]
            yield Chunk(check_numeric(part, s, str(cfg_path), lambda r, i=i: f"row {ids[i + r]}"),
                        None if cat is None else cat[i:i + step], np.asarray(ids[i:i + step]), y[i:i + step])
        return
    want = (s.channels, *s.image_size) if s.kind == "image" else tuple(s.model.input_shape)
    if tuple(ds.X.shape[1:]) != tuple(want):
        raise DataError(f"{cfg_path}: dataset {ds.name!r} has inputs of shape {tuple(ds.X.shape[1:])}; the model "
                        f"takes {tuple(want)}")
    for i in range(0, len(ds.y), 1024):
        yield Chunk(ds.X[i:i + 1024], None, np.asarray(ids[i:i + 1024]), y[i:i + 1024])


def data_chunks(predictor, data: str | Path):
    """The labeled chunks of DATA (a CSV, a labeled image folder, a dataset config), with labels as the
    metrics take them."""
    from methodo.use import inputs

    p = Path(data)
    s = predictor.schema
    if p.suffix.lower() in (".yaml", ".yml"):
        for c in _dataset_chunks(predictor, p):
            yield c, c.y
        return
    if s.kind == "tabular":
        if p.is_dir():
            raise DataError(f"{p}: is a folder; the model of this run reads a labeled CSV file (or a dataset config)")
        for c in inputs.iter_csv(p, s, labels=True):
            yield c, predictor.labels(c.y, source=f"{p}: column {short(s.target)}")
        return
    if s.kind == "image":
        if not p.is_dir():
            raise DataError(f"{p}: an image model is evaluated on a folder with one subfolder per class "
                            f"({choices(s.classes or [])}), or on a dataset config")
        if not predictor.spec.has_classes:
            raise DataError(f"{p}: a {s.task} model is evaluated on a dataset config (labels per image cannot come "
                            "from folder names)")
        paths, labels = inputs.labeled_image_folder(p, s)
        for c in inputs.iter_images(paths, s, labels=labels):
            yield c, predictor.labels(c.y, source=str(p))
        return
    raise BadInput(f"{p}: language models are evaluated with `methodo evaluate-lm` (perplexity, benchmark suites)")


def evaluate_run(run_dir: str | Path, data: str | Path, *, out: str | Path | None = None,
                 progress: bool = True) -> tuple[RunDir, EvaluationRecord]:
    """Evaluate the model of ``run_dir`` on ``data``; writes the output dir and returns it with the record."""
    from methodo import diagnose as dg
    from methodo.evaluate import compute_metrics, metric_names
    from methodo.evaluate.baselines import baseline_metrics
    from methodo.evaluate.bootstrap import percentile_intervals
    from methodo.use import drift as drift_mod
    from methodo.use.predictor import load

    t0 = time.perf_counter()
    predictor = load(run_dir)
    s, spec = predictor.schema, predictor.spec
    if s.task == "language_modeling":
        raise BadInput(f"{run_dir}: language models are evaluated with `methodo evaluate-lm` (perplexity, "
                       "benchmark suites)")
    if s.kind == "series":
        raise BadInput(f"{run_dir}: a forecasting model is not evaluated on new data by `methodo evaluate` yet; "
                       "run its config with the new series as data.path (series_csv)")
    rd_run = RunDir(run_dir)
    record = predictor.record
    ecfg = _evaluate_config(rd_run)
    seed = record.seed if record is not None else 0

    # 1. Predict the new data chunk by chunk (bounded memory), keeping what the metrics and drift read.
    got = _Collected()
    for chunk, y in data_chunks(predictor, data):
        got.add(predictor, chunk, y)
    scores, y, ids, features, categorical = got.arrays()
    if not len(y):
        raise DataError(f"{data}: no rows to evaluate")
    n_classes = s.n_classes

    # 2. Metrics (the run's set), intervals, baselines fitted on the training labels, tables.
    run_test = dict((record.metrics or {}).get("test", {})) if record is not None else {}
    names = [m for m in run_test if m in metric_names(s.task)] or list(ecfg.metrics or metric_names(s.task))
    mi = spec.metric_input(scores)
    undefined: dict[str, str] = {}
    metrics = compute_metrics(s.task, mi, y, n_classes, names=names, undefined=undefined)
    intervals, boot = None, None
    if ecfg.bootstrap:
        intervals, boot = percentile_intervals(s.task, mi, y, n_classes, names=names, n_boot=ecfg.bootstrap,
                                               seed=seed, level=ecfg.confidence, budget=ecfg.bootstrap_budget,
                                               progress=progress)
    ref = _read_drift(rd_run)
    y_train = drift_mod.training_targets(ref, s.task) if ref else None
    baselines = {} if y_train is None else {
        k: {m: v for m, v in vals.items() if m in names}
        for k, vals in baseline_metrics(s.task, y_train, y, n_classes, seed=seed).items()}
    tables = spec.tables(scores, y, s.classes) if spec.tables is not None else None

    # 3. Findings: the run checks that read predictions, and the drift checks.
    decided = np.asarray(spec.decide(scores)).ravel() if spec.decide is not None else None
    facts = dg.Facts(task=s.task, metrics={"test": metrics}, baselines=baselines, test_pred=decided,
                     test_true=np.asarray(y).ravel() if decided is not None else None,
                     intervals=intervals or {}, undefined=undefined, class_names=s.classes)
    findings = dg.diagnose(facts)
    run_iv = ((record.intervals or {}).get("test", {}) if record is not None else {})
    dfacts = drift_mod.DriftFacts(task=s.task, reference=ref, features=features, categorical=categorical,
                                  y=y, class_names=s.classes, metrics=metrics, run_metrics=run_test,
                                  run_intervals=run_iv)
    if ref is not None:
        findings += drift_mod.check_drift(dfacts)
        drift = {"tests": drift_mod.feature_tests(dfacts), "alpha": drift_mod.ALPHA,
                 "train_rows": ref.get("n_train"), "train_sample": ref.get("sample_rows")}
    else:
        perf = drift_mod.performance_drop(dfacts)  # needs only the run's test intervals
        findings += [perf] if perf else []
        drift = {"skipped": f"{run_dir} has no {LAYOUT['drift']} (runs save it since issue 14): the drift checks "
                            "need the training statistics; re-run the config with `methodo run` to get them"}
    findings = sorted(findings, key=lambda x: dg.SEVERITY_ORDER.get(x.severity, 9))

    # 4. The output dir, created exclusively (nothing is written before: bad data leaves nothing behind).
    from methodo.stages import versions

    ev = EvaluationRecord(
        run_dir=str(run_dir), run_name=record.name if record is not None else None, task=s.task, data=str(data),
        n=int(len(y)), metrics=metrics, undefined=undefined or None, intervals=intervals, bootstrap=boot,
        baselines=baselines, tables=tables, run_test=run_test or None, run_test_intervals=run_iv or None,
        findings=[FindingRecord.model_validate(f.to_dict()) for f in findings], drift=_plain(drift),
        versions=versions())
    name = (record.name if record is not None else Path(run_dir).name) or "model"
    rd = RunDir.create(out, name=name, kind="evaluate", folders=("figures",))
    _write_predictions(rd, predictor, ids, y, scores)
    _figures(rd, predictor, scores, y, tables)
    ev.duration_s = round(time.perf_counter() - t0, 3)
    rd.write_text(FILES["record"], ev.model_dump_json(indent=2))
    render(rd)
    return rd, ev


def _plain(obj):
    """JSON-safe copy (numpy scalars to Python numbers)."""
    import json

    return json.loads(json.dumps(obj, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def _evaluate_config(rd: RunDir):
    """The run's ``evaluate`` section (bootstrap count, confidence, metrics), or the defaults."""
    from methodo.config import EvaluateConfig, load_config

    if rd.has(LAYOUT["config"]):
        try:
            return load_config(rd.file(LAYOUT["config"])).evaluate
        except BadInput:
            pass
    return EvaluateConfig()


def _read_drift(rd: RunDir) -> dict | None:
    if not rd.has(LAYOUT["drift"]):
        return None
    ref = rd.read_json(LAYOUT["drift"])
    if not isinstance(ref, dict) or not isinstance(ref.get("features", {}), dict):
        raise BadInput(f"{rd.file(LAYOUT['drift'])}: not a drift statistics file methodo wrote")
    return ref


def _write_predictions(rd: RunDir, predictor, ids, y, scores) -> None:
    s, spec = predictor.schema, predictor.spec
    id_name = "path" if s.kind == "image" else "row"
    if spec.has_classes:
        names = s.classes
        rd.write_csv(FILES["predictions"], [id_name, "true", "predicted", *[f"p_{c}" for c in names]], (
            [i, names[int(t)], names[int(p.argmax())], *[f"{v:.6f}" for v in p]] for i, t, p in zip(ids, y, scores)))
    elif s.task == "multilabel":
        joined = lambda row: "|".join(n for n, v in zip(s.classes, row) if v >= 0.5)  # noqa: E731
        rd.write_csv(FILES["predictions"], [id_name, "true", "predicted", *[f"p_{c}" for c in s.classes]], (
            [i, joined(t), joined(p), *[f"{v:.6f}" for v in p]] for i, t, p in zip(ids, y, scores)))
    elif spec.standardize_target:
        rd.write_csv(FILES["predictions"], [id_name, "true", "predicted"],
                     ([i, f"{float(t):.6g}", f"{float(p):.6g}"] for i, t, p in zip(ids, y, scores)))


def _figures(rd: RunDir, predictor, scores, y, tables) -> None:
    from methodo.report import plots

    s, spec = predictor.schema, predictor.spec
    if spec.has_classes:
        plots.confusion_matrix(tables["confusion_matrix"], s.classes, rd.figure("confusion_matrix.png"))
        plots.roc_curves(scores, y, s.classes, rd.figure("roc.png"))
        plots.pr_curves(scores, y, s.classes, rd.figure("pr.png"))
        plots.reliability(scores, y, rd.figure("reliability.png"))
    elif s.task == "multilabel" and tables:
        plots.per_label(tables["per_label"], rd.figure("per_label.png"))
    elif spec.standardize_target:
        plots.regression_fit(scores, y, rd.figure("regression_fit.png"))


def render(out_dir: str | Path | RunDir) -> Path:
    """(Re-)write ``evaluate.html`` from ``evaluation.json`` and the figures (autoescaped template)."""
    import base64

    from methodo.report.html import FIGURES, _CSS, _COLUMN_LABEL, _environment

    rd = out_dir if isinstance(out_dir, RunDir) else RunDir(out_dir)
    text = rd.read_text(FILES["record"])
    try:
        ev = EvaluationRecord.model_validate_json(text)
    except ValueError as exc:
        raise BadInput(f"{rd.file(FILES['record'])}: not a valid evaluation record "
                       f"({str(exc).splitlines()[1] if len(str(exc).splitlines()) > 1 else exc})") from None
    figures = []
    for name, title in FIGURES.items():
        if rd.has(f"figures/{name}"):
            figures.append((title.replace(" (test)", ""), base64.b64encode(rd.read_bytes(f"figures/{name}")).decode()))
    html = _environment().get_template("evaluate.html.j2").render(e=ev, figures=figures, css=_CSS,
                                                                    column_label=_COLUMN_LABEL)
    return rd.write_text(FILES["report"], html)
