"""Contracts over every registered entry of every registry.

The parameters are read from the registries at collection time, so registering a new metric,
finding, dataset, task, model, optimizer, scheduler, regularizer, augmentation, feature step or
function, split, balancer or explainer puts it under these tests with no edit here. A contract is
what every entry of its registry must do, whatever it computes: a metric is at its declared best on
a perfect prediction, a finding is well-formed, a model learns a fixed batch and survives a
safetensors round trip, a split covers every row once, and so on.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import methodo
from methodo.registry import REGISTRIES, Registry

SRC = Path(methodo.__file__).resolve().parent


def _entries(registry: str) -> list:
    """One pytest parameter per entry of ``REGISTRIES[registry]``, read at collection time."""
    return [pytest.param(e, id=e.name) for e in REGISTRIES.get(registry).entries()]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- the registries themselves

CONTRACTS = {"augmentations", "balancers", "datasets", "explainers", "feature_functions", "features", "findings",
             "labs", "metrics", "models", "optimizers", "pruners", "regularizers", "samplers", "schedulers", "splits",
             "strategies", "tasks"}


def test_every_listed_registry_has_a_contract_here():
    assert set(REGISTRIES.names()) == CONTRACTS, "add a contract for the new registry to tests/test_contracts.py"


def test_every_registry_in_the_code_is_listed():
    """A ``X = Registry(...)`` anywhere in methodo is reachable from REGISTRIES (so `methodo list` shows it)."""
    import importlib

    listed = [REGISTRIES.get(n) for n in REGISTRIES.names()]
    found = []
    for path in SRC.rglob("*.py"):
        for name in re.findall(r"^(\w+) = Registry\(", path.read_text(encoding="utf-8"), flags=re.M):
            if name == "REGISTRIES":
                continue
            module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
            obj = getattr(importlib.import_module(module), name)
            found.append(f"{module}:{name}")
            assert isinstance(obj, Registry) and any(obj is r for r in listed), f"{module}:{name} is not in REGISTRIES"
    assert len(found) >= len(listed)


def test_every_entry_has_a_one_line_help():
    for name in REGISTRIES.names():
        for e in REGISTRIES.get(name).entries():
            assert e.help.strip() and "\n" not in e.help, (name, e.name)


# --------------------------------------------------------------------------- tasks

TASK_NAMES = REGISTRIES.get("tasks").names()
# The data of each task, for the contracts below: which inputs its models read, and a batch of the
# model's raw outputs with matching targets. A new task fails here until it gets a line.
_TASK_KINDS = {"classification": ("image", "tabular", "text"), "regression": ("image", "tabular"),
               "multilabel": ("image", "tabular"), "segmentation": ("image",), "language_modeling": ("text",),
               "graph_classification": ("graph",), "forecasting": ("series",),
               "generation": ("image",)}


def _task_batch(task: str, *, n: int = 6, classes: int = 3, vocab: int = 11, seq: int = 12, side: int = 16,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(raw model output, target)`` of random values for ``task``."""
    g = _gen(seed)
    if task in ("classification", "graph_classification"):
        return torch.randn(n, classes, generator=g), torch.randint(0, classes, (n,), generator=g)
    if task == "regression":
        return torch.randn(n, 1, generator=g), torch.randn(n, generator=g)
    if task == "multilabel":
        return torch.randn(n, classes, generator=g), torch.randint(0, 2, (n, classes), generator=g).float()
    if task == "segmentation":
        return torch.randn(n, classes, side, side, generator=g), torch.randint(0, classes, (n, side, side), generator=g)
    if task == "language_modeling":
        return torch.randn(n, seq, vocab, generator=g), torch.randint(0, vocab, (n, seq), generator=g)
    if task == "forecasting":  # horizon 4; targets as the evaluation sees them (+ baselines, MASE scale)
        return torch.randn(n, 4, generator=g), _forecast_targets(torch.randn(n, 4, generator=g), g)
    if task == "generation":  # [predicted noise, drawn noise] of `classes`-channel images; y: the image's class
        return torch.randn(n, 2, classes, side, side, generator=g), torch.randint(0, classes, (n,), generator=g)
    raise AssertionError(f"no batch for task {task!r}: add one to _task_batch in tests/test_contracts.py")


def _forecast_targets(y: torch.Tensor, g) -> torch.Tensor:
    """Forecasting targets ``(n, h)`` widened as methodo.tasks.forecasting.eval_targets does: the last,
    seasonal and moving-average forecasts, then the MASE scale (0.5) in every row."""
    n, h = y.shape
    base = [y + torch.randn(n, h, generator=g, dtype=y.dtype) for _ in range(3)]
    return torch.cat([y, *base, torch.full((n, 1), 0.5, dtype=y.dtype)], 1)


def test_every_task_has_test_data_here():
    assert set(TASK_NAMES) == set(_TASK_KINDS)


@pytest.mark.parametrize("entry", _entries("tasks"))
def test_task_loss_is_finite_and_its_score_a_sum_and_a_count(entry):
    from methodo.evaluate.metrics import metric_names

    spec = entry.obj
    assert spec.name == entry.name
    out, y = _task_batch(entry.name)
    out.requires_grad_(True)
    loss = spec.loss(out, y, None)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert out.grad is not None and torch.isfinite(out.grad).all()
    assert torch.isfinite(spec.loss(out.detach(), y, None, label_smoothing=0.1) if entry.name != "regression"
                          else spec.loss(out.detach(), y, None))
    s, count = spec.batch_score(out.detach(), y)
    assert isinstance(s, torch.Tensor) and s.ndim == 0  # summed on the device: no host read per batch
    s = float(s)
    assert math.isfinite(s) and s >= 0
    assert isinstance(count, int) and 0 < count <= y.numel()  # rows, pixels or tokens
    assert math.isfinite(spec.finish(s / count))
    # the epoch score is one of the task's metrics, with the same direction
    assert spec.score in metric_names(entry.name)
    assert REGISTRIES.get("metrics").entry(spec.score).meta["higher_is_better"] == spec.higher_is_better


@pytest.mark.parametrize("entry", _entries("tasks"))
def test_task_scores_feed_every_metric_of_the_task_and_its_baselines(entry):
    """The evaluate stage's path: outputs → scores → metric input → the task's metrics; dummy baselines."""
    from methodo.evaluate.metrics import compute_metrics, metric_names

    spec = entry.obj
    out, y = _task_batch(entry.name, n=30)
    n_classes = out.shape[-1] if spec.scores_need_targets else out.shape[1]  # vocabulary | classes | labels
    scores = spec.to_scores(out, y if spec.scores_need_targets else None).numpy()
    assert len(scores) == len(y)
    metrics = compute_metrics(entry.name, spec.metric_input(scores), y.numpy(), n_classes)
    assert set(metrics) == set(metric_names(entry.name)) and metrics
    assert all(v is None or math.isfinite(v) for v in metrics.values()), metrics
    if spec.decide is not None:  # one decided prediction per row (or pixel) for the checks
        assert np.asarray(spec.decide(scores)).size == y.numel()
    base = spec.baselines(y[:20].numpy(), y[20:].numpy(), n_classes, 0)
    assert base and all(set(m) == set(metrics) for m in base.values()), base


# --------------------------------------------------------------------------- metrics

_CLASSES = (2, 5)  # binary (positive-class metrics) and multiclass (macro, top-3)


