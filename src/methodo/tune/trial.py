"""One trial: a config trained and scored on the validation split only (the test split is never read).

A trial runs the pipeline's own stages 1-4 (``stages.prepare``, ``stages.auto_lr``, ``train.loop.fit``)
and scores the best-epoch model on the validation split with the metrics ``methodo run`` reports
(:func:`methodo.evaluate.compute_metrics`), so ``methodo run best.yaml`` gives the same validation
numbers. Pruning enters through the loop's ``on_epoch`` seam.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

# objective names beside val_<metric>: what else a trial measures, and its better direction
EXTRA_OBJECTIVES = {
    "val_loss": ("minimize", "validation loss of the best epoch"),
    "parameters": ("minimize", "number of model parameters"),
    "latency_ms": ("minimize", "milliseconds to predict one validation row (batched, median of 3 passes)"),
    "epochs": ("minimize", "epochs the trial ran"),
    "train_time_s": ("minimize", "seconds of training"),
}


@dataclass
class Objective:
    name: str
    direction: str  # maximize | minimize

    @property
    def sign(self) -> float:
        """+1 when higher is better."""
        return 1.0 if self.direction == "maximize" else -1.0

    def __str__(self) -> str:
        return f"{self.name}:{'max' if self.direction == 'maximize' else 'min'}"


def objective_choices(task: str) -> dict[str, tuple[str, str]]:
    """Every objective a trial of ``task`` can be scored on: name → (direction, help)."""
    from methodo.evaluate.metrics import METRICS, metric_names

    out = {f"val_{m}": ("maximize" if METRICS.entry(m).meta.get("higher_is_better", True) else "minimize",
                        f"validation {m}") for m in metric_names(task)}
    out.update(EXTRA_OBJECTIVES)
    return out


def parse_objectives(text: str | None, task: str) -> list[Objective]:
    """``val_accuracy:max,parameters:min`` → objectives (default: the task's epoch score on val)."""
    from methodo.errors import ConfigError, choices
    from methodo.tasks import task_spec

    known = objective_choices(task)
    if not text:
        score = f"val_{task_spec(task).score}"
        name = score if score in known else next(iter(known))
        return [Objective(name, known[name][0])]
    out = []
    for item in [t.strip() for t in text.split(",")]:
        name, _, way = item.partition(":")
        name = name.strip()
        if name not in known:
            raise ConfigError(f"--objectives {text}: {name!r} is not an objective of a {task} run; choose "
                              f"among {choices(sorted(known))}")
        if way and way not in ("max", "min"):
            raise ConfigError(f"--objectives {text}: {item!r}: the direction is max or min (got {way!r})")
        direction = known[name][0] if not way else ("maximize" if way == "max" else "minimize")
        if any(o.name == name for o in out):
            raise ConfigError(f"--objectives {text}: {name} is listed twice")
        out.append(Objective(name, direction))
    return out


@dataclass
class TrialOutcome:
    """What a trial measured: ``state`` COMPLETE | PRUNED | FAIL, the objective values, the details."""

    state: str
    values: list[float] | None = None
    metrics: dict = field(default_factory=dict)  # val metrics (COMPLETE)
    history: list[dict] = field(default_factory=list)
    epochs_run: int = 0
    best_epoch: int = 0
    error: str | None = None
    duration_s: float = 0.0
    lrs: list[float] = field(default_factory=list)  # LR of every optimizer step (hypergradient trajectories)


def prune_key(task: str, objective: Objective) -> tuple[str, str]:
    """The epoch column a pruner reads, and its direction: the task's val score when it points the
    objective's way, else val_loss."""
    from methodo.tasks import task_spec

    spec = task_spec(task)
    score_dir = "maximize" if spec.higher_is_better else "minimize"
    if objective.name == "val_loss" or score_dir != objective.direction:
        return "val_loss", "minimize"
    return f"val_{spec.score}", score_dir


def run_trial(cfg, objectives: list[Objective], *, on_epoch: Callable[[dict], bool] | None = None,
              keep_lrs: bool = False) -> TrialOutcome:
    """Train ``cfg`` (a validated :class:`~methodo.config.Config`) and score it on the validation split.

    ``on_epoch(row)`` is called after each epoch with its ``metrics.csv`` row; True stops the training
    (pruning: the outcome is PRUNED). Bad data, a diverged loss or an undefined metric give a FAIL
    outcome with the one-line reason, never an exception (a study goes on after a bad trial).
    """
    from methodo import stages
    from methodo.errors import BadInput, RunFailed
    from methodo.train.loop import NonFiniteLoss, fit

    t0 = time.perf_counter()
    pruned = [False]

    def epoch(row):
        stop = bool(on_epoch(row)) if on_epoch is not None else False
        pruned[0] = pruned[0] or stop
        return stop

    try:
        with _threads_kept():
            prep = stages.prepare(cfg)
            prep, _, _ = stages.auto_lr(prep)
            res = fit(prep.model, prep.data, prep.cfg.train, seed=prep.cfg.seed, class_weights=prep.class_weights,
                      on_epoch=epoch)
            out = TrialOutcome("COMPLETE", history=res.history, epochs_run=res.epochs_run, best_epoch=res.best_epoch,
                               lrs=list(res.lrs) if keep_lrs else [])
            if pruned[0]:
                out.state = "PRUNED"
                return _done(out, t0)
            train_s = time.perf_counter() - t0
            out.metrics = val_metrics(prep)
            measured = {f"val_{k}": v for k, v in out.metrics.items()}
            best_row = res.history[res.best_epoch - 1] if res.best_epoch else res.history[-1]
            measured["val_loss"] = best_row["val_loss"]
            measured["parameters"] = float(sum(p.numel() for p in prep.model.parameters()))
            measured["epochs"] = float(res.epochs_run)
            measured["train_time_s"] = train_s
            if any(o.name == "latency_ms" for o in objectives):
                measured["latency_ms"] = _latency_ms(prep)
    except NonFiniteLoss as exc:
        return _done(TrialOutcome("FAIL", error=f"training diverged: {exc}"), t0)
    except (BadInput, RunFailed) as exc:
        return _done(TrialOutcome("FAIL", error=" ".join(str(exc).split())), t0)
    except (ValueError, RuntimeError, TypeError, ArithmeticError) as exc:  # a combination no check foresaw
        return _done(TrialOutcome("FAIL", error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"), t0)
    values = []
    for o in objectives:
        v = measured.get(o.name)
        if v is None or not math.isfinite(v):
            out.state, out.error = "FAIL", f"{o.name} is undefined for this trial ({v})"
            return _done(out, t0)
        values.append(float(v))
    out.values = values
    return _done(out, t0)


def _done(out: TrialOutcome, t0: float) -> TrialOutcome:
    out.duration_s = time.perf_counter() - t0
    return out


class _threads_kept:
    """``train.threads`` applies to the trial only (as in ``methodo.run``)."""

    def __enter__(self):
        import torch

        self.n = torch.get_num_threads()

    def __exit__(self, *exc):
        import torch

        if torch.get_num_threads() != self.n:
            torch.set_num_threads(self.n)


def val_metrics(prep) -> dict:
    """The validation metrics ``methodo run`` reports for the model in ``prep`` (same names, same code)."""
    from methodo.evaluate import compute_metrics, predict
    from methodo.evaluate.metrics import metric_names

    data, spec, task = prep.data, prep.spec, prep.ds.task
    n_classes = prep.n_classes
    p = predict(prep.model, data.inputs("val"), task=task, batch_size=prep.cfg.train.eval_batch_size,
                inverse_y=data.preprocessor.inverse_y, y=data.tensors["val"][1] if spec.scores_need_targets else None)
    names = prep.cfg.evaluate.metrics or [n for n in metric_names(task) if not (n == "top3_accuracy" and n_classes <= 3)]
    return compute_metrics(task, spec.metric_input(p), data.raw_y["val"], n_classes, names=names)


def _latency_ms(prep) -> float:
    import statistics

    import torch

    X = prep.data.inputs("val")
    bs = prep.cfg.train.eval_batch_size
    model = prep.model.eval()
    times = []
    with torch.no_grad():
        for _ in range(3):
            t = time.perf_counter()
            for s in range(0, len(X), bs):
                model(X[s:s + bs])
            times.append((time.perf_counter() - t) * 1000 / max(len(X), 1))
    return statistics.median(times)
