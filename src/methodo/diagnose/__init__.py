"""Diagnosis: pure functions that look at a finished run and say what is wrong, with numbers.

Each check takes :class:`Facts` and returns a :class:`Finding` or ``None``. A finding explains
itself: ``evidence`` holds the numbers, ``action`` what to do next.

Examples
--------
>>> from methodo.diagnose import Facts, diagnose
>>> facts = Facts(task="classification", history=[
...     {"epoch": 1, "train_loss": 2.0, "val_loss": 2.0, "train_accuracy": 0.3, "val_accuracy": 0.3}])
>>> [f.id for f in diagnose(facts)]
['underfitting']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from methodo.registry import Registry

FINDINGS = Registry("finding")
SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}


@dataclass
class Finding:
    id: str
    severity: str  # critical | high | medium | low | info
    title: str
    evidence: dict[str, Any]
    action: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Facts:
    """What the checks may look at. Every field is optional; a check needing one absent returns None."""

    task: str
    history: list[dict] = field(default_factory=list)
    metrics: dict[str, dict] = field(default_factory=dict)  # split → metric → value
    baselines: dict[str, dict] = field(default_factory=dict)  # strategy → metric → value (test)
    test_pred: np.ndarray | None = None  # predicted class (or value) per test row
    test_true: np.ndarray | None = None


def finding(id: str, help: str):
    """Register a check under the finding ``id`` it produces."""
    def deco(fn):
        FINDINGS.register(id, fn, help=help, check=True)
        return fn
    return deco


def _score_key(task):
    return "accuracy" if task == "classification" else "mae"


@finding("overfitting", "high variance: validation loss rises while training loss keeps falling")
def overfitting(f: Facts) -> Finding | None:
    h = f.history
    if len(h) < 3:
        return None
    val = [r["val_loss"] for r in h]
    best = int(np.argmin(val))
    last = h[-1]
    rise = (val[-1] - val[best]) / max(abs(val[best]), 1e-12)
    train_fell = last["train_loss"] < h[best]["train_loss"]
    gap = last["val_loss"] - last["train_loss"]
    if best < len(h) - 1 and rise > 0.10 and train_fell:
        return Finding(
            "overfitting", "high", "The model overfits: validation loss rose while training loss fell",
            {"best_val_loss": round(val[best], 4), "best_epoch": h[best]["epoch"],
             "last_val_loss": round(val[-1], 4), "val_loss_rise_pct": round(100 * rise, 1),
             "train_loss_at_best": round(h[best]["train_loss"], 4), "last_train_loss": round(last["train_loss"], 4),
             "train_val_gap": round(gap, 4)},
            "Keep the best-epoch weights (methodo does) and regularize: more data or augmentation, "
            "dropout, weight decay, a smaller model, or earlier stopping.")
    return None


@finding("underfitting", "high bias: training error is high and close to validation error")
def underfitting(f: Facts) -> Finding | None:
    if not f.history:
        return None
    last = f.history[-1]
    if f.task == "classification":
        tr_err, va_err = 1 - last.get("train_accuracy", 1), 1 - last.get("val_accuracy", 1)
        if tr_err >= 0.15 and va_err - tr_err < 0.05:
            return Finding(
                "underfitting", "high", "The model underfits: it does not even fit the training data",
                {"train_error": round(tr_err, 4), "val_error": round(va_err, 4), "epochs": last["epoch"]},
                "Increase capacity (wider/deeper model), train longer, raise the learning rate "
                "(see `methodo lr-find`), or reduce regularization.")
        return None
    tr, va = f.metrics.get("train", {}).get("r2"), f.metrics.get("val", {}).get("r2")
    if tr is not None and va is not None and tr < 0.6 and tr - va < 0.1:
        return Finding(
            "underfitting", "medium", "The model underfits: it explains little of the training target",
            {"train_r2": round(tr, 4), "val_r2": round(va, 4)},
            "Increase capacity, train longer, tune the learning rate, or add informative features.")
    return None


@finding("constant_predictions", "the model predicts (almost) the same output for every input")
def constant_predictions(f: Facts) -> Finding | None:
    if f.test_pred is None or f.test_true is None or len(f.test_pred) < 5:
        return None
    if f.task == "classification":
        values, counts = np.unique(f.test_pred, return_counts=True)
        share = counts.max() / counts.sum()
        true_share = np.bincount(f.test_true).max() / len(f.test_true)
        if share >= 0.98 and true_share < 0.95:
            return Finding(
                "constant_predictions", "critical",
                f"The model predicts class {int(values[counts.argmax()])} for {100 * share:.0f}% of test rows",
                {"predicted_share": round(float(share), 4), "true_share_of_largest_class": round(float(true_share), 4),
                 "distinct_predictions": int(len(values))},
                "The model ignores its input: check the learning rate (too high collapses, too low never "
                "leaves the prior), the labels' alignment with the inputs, and class balance.")
        return None
    spread, target = float(np.std(f.test_pred)), float(np.std(f.test_true))
    if target > 0 and spread < 0.01 * target:
        return Finding(
            "constant_predictions", "critical", "The model predicts nearly the same value for every input",
            {"prediction_std": round(spread, 6), "target_std": round(target, 6)},
            "Check the learning rate and the target scaling; the model ignores its input.")
    return None


@finding("not_better_than_baseline", "the model does not beat a dummy that ignores the input")
def not_better_than_baseline(f: Facts) -> Finding | None:
    test = f.metrics.get("test", {})
    if not test or not f.baselines:
        return None
    if f.task == "classification":
        key, better = "accuracy", 1
    else:
        key, better = "rmse", -1
    model = test.get(key)
    scored = {s: m.get(key) for s, m in f.baselines.items() if m.get(key) is not None}
    if model is None or not scored:
        return None
    best_name = max(scored, key=lambda s: better * scored[s])
    margin = 0.01 * (1 if better > 0 else max(abs(scored[best_name]), 1e-12))
    if better * (model - scored[best_name]) <= margin:
        return Finding(
            "not_better_than_baseline", "critical",
            f"The model's test {key} ({model:.4g}) is no better than the '{best_name}' dummy ({scored[best_name]:.4g})",
            {"metric": key, "model": round(model, 6), "baseline": best_name, "baseline_value": round(scored[best_name], 6)},
            "The model has learned nothing usable: check labels and features for signal, the learning "
            "rate, and whether the metric suits the class balance.")
    return None


def diagnose(facts: Facts) -> list[Finding]:
    """Run every registered check; findings ordered by severity."""
    found = [f for e in FINDINGS.entries() if e.meta.get("check") and (f := e.obj(facts)) is not None]
    return sorted(found, key=lambda x: SEVERITY_ORDER.get(x.severity, 9))


def non_finite_loss(epoch: int, step: int, value: float, lr: float, limit: float | None = None) -> Finding:
    """The finding for a run stopped by a NaN/inf or exploding loss (made by the pipeline, not a check)."""
    what = f"became {value}" if limit is None else f"exploded to {value:.4g} (limit {limit:.4g})"
    evidence = {"epoch": epoch, "step": step, "loss": str(value), "lr": lr}
    if limit is not None:
        evidence["limit"] = limit
    return Finding(
        "non_finite_loss", "critical", f"Training diverged: the loss {what} at epoch {epoch}, step {step}",
        evidence,
        "Lower the learning rate (try `methodo lr-find`), clip gradients, and check the inputs for NaN/inf.")


FINDINGS.register("non_finite_loss", non_finite_loss, help="the loss became NaN or infinite; training stopped",
                  check=False)

# The data checks (stage "data": run by `methodo data inspect` and at the start of `methodo run`) live
# with the data stage; importing them registers them here, so one registry lists every finding.
from methodo.data import audit as _data_audit  # noqa: E402,F401