def _perfect(task: str, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A prediction that is exactly right, in the metric's input format (see evaluate/metrics.py)."""
    g = _gen(0)
    if task == "classification":
        y = (torch.arange(40) % c)[torch.randperm(40, generator=g)]  # every class present
        return torch.nn.functional.one_hot(y, c).double(), y
    if task == "regression":
        y = torch.randn(40, generator=g, dtype=torch.float64)
        return y.clone(), y
    if task == "multilabel":  # every label both present and absent
        y = torch.randint(0, 2, (40, c), generator=g).float()
        y[0], y[1] = 0, 1
        return y.double(), y
    if task == "segmentation":
        y = torch.randint(0, c, (5, 8, 8), generator=g)
        return torch.nn.functional.one_hot(y, c).permute(0, 3, 1, 2).double(), y
    if task == "language_modeling":  # the log-probability given to each target token: log 1
        y = torch.randint(0, c, (5, 10), generator=g)
        return torch.zeros(5, 10, dtype=torch.float64), y
    if task == "forecasting":
        y = _forecast_targets(torch.randn(40, 3, generator=g, dtype=torch.float64), g)
        return y[:, :3].clone(), y
    if task == "generation":  # the per-row squared error of the predicted noise: 0
        y = torch.randint(0, c, (40,), generator=g)
        return torch.zeros(40, dtype=torch.float64), y
    raise AssertionError(f"no perfect prediction for task {task!r}: add one to _perfect in tests/test_contracts.py")


def _poor(task: str, y: torch.Tensor, c: int) -> torch.Tensor:
    """A random prediction of the same format."""
    g = _gen(1)
    if task == "classification":
        return torch.randn(len(y), c, generator=g, dtype=torch.float64).softmax(1)
    if task == "regression":
        return y + torch.randn(len(y), generator=g, dtype=torch.float64)
    if task == "multilabel":
        return torch.rand(len(y), c, generator=g, dtype=torch.float64)
    if task == "segmentation":
        return torch.randn(y.shape[0], c, *y.shape[1:], generator=g, dtype=torch.float64).softmax(1)
    if task == "forecasting":
        return y[:, :3] + torch.randn(len(y), 3, generator=g, dtype=torch.float64)
    if task == "generation":
        return torch.rand(len(y), generator=g, dtype=torch.float64) * 2
    logp = torch.randn(*y.shape, c, generator=g, dtype=torch.float64).log_softmax(-1)
    return logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)


def _value(fn, p, y, c) -> float | None:
    from methodo.evaluate.metrics import Undefined

    try:
        v = fn(p, y, c)
    except Undefined:
        return None
    v = float(v)
    assert math.isfinite(v), v
    return v


def _cases(entry):
    """``(p_perfect, p_poor, y, n_classes)`` for each class count the metric is defined on."""
    task = entry.meta["task"]
    for c in (_CLASSES if task in ("classification", "multilabel", "segmentation") else (7,)):
        p, y = _perfect(task, c)
        if _value(entry.obj, p, y, c) is not None:
            yield p, _poor(task, y, c), y, c


@pytest.mark.parametrize("entry", _entries("metrics"))
def test_metric_declares_task_direction_and_best(entry):
    assert entry.meta["task"] in TASK_NAMES
    assert isinstance(entry.meta["higher_is_better"], bool)
    assert "best" in entry.meta and (entry.meta["best"] is None or math.isfinite(entry.meta["best"]))


@pytest.mark.parametrize("entry", _entries("metrics"))
def test_metric_is_at_its_best_on_a_perfect_prediction(entry):
    cases = list(_cases(entry))
    assert cases, f"{entry.name} is undefined on every perfect prediction tried"
    best = entry.meta["best"]
    for p, _, y, c in cases:
        v = _value(entry.obj, p, y, c)
        if best is not None:
            assert v == pytest.approx(best, abs=1e-9), (c, v)


@pytest.mark.parametrize("entry", _entries("metrics"))
def test_metric_is_finite_and_no_better_than_best_on_a_poor_prediction(entry):
    best, up = entry.meta["best"], entry.meta["higher_is_better"]
    for _, p, y, c in _cases(entry):
        v = _value(entry.obj, p, y, c)
        if v is not None and best is not None:
            assert (v <= best + 1e-9) if up else (v >= best - 1e-9), (c, v)


@pytest.mark.parametrize("entry", _entries("metrics"))
def test_metric_ignores_row_order(entry):
    for perfect, poor, y, c in _cases(entry):
        order = torch.randperm(len(y), generator=_gen(2))
        for p in (perfect, poor):
            a, b = _value(entry.obj, p, y, c), _value(entry.obj, p[order], y[order], c)
            assert (a is None) == (b is None)
            if a is not None:
                assert b == pytest.approx(a, rel=1e-9, abs=1e-12), c


@pytest.mark.parametrize("entry", _entries("metrics"))
def test_metric_intervals_from_weights_match_the_copied_resamples(entry):
    """Above 2000 rows the bootstrap computes the metric from counts per row (evaluate/bootstrap.py), on
    the resamples the copying loop would draw: both give the same interval (to float32 rounding)."""
    from methodo.evaluate.bootstrap import percentile_intervals, weighted_metrics

    assert entry.name in weighted_metrics(), "add the metric's weighted form to evaluate/bootstrap.py"
    for perfect, poor, y, c in _cases(entry):
        for p in (perfect, poor):
            kw = dict(names=[entry.name], n_boot=20, seed=0)
            copied, _ = percentile_intervals(entry.meta["task"], p, y, c, loop_rows=len(y), **kw)
            weighted, info = percentile_intervals(entry.meta["task"], p, y, c, loop_rows=0, **kw)
            assert info["method"] == "weights" and info["replicates"] == {entry.name: 20}
            a, b = copied[entry.name], weighted[entry.name]
            assert (a is None) == (b is None), (c, a, b)
            if a is not None:
                assert b == pytest.approx(a, rel=1e-3 if entry.name == "r2" else 1e-5, abs=1e-6), c


# --------------------------------------------------------------------------- findings

def _hist(train_loss, val_loss, score="accuracy", train_score=None, val_score=None):
    rows = []
    for i, (t, v) in enumerate(zip(train_loss, val_loss)):
        row = {"epoch": i + 1, "train_loss": t, "val_loss": v}
        if train_score is not None:
            row[f"train_{score}"], row[f"val_{score}"] = train_score[i], val_score[i]
        rows.append(row)
    return rows


def _monitor(epochs, *, g_growth=1.0, w_growth=1.0, dead=0.0):
    return [{"epoch": e, "dead_relu": {"body.2": dead, "body.5": dead / 2},
             "layers": {"body.1.weight": {"w_rms": 0.1 * w_growth ** (e - 1), "g_rms": 0.01 * g_growth ** (e - 1)},
                        "head.weight": {"w_rms": 0.2, "g_rms": 1e-9 if dead else 0.02}}}
            for e in range(1, epochs + 1)]


