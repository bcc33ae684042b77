"""The training loop: one function, read top to bottom.

Data is in memory, so batches are cut by tensor indexing from one seeded permutation per epoch
(no per-sample collation). Each epoch: train → validate → step the scheduler → early stopping →
checkpoints (``best`` on improvement, ``last`` every epoch, both atomic and pickle-free).
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from methodo.errors import DataError
from methodo.seed import generator
from methodo.tasks import task_spec
from methodo.train.checkpoint import load_checkpoint, save_checkpoint
from methodo.train.optim import build_optimizer, needs_closure
from methodo.train.schedules import build_scheduler


class NonFiniteLoss(Exception):
    """The loss became NaN/inf, or exploded past ``divergence_factor`` × the first loss.

    Training stopped at ``epoch``/``step`` before the optimizer applied that step.
    """

    def __init__(self, epoch: int, step: int, value: float, limit: float | None = None):
        what = f"non-finite loss ({value})" if limit is None else f"exploding loss ({value:.4g} > limit {limit:.4g})"
        super().__init__(f"{what} at epoch {epoch}, step {step}")
        self.epoch, self.step, self.value, self.limit = epoch, step, value, limit


def epoch_metric_names(task: str) -> list[str]:
    """Columns of ``metrics.csv`` that early stopping can monitor."""
    m = task_spec(task).score
    return ["train_loss", f"train_{m}", "val_loss", f"val_{m}"]


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one row per epoch (metrics.csv)
    lrs: list[float] = field(default_factory=list)  # LR of every optimizer step
    best_epoch: int = 0
    best_value: float | None = None
    epochs_run: int = 0
    stopped_early: bool = False


class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, monitor: str, mode: str, patience: int, min_delta: float):
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.best: float | None = None
        self.bad_epochs = 0

    def improved(self, value: float) -> bool:
        """Record ``value``; True when it is the new best."""
        if self.best is None or (
            value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        ):
            self.best, self.bad_epochs = value, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience


def _guard(loss: float, epoch: int, step: int, first: float | None, factor: float) -> None:
    """Stop on a NaN/inf loss, or one that exploded past ``factor`` × the first batch's loss."""
    if not math.isfinite(loss):
        raise NonFiniteLoss(epoch, step, loss)
    if first is not None and factor and loss > factor * max(first, 1.0):
        raise NonFiniteLoss(epoch, step, loss, limit=factor * max(first, 1.0))


