"""`methodo compare RUN_DIR... | --experiment NAME`: runs side by side, and which differences are real.

The table the course shows from MLflow: one row per run, the config keys that differ between the
runs and the main test metrics with their bootstrap intervals as columns, plus the learning curves
overlaid. Each run is compared with the best one on the first metric:

- **paired bootstrap** when both runs predicted the same test rows (same ``row`` ids and true
  values in ``predictions_test.csv``): the rows are resampled together and the interval of the
  *difference* says whether it is real (it excludes 0) or within noise;
- otherwise the two runs' own intervals: disjoint means different, overlapping means not shown to
  differ (a conservative test).

A run given by an MLflow experiment is read from its run dir when the ``methodo.run_dir`` tag points
to one that still exists, else from what MLflow holds (params, test metrics, per-epoch curves; no
intervals then).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from methodo.errors import BadInput

MAX_RUNS = 200
PAIRED_REPLICATES = 1000  # resamples of the paired bootstrap (fewer above 20,000 rows: bounded work)
_DEFAULT_METRICS = ("accuracy", "f1", "roc_auc", "mae", "rmse", "r2", "iou", "perplexity")


@dataclass
class RunView:
    """One run as the comparison sees it."""

    label: str
    source: str  # run dir path, or "mlflow:RUN_ID"
    task: str | None
    params: dict[str, Any]
    test: dict[str, float | None]
    intervals: dict[str, list[float] | None] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)  # metrics.csv rows (epoch, train_loss, val_loss, ...)
    predictions: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (row ids, scores, y) on test
    level: float = 0.95


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flat(v, key))
        else:
            out[key] = v
    return out


def _history(rd) -> list[dict]:
    import csv
    import io

    if not rd.has("metrics.csv"):
        return []
    rows = []
    for r in csv.DictReader(io.StringIO(rd.read_text("metrics.csv"))):
        row = {}
        for k, v in r.items():
            try:
                row[k] = float(v)
            except (TypeError, ValueError):
                continue
        rows.append(row)
    return rows


def _predictions(rd, record) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(row ids, scores, y)`` of ``predictions_test.csv`` for classification (probabilities and class
    indices) and regression (predicted and true values); ``None`` for other tasks or a file that does
    not parse."""
    import csv
    import io

    if record.task not in ("classification", "regression") or not rd.has("predictions_test.csv"):
        return None
    reader = csv.reader(io.StringIO(rd.read_text("predictions_test.csv")))
    header = next(reader, None)
    body = list(reader)
    if not header or not body or header[:3] != ["row", "true", "predicted"]:
        return None
    try:
        rows = np.array([int(r[0]) for r in body])
        if record.task == "regression":
            return rows, np.array([float(r[2]) for r in body]), np.array([float(r[1]) for r in body])
        classes = (record.data.classes if record.data else None) or []
        index = {c: i for i, c in enumerate(classes)}
        probs = [i for i, h in enumerate(header) if h.startswith("p_")]
        if len(probs) != len(classes):
            return None
        y = np.array([index[r[1]] for r in body])
        scores = np.array([[float(r[i]) for i in probs] for r in body], dtype=np.float32)
        return rows, scores, y
    except (ValueError, KeyError, IndexError):
        return None


def load_run_dir(path: str | Path) -> RunView:
    """A run dir, read through :class:`~methodo.rundir.RunDir` (its summary validated)."""
    import yaml

    from methodo.rundir import RunDir

    rd = RunDir.open(path, needs="summary")
    record = rd.read_record()
    params = {}
    if rd.has("config.yaml"):
        try:
            cfg = yaml.safe_load(rd.read_text("config.yaml"))
        except yaml.YAMLError:
            raise BadInput(f"{rd.file('config.yaml')}: not valid YAML") from None
        params = _flat(cfg) if isinstance(cfg, dict) else {}
    level = params.get("evaluate.confidence", 0.95)
    return RunView(label=Path(path).name or str(path), source=str(path), task=record.task, params=params,
                   test=dict(record.metrics.get("test", {})), intervals=dict((record.intervals or {}).get("test", {})),
                   history=_history(rd), predictions=_predictions(rd, record),
                   level=level if isinstance(level, float) else 0.95)