def _run_facts() -> dict:
    """Standard facts of a finished run: the run checks must say something well-formed or nothing."""
    from methodo.diagnose import Facts

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    good = np.where(rng.random(60) < 0.95, y, (y + 1) % 3)
    proba = np.full((60, 3), 0.05)
    proba[np.arange(60), good] = 0.9
    skewed = np.r_[np.zeros(55, int), np.ones(5, int)]
    bad_proba = np.full((60, 3), 0.01)
    bad_proba[np.arange(60), (y + 1) % 3] = 0.98  # confidently another class: label errors
    cls_metrics = {"accuracy": 0.95, "balanced_accuracy": 0.95, "cohen_kappa": 0.92, "ece": 0.03, "precision": 0.95}
    return {
        **{f"empty_{t}": Facts(task=t) for t in TASK_NAMES},  # nothing known yet, for every task
        "healthy": Facts(
            task="classification", history=_hist([1.0, 0.6, 0.4, 0.3, 0.25, 0.2], [1.0, 0.7, 0.5, 0.4, 0.38, 0.37],
                                                 "accuracy", [0.5, 0.8, 0.9, 0.93, 0.95, 0.96],
                                                 [0.5, 0.78, 0.88, 0.92, 0.94, 0.95]),
            metrics={"train": {**cls_metrics, "accuracy": 0.96}, "val": cls_metrics, "test": cls_metrics},
            baselines={"most_frequent": {"accuracy": 0.35}, "stratified": {"accuracy": 0.33}},
            test_pred=good, test_true=y, intervals={"accuracy": [0.9, 0.99], "cohen_kappa": [0.85, 0.97]},
            oos_proba=proba, oos_true=y, oos_rows=np.arange(100, 160), class_names=["a", "b", "c"], lr=0.05,
            monitor=_monitor(3), reference={"model": "HistGradientBoostingClassifier", "metric": "accuracy",
                                            "train": 0.97, "val": 0.94}),
        "overfitting": Facts(
            task="classification", history=_hist([1.0, 0.5, 0.2, 0.1, 0.05], [1.0, 0.6, 0.5, 0.7, 0.9], "accuracy",
                                                 [0.6, 0.8, 0.95, 0.99, 1.0], [0.6, 0.75, 0.8, 0.78, 0.76]),
            metrics={"train": {"accuracy": 1.0}, "val": {"accuracy": 0.76}, "test": {"accuracy": 0.75}},
            baselines={"most_frequent": {"accuracy": 0.34}}, lr=0.01),
        "sick": Facts(  # diverges, memorizes noise, miscalibrated, imbalanced, dying units
            task="classification", history=_hist([2.0, 1.0, 0.5, 0.2, 0.1, 3.5], [2.0, 1.5, 1.6, 2.0, 2.5, 3.0],
                                                 "accuracy", [0.3, 0.5, 0.7, 0.9, 0.99, 0.6],
                                                 [0.3, 0.35, 0.33, 0.34, 0.3, 0.3]),
            metrics={"train": {"accuracy": 0.99}, "test": {"accuracy": 0.92, "balanced_accuracy": 0.5,
                                                           "cohen_kappa": 0.0, "ece": 0.3, "precision": None}},
            baselines={"most_frequent": {"accuracy": 0.92}}, test_pred=np.zeros(60, int), test_true=skewed,
            intervals={"accuracy": [0.85, 0.97], "cohen_kappa": [-0.1, 0.1], "ece": [0.2, 0.4]},
            undefined={"precision": "no row is predicted for the positive class"},
            oos_proba=bad_proba, oos_true=y, oos_rows=None, class_names=None, lr=10.0,
            monitor=_monitor(4, g_growth=1e3, w_growth=20.0, dead=0.95),
            skipped_batches=[{"epoch": 2, "step": 3, "tensor": "loss"}, {"epoch": 2, "step": 9, "tensor": "grad"}]),
        "stuck": Facts(task="classification", history=_hist([1.1, 1.1, 1.09, 1.09, 1.1], [1.1] * 5, "accuracy",
                                                          [0.33] * 5, [0.33] * 5),
                       monitor=_monitor(2, w_growth=1e-3), lr=1e-7,
                       reference={"model": "HistGradientBoostingClassifier", "metric": "accuracy",
                                  "train": 0.34, "val": 0.33}),
        "regression": Facts(
            task="regression", history=_hist([1.0, 0.9, 0.85], [1.0, 0.95, 0.9]),
            metrics={"train": {"r2": 0.3, "mae": 0.8}, "val": {"r2": 0.25}, "test": {"r2": 0.01, "rmse": 1.0}},
            baselines={"mean": {"rmse": 0.99}}, test_pred=np.full(30, 2.0), test_true=rng.normal(size=30),
            intervals={"rmse": [0.9, 1.1]}),
        "segmentation": Facts(
            task="segmentation", history=_hist([1.0, 0.5, 0.4], [1.0, 0.6, 0.5], "pixel_accuracy",
                                               [0.5, 0.8, 0.85], [0.5, 0.75, 0.8]),
            metrics={"test": {"mean_iou": 0.2, "pixel_accuracy": 0.7}}, baselines={"most_frequent": {"mean_iou": 0.25}},
            test_pred=np.zeros((2, 8, 8), int).ravel(), test_true=rng.integers(0, 3, (2, 8, 8)).ravel()),
        "multilabel": Facts(
            task="multilabel", history=_hist([0.7, 0.5, 0.45], [0.7, 0.55, 0.5], "subset_accuracy",
                                             [0.2, 0.5, 0.6], [0.2, 0.45, 0.5]),
            metrics={"test": {"f1_macro": 0.3, "subset_accuracy": 0.2, "hamming_loss": 0.4}},
            baselines={"most_frequent": {"f1_macro": 0.35}}, intervals={"f1_macro": [0.2, 0.4]},
            test_pred=np.zeros(40 * 3, int), test_true=rng.integers(0, 2, 40 * 3)),
        "transfer": Facts(  # a transfer run gone wrong in every way the transfer checks look for
            task="classification", history=_hist([1.2, 1.1, 1.1, 1.1], [1.2, 1.1, 1.1, 1.1], "accuracy",
                                                 [0.1, 0.6, 0.6, 0.6], [0.1, 0.55, 0.55, 0.55]),
            metrics={"test": {"accuracy": 0.55}}, intervals={"accuracy": [0.45, 0.65]}, lr=0.5,
            transfer={"strategy": "linear_probe", "trainable_parameters": 30, "total_parameters": 9000,
                      "expects": {"channels": 3, "size": [224, 224], "mean": [0.45], "std": [0.23]},
                      "data": {"channels": 1, "size": [8, 8], "mean": [0.1], "std": [0.6]},
                      "scratch": {"metrics": {"accuracy": 0.8}, "epochs_run": 4, "parameters": 9000},
                      "probe": {"val": 0.9}}),
        "distill": Facts(  # a distilled student that lost to the same student from scratch
            task="classification", history=_hist([1.0, 0.6, 0.5], [1.0, 0.7, 0.6], "accuracy",
                                                 [0.5, 0.8, 0.85], [0.5, 0.78, 0.82]),
            metrics={"test": {"accuracy": 0.85}}, intervals={"accuracy": [0.81, 0.89]},
            transfer={"strategy": "none", "scratch": {"metrics": {"accuracy": 0.91}},
                      "distill": {"metric": "accuracy", "temperature": 4.0, "alpha": 0.5, "beats_scratch": False,
                                  "difference": -0.06, "difference_interval": [-0.09, -0.03],
                                  "teacher": {"metrics": {"accuracy": 0.96}, "parameters": 16794},
                                  "student": {"metrics": {"accuracy": 0.85}, "parameters": 2410},
                                  "scratch": {"metrics": {"accuracy": 0.91}, "parameters": 2410}}}),
        "finetune": Facts(
            task="classification", history=_hist([1.2, 0.9, 0.7], [1.2, 0.9, 0.7], "accuracy",
                                                 [0.2, 0.6, 0.7], [0.2, 0.6, 0.7]),
            metrics={"test": {"accuracy": 0.7}}, lr=1.0,
            transfer={"strategy": "finetune", "probe": {"val": 0.9, "model": "logistic regression"}}),
        "language_modeling": Facts(
            task="language_modeling", history=_hist([3.0, 2.5, 2.2], [3.0, 2.6, 2.4], "perplexity",
                                                    [20.0, 12.0, 9.0], [20.0, 13.0, 11.0]),
            metrics={"test": {"perplexity": 11.0, "bits_per_token": 3.5}}, baselines={"unigram": {"perplexity": 10.0}}),
    }