def check_batch_size(batch_size: int, n_train: int) -> None:
    if batch_size > n_train:
        raise DataError(f"train.batch_size={batch_size} is larger than the training split "
                        f"({n_train} rows); use at most {n_train}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise DataError("train.device: 'cuda' requested but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def _loss_fn(task: str, class_weights: torch.Tensor | None) -> Callable:
    loss = task_spec(task).loss
    return lambda out, y: loss(out, y, class_weights)


@torch.no_grad()
def evaluate_loss(model, X, y, loss_fn, task: str, batch_size: int, y_std: float = 1.0) -> tuple[float, float]:
    """``(mean loss, the task's epoch score)`` over ``X`` in eval mode (MAE in target units)."""
    model.eval()
    spec = task_spec(task)
    total, score, count, n = 0.0, 0.0, 0, len(X)
    for s in range(0, n, batch_size):
        out = model(X[s:s + batch_size])
        yb = y[s:s + batch_size]
        total += loss_fn(out, yb).item() * len(yb)
        num, den = spec.batch_score(out, yb, y_std)
        score, count = score + num, count + den
    return total / n, spec.finish(score / max(count, 1))


def fit(model: torch.nn.Module, data, tcfg, *, seed: int, ckpt_dir: Path | None = None,
        class_weights: torch.Tensor | None = None, on_epoch: Callable[[dict], None] | None = None,
        resume_from: Path | None = None) -> TrainResult:
    """Train ``model`` on ``data.tensors['train']``, validating on ``'val'``; returns the history.

    The model ends with the best weights by the early-stopping monitor (``val_loss`` when early
    stopping is off: the epoch count is then fixed, but model selection still uses validation). Raises :class:`NonFiniteLoss` when the loss becomes NaN/inf.
    """
    task = data.task
    device = resolve_device(tcfg.device)
    model.to(device)
    Xtr, ytr = (t.to(device) for t in data.tensors["train"])
    Xva, yva = (t.to(device) for t in data.tensors["val"])
    y_std = data.preprocessor.y_std if task == "regression" else 1.0
    n, bs = len(Xtr), tcfg.batch_size
    check_batch_size(bs, n)
    steps_per_epoch = math.ceil(n / bs)
    spec = task_spec(task)
    loss_fn = _loss_fn(task, None if class_weights is None else class_weights.to(device))

    # 1. Optimizer and scheduler; the scheduler steps per batch ("step") or per epoch.
    oc = tcfg.optimizer
    opt = build_optimizer(model.parameters(), oc.name, oc.lr, oc.options)
    closure_step = needs_closure(oc.name)
    sched, interval = build_scheduler(opt, tcfg.scheduler.name, tcfg.scheduler.options,
                                      epochs=tcfg.epochs, steps_per_epoch=steps_per_epoch)
    es_cfg = tcfg.early_stopping
    monitor = es_cfg.monitor if es_cfg else "val_loss"
    stopper = EarlyStopping(monitor, es_cfg.resolved_mode if es_cfg else "min",
                            es_cfg.patience if es_cfg else 0, es_cfg.min_delta if es_cfg else 0.0)
    shuffle = generator(seed, offset=1)
    result = TrainResult()
    best_weights = copy.deepcopy(model.state_dict())
    start_epoch = 1
    first_loss: float | None = None  # the divergence guard compares against the first batch's loss

    # 2. Resume: model, optimizer, scheduler, RNGs, counters and history from `last`.
    if resume_from is not None:
        weights, state, _ = load_checkpoint(resume_from / "last.safetensors")
        model.load_state_dict(weights)
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state["scheduler"] is not None:
            sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_torch"])
        np.random.set_state(state["rng_numpy"])
        random.setstate(state["rng_python"])
        shuffle.set_state(state["rng_shuffle"])
        stopper.best, stopper.bad_epochs = state["stopper_best"], state["stopper_bad_epochs"]
        result.history, result.lrs = state["history"], state["lrs"]
        result.best_epoch, result.best_value = state["best_epoch"], state["best_value"]
        first_loss = state["first_loss"]
        start_epoch = state["epoch"] + 1
        best_path = resume_from / "best.safetensors"
        best_weights = load_checkpoint(best_path)[0] if best_path.exists() else copy.deepcopy(weights)

    total_steps = tcfg.epochs * steps_per_epoch
    import sys

    from tqdm.auto import tqdm

    # A live bar on a terminal; in a log file (CI, Slurm) one line per epoch instead.
    live = tcfg.progress and sys.stderr.isatty()
    bar = tqdm(total=total_steps, initial=(start_epoch - 1) * steps_per_epoch, disable=not live,
               unit="step", dynamic_ncols=True, leave=False)
    try:
        for epoch in range(start_epoch, tcfg.epochs + 1):
            t0 = time.perf_counter()
            # 3. One pass over a fresh permutation of the training rows.
            model.train()
            perm = torch.randperm(n, generator=shuffle).to(device)
            loss_sum, score_sum, score_count, seen = 0.0, 0.0, 0, 0
            for step, s in enumerate(range(0, n, bs)):
                idx = perm[s:s + bs]
                if len(idx) < 2 and n > 1:  # a 1-row batch breaks batch norm; it is dropped
                    continue
                xb, yb = Xtr[idx], ytr[idx]
                result.lrs.append(opt.param_groups[0]["lr"])
                if closure_step:  # L-BFGS re-evaluates the loss several times per step
                    def closure():
                        opt.zero_grad(set_to_none=True)
                        l = loss_fn(model(xb), yb)
                        l.backward()
                        return l
                    opt.step(closure)
                    with torch.no_grad():
                        out = model(xb)
                        loss = loss_fn(out, yb)
                else:
                    out = model(xb)
                    loss = loss_fn(out, yb)
                    lv = loss.item()
                    _guard(lv, epoch, step + 1, first_loss, tcfg.divergence_factor)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                lv = loss.item()
                _guard(lv, epoch, step + 1, first_loss, tcfg.divergence_factor)
                if first_loss is None:
                    first_loss = lv
                if sched is not None and interval == "step":
                    sched.step()
                loss_sum += lv * len(idx)
                with torch.no_grad():
                    num, den = spec.batch_score(out, yb, y_std)
                    score_sum, score_count = score_sum + num, score_count + den
                seen += len(idx)
                bar.update(1)

            # 4. Validation, the epoch row, the epoch-level scheduler step.
            val_loss, val_score = evaluate_loss(model, Xva, yva, loss_fn, task, tcfg.eval_batch_size, y_std)
            m = spec.score
            row = {
                "epoch": epoch, "lr": result.lrs[-1] if result.lrs else oc.lr,
                "train_loss": loss_sum / max(seen, 1), f"train_{m}": spec.finish(score_sum / max(score_count, 1)),
                "val_loss": val_loss, f"val_{m}": val_score,
            }
            if not math.isfinite(val_loss):
                raise NonFiniteLoss(epoch, steps_per_epoch, val_loss)
            if sched is not None and interval == "epoch":
                sched.step()
            elif sched is not None and interval == "plateau":
                sched.step(row[monitor])

            # 5. Early stopping bookkeeping and checkpoints (best on improvement, last always).
            if stopper.improved(row[monitor]):
                result.best_epoch, result.best_value = epoch, row[monitor]
                best_weights = copy.deepcopy(model.state_dict())
                if ckpt_dir is not None:
                    save_checkpoint(ckpt_dir / "best.safetensors", best_weights,
                                    meta={"epoch": epoch, monitor: row[monitor]})
            row["time_s"] = time.perf_counter() - t0
            result.history.append(row)
            if ckpt_dir is not None:
                state = {
                    "epoch": epoch, "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "rng_torch": torch.get_rng_state(), "rng_numpy": np.random.get_state(),
                    "rng_python": random.getstate(), "rng_shuffle": shuffle.get_state(),
                    "stopper_best": stopper.best, "stopper_bad_epochs": stopper.bad_epochs,
                    "history": result.history, "lrs": result.lrs,
                    "best_epoch": result.best_epoch, "best_value": result.best_value,
                    "first_loss": first_loss,
                }
                save_checkpoint(ckpt_dir / "last.safetensors", model.state_dict(), state, meta={"epoch": epoch})
            if on_epoch is not None:
                on_epoch(row)
            shown = {k: f"{v:.4g}" for k, v in row.items() if k.startswith(("train_", "val_"))}
            bar.set_postfix(shown)
            if tcfg.progress and not live:
                print(f"epoch {epoch}/{tcfg.epochs} " + " ".join(f"{k}={v}" for k, v in shown.items())
                      + f" ({row['time_s']:.2f} s)", file=sys.stderr, flush=True)
            if stopper.should_stop:
                result.stopped_early = True
                break
    finally:
        bar.close()
    result.epochs_run = len(result.history)
    model.load_state_dict(best_weights)
    return result
