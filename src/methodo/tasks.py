"""What the training loop needs to know about a task: its loss and its per-epoch score.

One :class:`TaskSpec` per task, in the ``TASKS`` registry. The loop asks the spec for the loss and
for the score it writes to ``metrics.csv`` (``train_<score>``, ``val_<score>``); everything else
(metrics, baselines, figures) belongs to the evaluate and report stages.

The epoch score is accumulated over batches as ``(sum, count)`` pairs — the sum a 0-dim tensor on
the batch's device, so the loop adds them up without a host sync per batch — then turned into the
epoch's value by ``finish``: accuracy is ``correct / rows``, pixel accuracy ``correct / pixels``, perplexity
``exp(summed NLL / tokens)``.

Examples
--------
>>> import torch
>>> from methodo.tasks import task_spec
>>> spec = task_spec("segmentation")
>>> out = torch.zeros(2, 3, 4, 4); out[:, 1] = 5.0          # logits: class 1 everywhere
>>> y = torch.ones(2, 4, 4, dtype=torch.long); y[0, 0, 0] = 0
>>> s, n = spec.batch_score(out, y)
>>> spec.score, float(s) / n
('pixel_accuracy', 0.96875)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from methodo.registry import Registry

TASKS = Registry("task")


@dataclass(frozen=True)
class TaskSpec:
    """Loss and epoch score of one task.

    ``loss(out, y, class_weights, label_smoothing=0.0)`` is the mean training loss of a batch. ``batch_score(out, y,
    y_std=1.0)`` returns ``(sum, count)`` for the epoch score (sum: a 0-dim tensor, count: an int);
    ``finish(float(sum) / count)`` is the value.
    """

    name: str
    score: str
    higher_is_better: bool
    loss: Callable
    batch_score: Callable
    finish: Callable[[float], float] = lambda v: v


def task_spec(task: str) -> TaskSpec:
    return TASKS.get(task, key="task")


def _cross_entropy(out, y, class_weights=None, label_smoothing=0.0):
    import torch.nn.functional as F

    # rows (N, C) | pixels (N, C, H, W) | tokens (N, T, V): the class axis must be axis 1
    if out.ndim == 3:
        out = out.transpose(1, 2)
    return F.cross_entropy(out, y, weight=class_weights, label_smoothing=label_smoothing)


def _mse(out, y, class_weights=None, label_smoothing=0.0):
    import torch.nn.functional as F

    return F.mse_loss(out.squeeze(-1).float(), y)


def _correct(out, y, y_std=1.0):
    return (out.argmax(1) == y).sum(), y.numel()


def _abs_error(out, y, y_std=1.0):
    return (out.squeeze(-1) - y).abs().sum().double() * y_std, y.numel()  # target units, in float64


def _token_nll(out, y, y_std=1.0):
    import torch.nn.functional as F

    return F.cross_entropy(out.transpose(1, 2), y, reduction="sum"), y.numel()


def _exp(v: float) -> float:
    return math.exp(min(v, 700.0))  # perplexity; capped so a diverging epoch reads inf-like, not an error


TASKS.register("classification", TaskSpec("classification", "accuracy", True, _cross_entropy, _correct),
               help="one class per row: cross-entropy, epoch score accuracy")
TASKS.register("regression", TaskSpec("regression", "mae", False, _mse, _abs_error),
               help="one number per row: mean squared error on the standardized target, epoch score MAE")
TASKS.register("segmentation", TaskSpec("segmentation", "pixel_accuracy", True, _cross_entropy, _correct),
               help="one class per pixel: per-pixel cross-entropy, epoch score pixel accuracy")
TASKS.register("language_modeling", TaskSpec("language_modeling", "perplexity", False, _cross_entropy,
                                             _token_nll, _exp),
               help="next token of every position: cross-entropy per token, epoch score perplexity")