def _audit_facts() -> dict:
    """Standard data: clean, and messy in every way the data checks look for."""
    from methodo.data.audit import AuditFacts

    rng = np.random.default_rng(0)
    n = 90
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = np.arange(n) % 3
    idx = {"train": np.arange(0, 60), "val": np.arange(60, 75), "test": np.arange(75, 90)}
    names = ["a", "b", "c", "d"]
    clean = AuditFacts(X=X, y=y, kind="tabular", task="classification", indices=idx, feature_names=names,
                       class_names=["x", "y", "z"])
    Xm = X.copy()
    Xm[:, 1] = 3.0  # constant
    Xm[:5, 2] = np.nan  # missing
    Xm[61] = Xm[0]  # across splits
    Xm[10] = Xm[11]  # within a split
    rows = np.arange(n)
    ym = np.where((rows % 6 < 3) & ((rows < 60) | (rows >= 75)), rows % 6, 0)  # imbalanced; val: class 0 only
    Xm[:, 3] = ym  # leaks the label
    problems = [{"id": "unreadable_file", "path": "img/0.png", "reason": "0-byte file"},
                {"id": "bad_label", "row": 4, "value": "cat?", "reason": "text in a numeric label column"},
                {"id": "bad_value", "row": 7, "column": "b", "value": "n/a"}]
    messy = AuditFacts(X=Xm, y=ym, kind="tabular", task="classification", indices=idx, feature_names=names,
                       class_names=["x", "y", "z"], problems=problems, where=lambda i: f"row {i + 2}")
    imgs = rng.random((40, 1, 8, 8)).astype(np.float32)
    imgs[35] = np.clip(imgs[0] * 0.98 + 0.01, 0, 1)  # a near copy in test
    img_idx = {"train": np.arange(0, 30), "val": np.arange(30, 35), "test": np.arange(35, 40)}
    images = AuditFacts(X=imgs, y=np.arange(40) % 2, kind="image", task="classification", indices=img_idx,
                        class_names=["p", "q"])
    reg = AuditFacts(X=X, y=(X[:, 0] * 2).astype(np.float32), kind="tabular", task="regression", indices=idx,
                     feature_names=names)
    return {"clean": clean, "messy": messy, "images": images, "regression": reg}


def _drift_facts() -> dict:
    """New data against a run's training statistics (drift.json): like training, and shifted in every way
    the drift checks look for; "clean" must make every drift check silent."""
    from methodo.data.dataset import Dataset
    from methodo.use.drift import DriftFacts, reference_stats

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 3)).astype(np.float32)
    cat = rng.choice(["a", "b", "c"], size=(600, 1)).astype(object)
    y = rng.integers(0, 3, 600)
    ds = Dataset("t", "classification", "tabular", X, y, ["x0", "x1", "x2"], ["p", "q", "r"], cat=cat, cat_names=["k"])
    ref = reference_stats(ds, np.arange(400), seed=0)
    new = rng.normal(size=(300, 3))
    run = dict(run_metrics={"accuracy": 0.9}, run_intervals={"accuracy": [0.85, 0.95]})
    clean = DriftFacts(task="classification", reference=ref, features={f"x{j}": new[:, j] for j in range(3)},
                       categorical={"k": rng.choice(["a", "b", "c"], 300).astype(object)}, y=rng.integers(0, 3, 300),
                       metrics={"accuracy": 0.9}, **run)
    shifted = DriftFacts(task="classification", reference=ref,
                         features={"x0": new[:, 0] + 1.5, "x1": new[:, 1] * 3, "x2": new[:, 2]},
                         categorical={"k": rng.choice(["a", "d"], 300).astype(object)},
                         y=np.r_[np.zeros(250, int), np.ones(50, int)], metrics={"accuracy": 0.6}, **run)
    reg = Dataset("r", "regression", "tabular", X, (X[:, 0] * 2).astype(np.float32), ["x0", "x1", "x2"])
    regression = DriftFacts(task="regression", reference=reference_stats(reg, np.arange(400), seed=0),
                            features={"x0": new[:, 0]}, y=new[:, 0] * 2 + 3, metrics={"rmse": 2.0},
                            run_metrics={"rmse": 0.1}, run_intervals={"rmse": [0.05, 0.15]})
    imgs = rng.random((50, 1, 8, 8)).astype(np.float32)
    images = Dataset("i", "classification", "image", imgs, np.arange(50) % 2, [], ["p", "q"])
    from methodo.use.drift import image_features

    dark = DriftFacts(task="classification", reference=reference_stats(images, np.arange(50), seed=0),
                      features=image_features(imgs[:40] * 0.3))
    return {"empty": DriftFacts(task="classification"), "older_run": DriftFacts(task="classification", y=y),
            "clean": clean, "shifted": shifted, "regression": regression, "images": dark}
def _fairness_facts() -> dict:
    """Per-group measurements (summary.json fairness): none, fair, and biased in every way the checks look for."""
    from methodo.trust.findings import FairnessFacts

    def split(sel_f, sel_m, n_f=150, n_m=150, small=None, dp_iv=None):
        groups = {"F": {"n": n_f, "accuracy": 0.8, "selection_rate": sel_f, "tpr": sel_f + 0.3, "fpr": 0.1},
                  "M": {"n": n_m, "accuracy": 0.82, "selection_rate": sel_m, "tpr": sel_m + 0.3, "fpr": 0.1}}
        if small:
            groups["X"] = {"n": small, "accuracy": 0.6, "selection_rate": 0.5, "tpr": 0.5, "fpr": 0.2}
        d = abs(sel_f - sel_m)
        return {"groups": groups, "disparity": {"demographic_parity_difference": d, "demographic_parity_ratio":
                                                 min(sel_f, sel_m) / max(sel_f, sel_m), "equalized_odds_difference": d,
                                                 "equal_opportunity_difference": d},
                "disparity_intervals": {"demographic_parity_difference": dp_iv or [max(d - 0.05, 0), d + 0.05],
                                        "equalized_odds_difference": [max(d - 0.05, 0), d + 0.05]},
                "intervals": {"F": {"accuracy": [0.7, 0.9]}, "M": {"accuracy": [0.72, 0.9]}, "X": {"accuracy": [0.2, 1]}}}

    base = {"bound": 0.1, "min_group": 30, "proxy_auc": 0.75, "label_gap": 0.05, "level": 0.95}
    fair = {**base, "attributes": {"gender": {
        "splits": {"train": split(0.45, 0.46, 500, 500), "test": split(0.45, 0.46)},
        "proxies": [{"feature": "x", "group": "F", "auc": 0.55, "direction": "higher", "rate_in_group": 0.5,
                     "rate_elsewhere": 0.5}],
        "label_bias": {"reference_group": "M", "gap": {"F": -0.01}, "interval": {"F": [-0.05, 0.03]}, "rows": 1000,
                       "resamples": 100, "level": 0.95, "rates_at_equal_features": {"F": 0.45, "M": 0.46}}}}}
    biased = {**base, "attributes": {"gender": {
        "splits": {"train": split(0.3, 0.5, 500, 500, small=20), "test": split(0.3, 0.55, small=5)},
        "proxies": [{"feature": "club", "group": "F", "auc": 0.8, "direction": "higher", "rate_in_group": 0.6,
                     "rate_elsewhere": 0.02}],
        "label_bias": {"reference_group": "M", "gap": {"F": -0.14}, "interval": {"F": [-0.2, -0.09]}, "rows": 1000,
                       "resamples": 100, "level": 0.95, "rates_at_equal_features": {"F": 0.36, "M": 0.5},
                       "observed_positive_rate": {"F": 0.37, "M": 0.5}}}}}
    return {"empty": FairnessFacts(None), "clean": FairnessFacts(fair), "biased": FairnessFacts(biased),
            "no_intervals": FairnessFacts({**biased, "attributes": {"g": {"splits": {"test": {
                **split(0.2, 0.6), "disparity_intervals": {}, "intervals": {}}}}}})}


