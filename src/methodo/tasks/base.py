"""The task spec type and the ``TASKS`` registry, with the pieces several tasks share.

Task modules (``classification.py``, ...) import this module, not the ``methodo.tasks`` package, so the
package can import them without an import cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from methodo.registry import Registry

TASKS = Registry("task")


def _identity(v):
    return v


@dataclass(frozen=True)
class TaskSpec:
    """What one task does at every stage. Callables take plain tensors / arrays; none imports heavily at load.

    Training (the loop): ``loss(out, y, class_weights, label_smoothing=0.0)`` is the mean training loss of
    a batch; ``batch_score(out, y, y_std=1.0)`` returns ``(sum, count)`` for the epoch score (sum: a 0-dim
    tensor, count: an int);
    ``finish(sum / count)`` is the value.

    Evaluation: ``to_scores(out, y)`` turns a batch of model outputs into what metrics read
    (``y`` only when ``scores_need_targets``); ``decide(scores)`` is the prediction per row or pixel
    the checks and decided-class metrics look at; ``baselines(y_train, y_eval, n_classes, seed)``
    the dummy strategies' metrics; ``tables(scores, y, class_names)`` the test tables (or None).

    Outputs: ``write_outputs(ctx)`` writes the task's figures and prediction files (``ctx`` is a
    :class:`methodo.stages.Outputs`; ``ctx.write_split_predictions`` writes ``predictions_val.csv`` and
    ``predictions_test.csv`` with the same columns).
    """

    name: str
    score: str
    higher_is_better: bool
    loss: Callable
    batch_score: Callable
    n_outputs: Callable[[Any], int]  # dataset → model outputs per row (classes, 1, vocabulary, labels)
    strata: Callable  # targets → what a stratified split keeps in proportion (None: nothing)
    to_scores: Callable
    baselines: Callable
    finish: Callable[[float], float] = _identity
    decide: Callable | None = _identity  # None: no single prediction per row to check (tokens)
    metric_input: Callable = _identity  # scores → what the task's metrics take (decided maps for pixels)
    tables: Callable | None = None
    write_outputs: Callable | None = None
    scores_need_targets: bool = False  # language modeling scores the target tokens
    has_classes: bool = False  # one class per row: stratified splits, class counts, balancing, label checks
    standardize_target: bool = False  # regression: the loop trains on a standardized target
    pixel_classes: bool = False  # one class per pixel: class counts and weights over pixels
    reference: bool = False  # a scikit-learn reference model can be fitted on the same table
    explain: str | None = None  # None: explanations supported; else why they are skipped
    count_unit: str | None = None  # what class counts count, when not rows
    per_row: bool = True  # one output vector per row (not per pixel or token): the row models can do it
    headline: tuple[str, int] = ("rmse", -1)  # the metric that says whether the input was used, and its direction
    # how label issues are searched (methodo.evaluate.label_issues): "multiclass" (one class per row),
    # "multilabel" (several yes/no labels per row), or None (no label to check: values, pixels, tokens)
    label_issues: str | None = None
    # the split used when data.split.method is not set (None: the config's default, stratified)
    default_split: str | None = None
    # (dataset, rows, train rows) → what the metrics score a split against, when more than the targets
    # (forecasting: the targets, the baselines' forecasts and the MASE scale from the training rows)
    eval_targets: Callable | None = None
    # the task whose metrics (and bootstrap sums) this one reads, when it is that task on other inputs
    # (graph_classification is classification of graphs); None: its own, registered with task=NAME
    metrics_of: str | None = None
    # ``on_epoch(prep, rd) -> hook(row)``: what the task writes after each epoch (generation: sample grids)
    on_epoch: Callable | None = None
    data_tasks: tuple[str, ...] = ()  # datasets made for these tasks serve this one too (generation: class images)
    help: str = ""

    @property
    def decided_classes(self) -> bool:
        """The decided prediction is a class (per row or per pixel)."""
        return self.has_classes or self.pixel_classes


def task_spec(task: str) -> TaskSpec:
    return TASKS.get(task, key="task")


def metrics_task(task: str) -> str:
    """The task name the metrics are registered under for ``task`` (its ``metrics_of``, or itself)."""
    spec = TASKS.get(task) if task in TASKS else None
    return (spec.metrics_of if spec is not None else None) or task


# ---------------------------------------------------------------- shared by several tasks


def cross_entropy(out, y, class_weights=None, label_smoothing=0.0):
    import torch.nn.functional as F

    # rows (N, C) | pixels (N, C, H, W) | tokens (N, T, V): the class axis must be axis 1
    if out.ndim == 3:
        out = out.transpose(1, 2)
    return F.cross_entropy(out, y, weight=class_weights, label_smoothing=label_smoothing)


def correct(out, y, y_std=1.0):
    return (out.argmax(1) == y).sum(), y.numel()


def softmax(out, y=None):
    return out.softmax(1)


def argmax(p):
    return p.argmax(1)


def no_strata(y):
    return None


def exp_capped(v: float) -> float:
    return math.exp(min(v, 700.0))  # perplexity; capped so a diverging epoch reads inf-like, not an error
