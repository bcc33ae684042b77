"""Everything that differs per task lives on the task: one :class:`TaskSpec` per task in ``TASKS``.

A spec says how many outputs the model has, the training loss, the per-epoch score the loop writes to
``metrics.csv`` (``train_<score>``, ``val_<score>``), how model outputs become scores (probabilities,
values, token log-probabilities), what the metrics and the checks score (the decided class of each
pixel, ...), the dummy baselines, the tables, the figures and prediction files a run writes, and
which data-stage treatments apply (stratification by class, balancing, target standardization).
The stages ask the spec; they do not branch on the task's name.

Adding a task: a module here that builds a ``TaskSpec`` and registers it with ``TASKS.register`` (see
``multilabel.py``), its metrics in ``methodo.evaluate.metrics`` registered with ``task=NAME``, and a
dataset whose ``task`` is NAME. The contract tests (``tests/test_contracts.py``) then cover it.

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

from methodo.tasks.base import TASKS, TaskSpec, task_spec

__all__ = ["TASKS", "TaskSpec", "task_spec"]

# each module registers its task
from methodo.tasks import classification, language_modeling, multilabel, regression, segmentation  # noqa: E402,F401,I001
from methodo.tasks import forecasting  # noqa: E402,F401
from methodo.tasks import graph  # noqa: E402,F401,I001
from methodo.tasks import generation  # noqa: E402,F401,I001