def _robustness_facts() -> dict:
    """Accuracy under attack and corruption (summary.json robustness): robust, and fragile in every way."""
    from methodo.trust.findings import RobustnessFacts

    def attacks(acc_small, conf):
        return {"fgsm": [{"eps": 1 / 255, "accuracy": 0.95, "fooled": 2, "fooled_confidence": 0.6},
                         {"eps": 8 / 255, "accuracy": acc_small, "fooled": 40, "fooled_confidence": conf},
                         {"eps": 0.1, "accuracy": 0.1, "fooled": 80, "fooled_confidence": conf}],
                "onepixel": [{"pixels": 1, "accuracy": 0.9, "fooled": 8, "fooled_confidence": conf}]}

    sturdy = {"clean_accuracy": 0.97, "images": 100, "attacks": attacks(0.9, 0.6),
              "corruptions": {"accuracy": {"gaussian_noise": [0.96, 0.95, 0.9, 0.8, 0.7]}, "mce": 0.1}}
    fragile = {"clean_accuracy": 0.97, "images": 100, "attacks": attacks(0.1, 0.97), "clean_confidence": 0.95,
               "corruptions": {"accuracy": {"gaussian_blur": [0.6, 0.4, 0.3, 0.2, 0.1]}, "mce": 0.5}}
    return {"empty": RobustnessFacts(None), "clean": RobustnessFacts(sturdy), "fragile": RobustnessFacts(fragile),
            "thresholds": RobustnessFacts(fragile, thresholds={"collapse": 0.05, "confidence": 0.99,
                                                               "corruption_points": 0.6})}


def _assert_well_formed(found, name: str) -> None:
    from methodo.diagnose import SEVERITY_ORDER, Finding

    assert isinstance(found, Finding)
    assert found.id == name
    assert found.severity in SEVERITY_ORDER
    assert isinstance(found.title, str) and found.title.strip() and "\n" not in found.title
    assert isinstance(found.action, str) and found.action.strip()
    assert isinstance(found.evidence, dict) and found.evidence
    json.dumps(found.to_dict(), allow_nan=False)  # JSON values only (summary.json), no NaN
    # how sure it is (issue 12): a named method and a sentence, and the numbers the method needs
    from methodo.findings import METHODS

    sure = found.evidence.get("certainty")
    assert isinstance(sure, dict) and sure["method"] in METHODS, (name, sure)
    assert isinstance(sure["statement"], str) and sure["statement"].strip() and "\n" not in sure["statement"]
    if sure["method"] in ("wilson interval", "bootstrap interval"):
        lo, hi = sure["interval"]
        assert lo <= hi and 0 < sure["level"] < 1, sure
    if sure["method"] == "test":
        assert 0 <= sure["p_value"] <= 1 and sure["test"] and sure["correction"], sure


@pytest.mark.parametrize("entry", _entries("findings"))
def test_finding_is_well_formed_or_none_on_standard_facts(entry):
    if entry.meta.get("check"):
        facts = _run_facts()
    elif entry.meta.get("stage") == "data":
        facts = _audit_facts()
    elif entry.meta.get("stage") == "drift":
        facts = _drift_facts()
    elif entry.meta.get("stage") == "fairness":
        facts = _fairness_facts()
    elif entry.meta.get("stage") == "robustness":
        facts = _robustness_facts()
    else:  # made by the pipeline from its own arguments: the registry gives an example call
        _assert_well_formed(entry.obj(**entry.meta["example"]), entry.name)
        return
    for label, f in facts.items():
        found = entry.obj(f)
        if found is not None:
            _assert_well_formed(found, entry.name)
        if label.startswith("empty") or label in ("clean", "older_run"):
            assert found is None, (label, found)


def test_the_trust_facts_make_every_trust_check_speak():
    """The biased / fragile facts above must make each fairness and robustness check speak (and the
    thresholds of evaluate.robustness, raised past the numbers, silence them)."""
    from methodo.trust.findings import trust_findings

    spoke = {f.id for f in trust_findings(_fairness_facts()["biased"].fairness, _robustness_facts()["fragile"].robustness)}
    assert spoke == {"group_disparity", "group_underrepresented", "proxy_feature", "label_bias", "not_robust",
                     "corruption_sensitive", "overconfident_under_attack"}
    from methodo.findings import FINDINGS

    raised = [e.name for e in FINDINGS.entries() if e.meta.get("stage") == "robustness"
              and e.obj(_robustness_facts()["thresholds"]) is not None]
    assert raised == []


def test_the_standard_facts_make_most_checks_speak():
    """Guards the facts above: a contract over facts on which every check is silent would test little."""
    from methodo.data.audit import audit
    from methodo.diagnose import diagnose

    run = {f.id for facts in _run_facts().values() for f in diagnose(facts)}
    data = {f.id for facts in _audit_facts().values() for f in audit(facts)}
    assert len(run) >= 18, sorted(run)
    assert len(data) >= 10, sorted(data)
    from methodo.use.drift import DRIFT_CHECKS, check_drift

    drift = {f.id for facts in _drift_facts().values() for f in check_drift(facts)}
    assert drift == set(DRIFT_CHECKS), sorted(drift)


# --------------------------------------------------------------------------- datasets

# Small sizes for loaders that take them (data.options); a new loader with these options is kept small.
_SMALL = {"n": 40, "size": 16, "seq_len": 16, "max_chars": 20000}