def load_experiment(name: str, tracking_uri: str | None = None) -> list[RunView]:
    """The finished runs of MLflow experiment ``name``, oldest first."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri) if tracking_uri else MlflowClient()
    try:
        exp = client.get_experiment_by_name(name)
    except MlflowException as exc:
        raise BadInput(f"--experiment {name}: the tracking store cannot be read ({str(exc).splitlines()[0][:200]})") \
            from None
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise BadInput(f"--experiment {name}: no such MLflow experiment; experiments: {', '.join(names) or 'none'}")
    runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time ASC"], max_results=MAX_RUNS)
    views = []
    for r in runs:
        run_dir = r.data.tags.get("methodo.run_dir")
        if run_dir and Path(run_dir).is_dir():
            try:
                v = load_run_dir(run_dir)
                v.label = r.data.tags.get("methodo.run_name") or v.label
                views.append(v)
                continue
            except BadInput:
                pass  # a damaged run dir: fall back to what MLflow holds
        test = {k[5:]: v for k, v in r.data.metrics.items() if k.startswith("test_") and not k.endswith("_std")}
        history = _mlflow_history(client, r.info.run_id)
        views.append(RunView(label=r.data.tags.get("methodo.run_name") or r.info.run_name or r.info.run_id,
                             source=f"mlflow:{r.info.run_id}", task=r.data.params.get("task"),
                             params=dict(r.data.params), test=test, history=history))
    if not views:
        raise BadInput(f"--experiment {name}: no finished run in it")
    return views


def _mlflow_history(client, run_id: str) -> list[dict]:
    by_epoch: dict[int, dict] = {}
    for key in ("train_loss", "val_loss"):
        for m in client.get_metric_history(run_id, key):
            by_epoch.setdefault(int(m.step), {"epoch": float(m.step)})[key] = m.value
    return [by_epoch[e] for e in sorted(by_epoch)]


def default_metrics(runs: list[RunView]) -> list[str]:
    """Up to three of the usual headline metrics that every run has."""
    common = set.intersection(*(set(k for k, v in r.test.items()) for r in runs)) if runs else set()
    picked = [m for m in _DEFAULT_METRICS if m in common][:3]
    return picked or sorted(common)[:3]


def differing_params(runs: list[RunView]) -> list[str]:
    """Config keys whose value is not the same in every run (the run's name aside)."""
    keys = sorted(set().union(*(r.params for r in runs)))
    missing = object()
    out = []
    for k in keys:
        if k == "name":
            continue
        values = [repr(r.params.get(k, missing)) for r in runs]
        if len(set(values)) > 1:
            out.append(k)
    return out


def _higher_is_better(metric: str) -> bool:
    from methodo.evaluate.metrics import METRICS

    return METRICS.entry(metric).meta.get("higher_is_better", True) if metric in METRICS else True


def paired_difference(a: RunView, b: RunView, metric: str, *, seed: int = 0, level: float = 0.95
                      ) -> list[float] | None:
    """Percentile interval of ``metric(b) − metric(a)`` over paired resamples of the test rows both runs
    predicted, or ``None`` when they did not predict the same rows with the same true values."""
    from methodo.evaluate.bootstrap import paired_interval
    from methodo.evaluate.metrics import METRICS

    if a.predictions is None or b.predictions is None or a.task != b.task or metric not in METRICS:
        return None
    (ra, sa, ya), (rb, sb, yb) = a.predictions, b.predictions
    if len(ra) != len(rb) or len(ra) < 2:
        return None
    oa, ob = np.argsort(ra, kind="stable"), np.argsort(rb, kind="stable")
    if not (np.array_equal(ra[oa], rb[ob]) and np.array_equal(ya[oa], yb[ob])):
        return None
    return paired_interval(metric, sa[oa], sb[ob], ya[oa], seed=seed, level=level, replicates=PAIRED_REPLICATES)


def significance(best: RunView, other: RunView, metric: str) -> dict:
    """How ``other`` differs from ``best`` on ``metric``: ``{diff, interval, method, significant}``."""
    va, vb = best.test.get(metric), other.test.get(metric)
    diff = None if va is None or vb is None else vb - va
    if other is best:
        return {"diff": 0.0, "interval": None, "method": "best", "significant": False}
    iv = paired_difference(best, other, metric, level=best.level)
    if iv is not None:
        return {"diff": diff, "interval": iv, "method": "paired bootstrap", "significant": iv[0] > 0 or iv[1] < 0}
    ia, ib = best.intervals.get(metric), other.intervals.get(metric)
    if ia and ib:
        return {"diff": diff, "interval": None, "method": "interval overlap",
                "significant": ia[1] < ib[0] or ib[1] < ia[0]}
    return {"diff": diff, "interval": None, "method": "no interval", "significant": None}


@dataclass
class Comparison:
    runs: list[RunView]
    params: list[str]
    metrics: list[str]
    best: int  # index of the best run on metrics[0]
    tests: list[dict]  # per run: significance() of metrics[0] against the best

    def table(self) -> list[dict]:
        out = []
        for r, t in zip(self.runs, self.tests):
            out.append({"run": r.label, "source": r.source, **{p: r.params.get(p) for p in self.params},
                        **{m: r.test.get(m) for m in self.metrics},
                        **{f"{m}_interval": r.intervals.get(m) for m in self.metrics}, "vs_best": t})
        return out


def compare(runs: list[RunView], metrics: list[str] | None = None) -> Comparison:
    if not runs:
        raise BadInput("compare: give at least one RUN_DIR, or --experiment NAME")
    tasks = {r.task for r in runs if r.task}
    if len(tasks) > 1:
        raise BadInput(f"compare: the runs do different tasks ({', '.join(sorted(tasks))}); compare runs of one task")
    metrics = metrics or default_metrics(runs)
    if not metrics:
        raise BadInput("compare: the runs share no test metric (did they finish?)")
    for m in metrics:
        missing = [r.label for r in runs if m not in r.test]
        if missing:
            have = sorted(set.intersection(*(set(r.test) for r in runs)))
            raise BadInput(f"--metrics {m}: not a test metric of {missing[0]}; shared metrics: {', '.join(have)}")
    key = metrics[0]
    sign = 1 if _higher_is_better(key) else -1
    scored = [i for i, r in enumerate(runs) if r.test.get(key) is not None]
    best = max(scored, key=lambda i: sign * runs[i].test[key]) if scored else 0
    tests = [significance(runs[best], r, key) for r in runs]
    return Comparison(runs=runs, params=differing_params(runs), metrics=metrics, best=best, tests=tests)


def curves_figure(runs: list[RunView], path: Path) -> Path | None:
    """Validation (solid) and training (dashed) loss of every run against the epoch, one colour per run."""
    if not any(r.history for r in runs):
        return None
    from methodo.report.plots import _plt, _save

    fig, ax = _plt().subplots(figsize=(7, 4))
    for i, r in enumerate(runs):
        ep = [h.get("epoch") for h in r.history]
        color = f"C{i % 10}"
        if any("val_loss" in h for h in r.history):
            ax.plot(ep, [h.get("val_loss", np.nan) for h in r.history], color=color, label=f"{r.label} (val)")
        if any("train_loss" in h for h in r.history):
            ax.plot(ep, [h.get("train_loss", np.nan) for h in r.history], color=color, ls="--", alpha=0.6)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (solid: val, dashed: train)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def write_html(cmp: Comparison, path: Path) -> Path:
    """A self-contained page: the table, the tests, the overlaid learning curves."""
    import base64
    import tempfile

    from methodo.report.html import _CSS, _environment

    with tempfile.TemporaryDirectory() as tmp:
        fig = curves_figure(cmp.runs, Path(tmp) / "curves.png")
        png = base64.b64encode(fig.read_bytes()).decode("ascii") if fig else None
    html = _environment().get_template("compare.html.j2").render(c=cmp, rows=list(zip(cmp.runs, cmp.tests)), css=_CSS, curves=png)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path
