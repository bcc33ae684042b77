"""Evaluation: metrics with bootstrap intervals, per-class tables, dummy baselines, and the binary
decision threshold chosen on validation. Evaluation-only sets (``ood``: out-of-domain text) get
the same metrics, intervals and baselines as the test split."""

from __future__ import annotations

import numpy as np

from methodo.errors import ConfigError, choices
from methodo.evaluate.baselines import baseline_metrics
from methodo.evaluate.metrics import (
    METRICS, bootstrap_intervals, classification_tables, compute_metrics, metric_names, predict,
    segmentation_tables,
)

__all__ = ["METRICS", "compute_metrics", "classification_tables", "predict", "baseline_metrics",
           "bootstrap_intervals", "evaluate_splits", "check_metric_names"]


def check_metric_names(task: str, names: list[str] | None) -> None:
    """``evaluate.metrics`` must name metrics of the run's task."""
    allowed = metric_names(task)
    for n in names or []:
        if n not in allowed:
            raise ConfigError(f"evaluate.metrics: {n!r} is not a {task} metric; choose from {choices(allowed)}")


def evaluate_splits(task: str, preds: dict[str, np.ndarray], y: dict[str, np.ndarray], *, n_classes: int,
                    class_names: list[str] | None, ecfg, seed: int, progress: bool = False) -> dict:
    """Everything the summary reports about predictions: metrics per split (and why some are
    undefined), bootstrap intervals (and how they were computed) and tables on test, baselines, and
    the binary threshold.

    ``preds`` may hold evaluation-only sets besides train/val/test (``ood``); they get metrics,
    intervals and, under ``extra_baselines``, the baselines too. ``progress``: a bar per bootstrap on a
    terminal."""
    names = ecfg.metrics or [n for n in metric_names(task) if not (n == "top3_accuracy" and n_classes <= 3)]
    extra = [s for s in preds if s not in ("train", "val", "test")]
    from methodo.tasks import task_spec

    spec = task_spec(task)
    probs = preds
    preds = {s: spec.metric_input(p) for s, p in preds.items()}  # segmentation: the decided class of each pixel
    out: dict = {"metrics": {}, "undefined": {}}
    for s in ("train", "val", "test", *extra):
        why: dict[str, str] = {}
        out["metrics"][s] = compute_metrics(task, preds[s], y[s], n_classes, names=names, undefined=why)
        if why:
            out["undefined"][s] = why
    # Bootstrap resamples rows: whole images for segmentation and whole windows for language
    # modeling, never single pixels or tokens (neighbours are too correlated for that to mean
    # anything). Windows cut from one document are still correlated, so the LM interval is a
    # lower bound on the real uncertainty.
    from methodo.evaluate.bootstrap import percentile_intervals

    boot = {s: percentile_intervals(task, preds[s], y[s], n_classes, names=names, n_boot=ecfg.bootstrap, seed=seed,
                                    level=ecfg.confidence, budget=ecfg.bootstrap_budget,
                                    progress=progress)
            for s in ("test", *extra)} if ecfg.bootstrap else {}
    out["intervals"] = {s: boot[s][0] if boot else {} for s in ("test", *extra)}
    out["bootstrap"] = {s: info for s, (_, info) in boot.items()} or None

    def baselines(split):
        return {k: {m: v for m, v in vals.items() if m in names}
                for k, vals in baseline_metrics(task, y["train"], y[split], n_classes, seed=seed).items()}

    out["baselines"] = baselines("test")
    if extra:
        out["extra_baselines"] = {s: baselines(s) for s in extra}
    if spec.tables is not None:
        out["tables"] = {"test": spec.tables(probs["test"], y["test"], class_names)}
    if spec.has_classes and n_classes == 2:  # a binary decision: choose its threshold on val
        from methodo.evaluate import threshold as th

        t, why = th.choose(th.sweep(preds["val"][:, 1], y["val"]), ecfg.threshold.rule, ecfg.threshold.value)
        out["threshold"] = {"rule": ecfg.threshold.rule, "value": t, "why": why,
                            "val": th.at_threshold(preds["val"][:, 1], y["val"], t),
                            "test": th.at_threshold(preds["test"][:, 1], y["test"], t),
                            "test_at_0.5": th.at_threshold(preds["test"][:, 1], y["test"], 0.5)}
    return out