@pytest.mark.parametrize("entry", _entries("datasets"))
def test_dataset_loads_with_its_declared_task_kind_and_shapes(entry):
    from methodo.config import DataConfig
    from methodo.data.sources import load_dataset

    assert entry.meta.get("kind") in ("image", "tabular", "text", "series", "graph")
    assert entry.meta.get("task") is None or entry.meta["task"] in TASK_NAMES
    needs = entry.meta.get("needs")
    if needs == "download":
        pytest.skip("downloads its files (no network in tests)")
    if needs == "path":
        pytest.skip("reads the user's files from data.path (tested in test_sources.py)")
    params = inspect.signature(entry.obj).parameters
    ds = load_dataset(DataConfig(source=entry.name, options={k: v for k, v in _SMALL.items() if k in params}))
    assert ds.task == entry.meta["task"] and ds.kind == entry.meta["kind"]
    n = len(ds.y)
    assert n > 0 and len(ds.X) == n and not ds.problems
    if ds.kind == "image":
        assert ds.X.ndim == 4 and ds.X.dtype == np.float32 and ds.X.min() >= 0 and ds.X.max() <= 1
    elif ds.kind == "tabular":
        assert ds.X.ndim == 2 and ds.X.dtype == np.float32 and len(ds.feature_names) == ds.X.shape[1]
    elif ds.kind == "series":  # windows (n, steps, variables), the target series first
        assert ds.X.ndim == 3 and ds.X.dtype == np.float32 and len(ds.feature_names) == ds.X.shape[2]
    elif ds.kind == "graph":  # packed graphs: (N, N + 1 + F) adjacency, node mask, features
        from methodo.data.graphs import unpack

        nodes = ds.X.shape[1]
        assert ds.X.ndim == 3 and ds.X.dtype == np.float32 and ds.X.shape[2] >= nodes + 2
        adj, mask, _ = unpack(ds.X, nodes)
        assert (adj == adj.transpose(0, 2, 1)).all() and set(np.unique(mask)) <= {0, 1}
    else:
        assert ds.X.ndim == 2 and ds.X.dtype == np.int64 and ds.vocab and ds.X.max() < len(ds.vocab)
    if ds.task in ("classification", "graph_classification"):
        assert ds.y.shape == (n,) and ds.y.dtype == np.int64 and 0 <= ds.y.min() and ds.y.max() < ds.n_classes
    elif ds.task == "regression":
        assert ds.y.shape == (n,) and ds.y.dtype == np.float32 and np.isfinite(ds.y).all()
    elif ds.task == "multilabel":
        assert ds.y.shape == (n, ds.n_classes) and set(np.unique(ds.y)) <= {0, 1}
    elif ds.task == "segmentation":
        assert ds.y.shape == (n, *ds.X.shape[2:]) and ds.y.dtype == np.int64 and ds.y.max() < ds.n_classes
    elif ds.task == "language_modeling":
        assert ds.y.shape == ds.X.shape and ds.y.dtype == np.int64 and ds.y.max() < len(ds.vocab)
    elif ds.task == "forecasting":  # the next values of variable 0, after each window
        assert ds.y.ndim == 2 and ds.y.dtype == np.float32 and np.isfinite(ds.y).all()
        assert np.array_equal(ds.X[1:, -1, 0], ds.y[:-1, 0])
    else:
        raise AssertionError(f"no shape contract for task {ds.task!r}")


# --------------------------------------------------------------------------- models

_SHAPES = {"tabular": (6,), "image": (3, 8, 8), "text": (12,), "graph": (6, 10)}
_SHAPES["series"] = (10, 2)  # time steps, variables


def _model_cases() -> list:
    from methodo.models import MODELS, model_tasks

    cases = []
    for e in MODELS.entries():
        for task in model_tasks(e.name):
            for kind in e.meta.get("inputs", ("image", "tabular")):
                if kind in _TASK_KINDS.get(task, ()):
                    cases.append(pytest.param(e.name, task, kind, id=f"{e.name}-{task}-{kind}"))
    return cases


def test_every_model_has_a_task_its_inputs_can_do():
    from methodo.models import MODELS, model_tasks

    covered = {p.values[0] for p in _model_cases()}
    assert covered == set(MODELS.names())
    for name in MODELS.names():
        assert set(model_tasks(name)) <= set(TASK_NAMES), name


def _model_batch(task: str, kind: str):
    """``(x, y, n_outputs, expected output shape)`` for a model of ``task`` reading ``kind`` inputs."""
    g = _gen(0)
    n, classes, vocab = 8, 3, 11
    shape = _SHAPES[kind]
    x = torch.randint(0, vocab, (n, *shape), generator=g) if kind == "text" else torch.rand(n, *shape, generator=g)
    if kind == "text" and task != "language_modeling":  # text classifiers read token ids and their mask
        x = torch.stack([x + 1, torch.ones_like(x)], 1)
    if kind == "graph":  # packed graphs of 3 to 6 nodes with 3 features each
        from methodo.data.graphs import make_graph_cycles

        x = torch.from_numpy(make_graph_cycles(n=n, min_nodes=3, max_nodes=shape[0], features=shape[1] - shape[0] - 1,
                                               seed=0)[0])
    out, y = _task_batch(task, n=n, classes=classes, vocab=vocab, seq=shape[0], side=shape[-1])
    n_outputs = vocab if task == "language_modeling" else out.shape[2] if task == "generation" else out.shape[1]
    return x, y, n_outputs, tuple(out.shape)


# Narrower than the defaults where a model takes these options, so each case stays well under a second.
_SMALL_MODEL = {"width": 8, "d_model": 32}


def _build(name, task, kind, n_outputs, seed):
    from methodo.models import MODELS, build_model

    params = inspect.signature(MODELS.get(name)).parameters
    torch.manual_seed(seed)
    return build_model(name, input_shape=_SHAPES[kind], n_outputs=n_outputs, kind=kind, task=task,
                       **{k: v for k, v in _SMALL_MODEL.items() if k in params})


@pytest.mark.parametrize("name,task,kind", _model_cases())
def test_model_forward_learning_determinism_and_safetensors_round_trip(name, task, kind, tmp_path):
    from methodo.tasks import task_spec
    from methodo.train.checkpoint import load_checkpoint, save_checkpoint

    x, y, n_outputs, expected = _model_batch(task, kind)
    spec = task_spec(task)
    model = _build(name, task, kind, n_outputs, seed=0)

    # 1. the output shape the task's loss and metrics expect
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert tuple(out.shape) == expected and torch.isfinite(out).all()

    # 2. deterministic under a seed: same weights, same outputs
    twin = _build(name, task, kind, n_outputs, seed=0).eval()
    with torch.no_grad():
        assert torch.equal(twin(x), out)

    # 3. a few SGD steps reduce the loss on a fixed batch (dropout masks fixed by reseeding)
    def loss_now():
        torch.manual_seed(1)
        return spec.loss(model(x), y, None)

    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)  # small enough for every model and task
    with torch.no_grad():
        before = float(loss_now())
    for _ in range(8):
        opt.zero_grad()
        loss = loss_now()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(loss_now())
    assert math.isfinite(after) and after < before, (before, after)

    # 4. the weights survive a safetensors checkpoint: a fresh model given them answers identically
    model.eval()
    path = save_checkpoint(tmp_path / "best.safetensors", model.state_dict())
    weights, _, _ = load_checkpoint(path)
    other = _build(name, task, kind, n_outputs, seed=1)
    other.load_state_dict(weights, strict=True)
    other.eval()
    with torch.no_grad():
        assert torch.equal(other(x), model(x))


# --------------------------------------------------------------------------- optimizers and schedulers

@pytest.mark.parametrize("entry", _entries("optimizers"))
def test_optimizer_builds_with_defaults_and_steps_downhill(entry):
    from methodo.train.optim import build_optimizer, check_optimizer_options, needs_closure

    check_optimizer_options(entry.name, {})
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = build_optimizer([w], entry.name, 0.01, {})

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    start = float((w.detach() ** 2).sum())
    for _ in range(5):
        if needs_closure(entry.name):
            opt.step(closure)
        else:
            closure()
            opt.step()
    assert torch.isfinite(w).all() and float((w.detach() ** 2).sum()) < start
    for group in opt.param_groups:
        assert math.isfinite(group["lr"]) and group["lr"] > 0


@pytest.mark.parametrize("warmup", [{}, {"warmup_steps": 3}], ids=["plain", "warmup"])
@pytest.mark.parametrize("entry", _entries("schedulers"))
def test_scheduler_keeps_a_finite_positive_lr(entry, warmup):
    from methodo.train.schedules import build_schedule, check_scheduler_options

    assert entry.meta["interval"] in ("step", "epoch", "plateau")
    check_scheduler_options(entry.name, warmup)
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    sched = build_schedule(opt, entry.name, warmup, epochs=4, steps_per_epoch=5)
    lrs = []
    for _ in range(4):
        for _ in range(5):
            opt.zero_grad()
            (w ** 2).sum().backward()
            opt.step()
            sched.after_step()
            lrs.append(sched.lr())
        sched.after_epoch(1.0)  # a monitored value that never improves (plateau)
        lrs.append(sched.lr())
    assert all(math.isfinite(v) and v >= 0 for v in lrs), lrs
    assert all(v > 0 for v in lrs[:-2]), lrs  # a schedule may end at eta_min = 0 on its very last step
    assert sched.state_dict()["steps"] == 20


# --------------------------------------------------------------------------- regularizers

def _tiny_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(8, 3))
    net(torch.randn(5, 4)).pow(2).sum().backward()
    return net


@pytest.mark.parametrize("entry", _entries("regularizers"))
def test_regularizer_does_what_its_stage_promises(entry):
    from methodo.train.regularize import decayed, grad_norm

    stage, value = entry.meta["stage"], entry.meta["example"]
    assert entry.meta["key"].startswith("train.")
    net = _tiny_net()
    params = decayed(net)
    if stage == "loss":  # a non-negative penalty the gradient flows through
        pen = entry.obj(params, value)
        assert pen.ndim == 0 and torch.isfinite(pen) and float(pen) >= 0 and pen.requires_grad
        assert float(entry.obj(params, 0.0)) == 0.0
    elif stage in ("before_step", "after_step"):  # weights shrink or stay: never grow
        norms = [p.detach().norm() for p in params]
        entry.obj(params, value, 0.1) if stage == "before_step" else entry.obj(params, value)
        assert all(float(p.detach().norm()) <= float(n) + 1e-6 for p, n in zip(params, norms))
    elif stage == "model":
        assert entry.obj(net, value) >= 1
    elif stage == "criterion":
        logits, y = _task_batch("classification")
        assert torch.isfinite(entry.obj(logits, y, value))
    elif stage == "gradient":  # returns the pre-clip norm; the gradients do not grow
        grads = [p for p in net.parameters()]
        pre = float(grad_norm(grads))
        total = entry.obj(grads, value)
        assert float(total) == pytest.approx(pre) and float(grad_norm(grads)) <= pre + 1e-6
    else:
        raise AssertionError(f"no contract for regularizer stage {stage!r}")


# --------------------------------------------------------------------------- augmentations

@pytest.mark.parametrize("entry", _entries("augmentations"))
def test_augmentation_keeps_shape_and_range_and_is_seeded(entry):
    from methodo.data.augment import AugmentPipeline

    step = entry.obj()  # default options
    assert step.name == entry.name
    x = torch.rand(6, 3, 16, 16, generator=_gen(0))
    keep = x.clone()
    out = step(x, _gen(1))
    assert torch.equal(x, keep), "the input batch was modified in place"
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    if not entry.meta.get("all_splits"):  # training-only steps keep image values in [0, 1]
        assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(step(x, _gen(1)), out)  # same generator state, same result
    assert step.reference()(x[0]).shape == x[0].shape  # the per-image torchvision equivalent
    AugmentPipeline([entry.name], seed=0)(x)  # usable by name in data.augment


# --------------------------------------------------------------------------- feature steps and functions

def _table(task: str):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 6))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) if task == "classification" else X[:, 0] * 2 + rng.normal(size=80)
    return X, y


def _fit_step(item, task):
    from methodo.data.features import build_pipeline, fit_transform, output_names

    X, y = _table(task)
    names = [f"f{i}" for i in range(X.shape[1])]
    pipe, names = build_pipeline([item], task=task, seed=0, feature_names=names)
    Z = fit_transform(pipe, X[:60], y[:60])  # fitted on train only
    Zt = pipe.transform(X[60:])
    assert Z.shape[0] == 60 and Zt.shape == (20, Z.shape[1]) and Z.shape[1] >= 1
    assert np.isfinite(Z).all() and np.isfinite(Zt).all()
    assert len(output_names(pipe, names)) == Z.shape[1]
    return Z


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("entry", _entries("features"))
def test_feature_step_fits_on_train_and_transforms_new_rows(entry, task):
    assert entry.meta["kind"] in ("scaling", "cleaning", "selection", "extraction")
    a, b = _fit_step(entry.name, task), _fit_step(entry.name, task)
    assert np.array_equal(a, b)  # seeded


@pytest.mark.parametrize("entry", _entries("feature_functions"))
def test_feature_function_works_as_a_function_step(entry):
    a = _fit_step({"function": {"fn": entry.name}}, "classification")
    b = _fit_step({"function": {"fn": entry.name}}, "classification")
    assert a.ndim == 2 and np.array_equal(a, b)  # a table out, the same every time


# --------------------------------------------------------------------------- splits and balancers

@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("entry", _entries("splits"))
def test_split_returns_disjoint_indices_covering_every_row(entry, task):
    from methodo.data.split import split_indices

    rng = np.random.default_rng(0)
    n = 120
    y = np.arange(n) % 3 if task == "classification" else rng.normal(size=n).astype(np.float32)
    kw = dict(method=entry.name, val=0.15, test=0.2, seed=0, task=task, X=rng.normal(size=(n, 4)),
              groups=np.arange(n) // 6, official=np.arange(n) >= 96, folds=4, fold=2, clusters=4)
    parts = split_indices(y, **kw)
    assert set(parts) == {"train", "val", "test"}
    for idx in parts.values():
        assert idx.dtype == np.int64 and len(idx) > 0 and np.all(np.diff(idx) > 0)
    together = np.concatenate(list(parts.values()))
    assert len(together) == n and np.array_equal(np.sort(together), np.arange(n))
    again = split_indices(y, **kw)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)


@pytest.mark.parametrize("kind", ["tabular", "image"])
@pytest.mark.parametrize("entry", _entries("balancers"))
def test_balancer_returns_only_training_rows(entry, kind):
    from methodo.data.balance import balance

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(24, int), np.ones(8, int), np.full(4, 2)]
    shape = (len(y), 3) if kind == "tabular" else (len(y), 1, 3, 3)
    X = (rng.random(shape) + y.reshape(-1, *[1] * (len(shape) - 1))).astype(np.float32)  # classes apart
    b = balance(entry.name, X, y, n_classes=3, seed=0)
    assert len(b.X) == len(b.y) and b.X.shape[1:] == X.shape[1:] and b.X.dtype == np.float32
    assert set(np.unique(b.y)) <= set(np.unique(y))
    flat, bflat = X.reshape(len(X), -1), b.X.reshape(len(b.X), -1)
    for c in np.unique(b.y):  # each row lies among the training rows of its class (SMOTE: between them)
        lo, hi = flat[y == c].min(0), flat[y == c].max(0)
        assert np.all(bflat[b.y == c] >= lo - 1e-6) and np.all(bflat[b.y == c] <= hi + 1e-6), c
    if entry.meta.get("resamples"):
        counts = np.bincount(b.y, minlength=3)
        assert counts.min() == counts.max()
    else:
        assert b.X is X and b.y is y
    if b.class_weights is not None:
        assert b.class_weights.shape == (3,) and np.all(np.isfinite(b.class_weights) & (b.class_weights > 0))
    if b.sample_weights is not None:
        assert b.sample_weights.shape == (len(b.y),) and np.all(b.sample_weights >= 0)
        assert b.sample_weights.sum() == pytest.approx(1.0)
    again = balance(entry.name, X, y, n_classes=3, seed=0)
    assert np.array_equal(again.X, b.X) and np.array_equal(again.y, b.y)


# --------------------------------------------------------------------------- explainers

@pytest.mark.parametrize("entry", _entries("explainers"))
def test_explainer_gives_a_finite_seeded_attribution_per_input_value(entry):
    from methodo.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn", input_shape=(1, 8, 8), n_outputs=3, kind="image", width=4).eval()
    x = torch.randn(2, 1, 8, 8, generator=_gen(0))
    target = torch.tensor([0, 2])
    a = entry.obj(model, x, target, seed=0)
    assert a.shape == x.shape and torch.isfinite(a).all() and not a.requires_grad
    assert torch.allclose(entry.obj(model, x, target, seed=0), a)


# --------------------------------------------------------------------------- model families by prefix (timm:, hf:)


def _prefix_cases() -> list:
    from methodo.models import MODELS

    return [pytest.param(p, id=p.prefix) for p in MODELS.prefixes()]


@pytest.mark.parametrize("prefix", _prefix_cases())
def test_model_prefix_builds_its_example_and_survives_a_safetensors_round_trip(prefix, tmp_path):
    """Every prefix names an example; that model builds for its inputs, answers one row per input, and a
    fresh copy given its weights answers identically."""
    from methodo.models import build_model
    from methodo.train.checkpoint import load_checkpoint, save_checkpoint

    name = f"{prefix.prefix}:{prefix.meta['example']}"
    kind = prefix.meta["inputs"][0]
    shape, x = {"image": ((3, 16, 16), torch.rand(4, 3, 16, 16, generator=_gen())),
                "text": ((2, 8), torch.stack([torch.randint(5, 100, (4, 8), generator=_gen()),
                                             torch.ones(4, 8, dtype=torch.long)], 1))}[kind]
    torch.manual_seed(0)
    model = build_model(name, input_shape=shape, n_outputs=3, kind=kind, task="classification").eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (4, 3) and torch.isfinite(out).all()
    path = save_checkpoint(tmp_path / "w.safetensors", {k: v.contiguous() for k, v in model.state_dict().items()})
    torch.manual_seed(1)
    other = build_model(name, input_shape=shape, n_outputs=3, kind=kind).eval()
    other.load_state_dict(load_checkpoint(path)[0])
    with torch.no_grad():
        assert torch.equal(other(x), out)


# --------------------------------------------------------------------------- transfer strategies


@pytest.mark.parametrize("entry", _entries("strategies"))
def test_strategy_trains_the_head_and_only_what_it_reports(entry):
    """A strategy on a small model: the trainable count it reports is the model's, the head trains, and a
    few steps through its parameter groups move only trainable parameters."""
    from methodo.models import build_model
    from methodo.train.optim import build_optimizer
    from methodo.transfer import plan as make_plan

    torch.manual_seed(0)
    net = build_model("mlp", input_shape=(6,), n_outputs=3, hidden=[16, 8])
    p = make_plan(net, entry.name, lr_decay=0.5)
    model = p.adapter if p.adapter is not None else net
    trainable = [q for q in model.parameters() if q.requires_grad]
    assert p.info["strategy"] == entry.name
    assert p.info["trainable_parameters"] == sum(q.numel() for q in trainable) > 0
    assert p.info["trainable_parameters"] <= p.info["total_parameters"] == sum(q.numel() for q in model.parameters())
    before = {n: q.detach().clone() for n, q in model.named_parameters()}
    groups = p.param_groups(0.1)
    opt = build_optimizer(groups or model.parameters(), "sgd", 0.1, {})
    x, y = torch.rand(16, 6, generator=_gen()), torch.arange(16) % 3
    model.train()
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    moved = {n for n, q in model.named_parameters() if not torch.equal(before[n], q)}
    assert moved and moved <= {n for n, q in model.named_parameters() if q.requires_grad}
    assert any("head" in n for n in moved)
# --------------------------------------------------------------------------- samplers and pruners (methodo tune)

_TUNE_SPACE = """\
x: {float: [-2.0, 2.0], step: 0.25}
n: {int: [1, 8]}
kind: {choice: [a, b]}
"""


@pytest.mark.parametrize("entry", _entries("samplers"))
def test_sampler_proposes_values_inside_the_space_and_is_seeded(entry):
    """Every sampler, on a 3-key space (float, int, choice) and a cheap objective: 12 trials complete with
    values inside the space, the same seed proposes the same values, and it finds a point better than the
    median of its own trials; multi-objective ones also run a 2-objective study."""
    import optuna

    from methodo.tune.space import Space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = Space.from_text(_TUNE_SPACE)

    def study(seed, objectives=1):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sampler = entry.obj(space, seed=seed, trials=12, objectives=objectives)
            st = optuna.create_study(sampler=sampler, directions=["minimize"] * objectives)
            for _ in range(12):
                t = st.ask()
                v = {p.key: p.suggest(t) for p in space.params}
                assert -2 <= v["x"] <= 2 and 1 <= v["n"] <= 8 and v["kind"] in ("a", "b")
                f = (v["x"] - 0.5) ** 2 + 0.1 * v["n"] + (v["kind"] == "b")
                st.tell(t, [f, v["n"]] if objectives == 2 else f)
        return st

    st = study(0)
    assert all(t.state.name == "COMPLETE" for t in st.trials) and len(st.trials) == 12
    assert [t.params for t in study(0).trials] == [t.params for t in st.trials]  # seeded
    vals = sorted(t.value for t in st.trials)
    assert st.best_value <= vals[len(vals) // 2]
    if entry.meta.get("multi_objective"):
        assert len(study(1, objectives=2).best_trials) >= 1


@pytest.mark.parametrize("entry", _entries("pruners"))
def test_pruner_stops_a_clearly_worse_curve_and_none_never_does(entry):
    """10 trials with a good per-epoch curve, then one far worse: every pruner but none stops it within 9 epochs;
    none lets it run to its end."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = optuna.create_study(direction="maximize", pruner=entry.obj(epochs=9),
                             sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(10):
        t = st.ask()
        for e in range(1, 10):
            t.report(0.8 + 0.01 * e + 0.001 * i, e)
            t.should_prune()
        st.tell(t, 0.9 + 0.001 * i)
    bad = st.ask()
    stopped_at = None
    for e in range(1, 10):
        bad.report(0.1, e)
        if bad.should_prune():
            stopped_at = e
            break
    if entry.name == "none":
        assert stopped_at is None
    else:
        assert stopped_at is not None and stopped_at <= 9, entry.name


# --------------------------------------------------------------------------- labs (each lab runs in tests/test_labs.py)


@pytest.mark.parametrize("entry", _entries("labs"))
def test_lab_states_its_claim_and_explains_each_step(entry):
    """A lab is its name's :class:`~methodo.labs.Lab`: a claim, steps marked ``@step`` with a docstring (the
    notebook's explanation) from one module, and a ``conclude``; its module imports nothing heavy at load time."""
    import ast
    import importlib
    import inspect

    from methodo.labs import Lab

    lab = entry.obj
    assert isinstance(lab, Lab) and lab.name == entry.name and lab.title and lab.claim
    assert lab.steps and callable(lab.conclude)
    for s in lab.steps:
        assert s.__module__ == lab.module and s.__doc__ and s.__doc__.strip().startswith("**"), s.__name__
        assert hasattr(s, "__wrapped__"), f"{s.__name__} is not decorated with @step"
        assert len(inspect.signature(s).parameters) == 1
    tree = ast.parse(inspect.getsource(importlib.import_module(lab.module)))
    top = {a.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for a in node.names}
    top |= {(node.module or "").split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert not top & {"torch", "matplotlib", "sklearn", "mlflow"}, f"{lab.module} imports {top} at load time"
