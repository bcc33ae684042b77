"""The training loop: one function, read top to bottom.

Data is in memory, so batches are cut by tensor indexing from one seeded permutation per epoch
(no per-sample collation). Each optimizer step: forward (autocast when bf16) → loss (+ penalties
and the caller's ``extra_loss``) → backward (accumulated over ``accumulate`` micro-batches) →
guard on the step's losses and gradient norm, read from the device together → clipping →
decoupled weight decay → optimizer step → max-norm → LR schedule (L-BFGS: the closure step in
place of backward…step; the same guard and bookkeeping after it).
A warm-restart cycle that ends at a step leaves a snapshot (snapshot ensembles).
Each epoch: validate → monitor weights (every ``train.monitor.every`` epochs and the last) → LR
schedule / SWA → early stopping →
checkpoints (``best`` on improvement, ``last`` every epoch, both atomic and pickle-free, never
written from non-finite weights).

Helpers live in their own modules: ``schedules`` (LR), ``regularize`` (the registry of penalties,
clipping, constraints, applied by stage), ``monitor`` (weight statistics), ``swa`` (snapshots and
SWA), ``state`` (``TrainState``: everything a resume needs) and ``checkpoint`` (the file format).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from methodo import signals
from methodo.errors import ConfigError, DataError, StopRequested
from methodo.seed import generator
from methodo.tasks import task_spec
from methodo.train.checkpoint import load_checkpoint, save_checkpoint
from methodo.train.optim import build_optimizer, needs_closure
from methodo.train.regularize import Regularization, first_non_finite_grad, first_non_finite_param, grad_norm
from methodo.train.schedules import build_schedule
from methodo.train.state import Parts, TrainState


class NonFiniteLoss(Exception):
    """The loss (or a gradient, or a weight) became NaN/inf, or the loss exploded past
    ``divergence_factor`` × the first loss.

    Training stopped at ``epoch``/``step`` before the optimizer applied that step. ``tensor``
    names what was non-finite: ``"loss"``, ``"val_loss"``, ``"grad of NAME"`` or ``"weight NAME"``.
    """

    def __init__(self, epoch: int, step: int, value: float, limit: float | None = None, tensor: str = "loss"):
        if limit is not None:
            what = f"exploding loss ({value:.4g} > limit {limit:.4g})"
        elif tensor == "loss":
            what = f"non-finite loss ({value})"
        else:
            what = f"non-finite {tensor} ({value})"
        super().__init__(f"{what} at epoch {epoch}, step {step}")
        self.epoch, self.step, self.value, self.limit, self.tensor = epoch, step, value, limit, tensor


def epoch_metric_names(task: str) -> list[str]:
    """Columns of ``metrics.csv`` that early stopping can monitor."""
    m = task_spec(task).score
    return ["train_loss", f"train_{m}", "val_loss", f"val_{m}"]


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one row per epoch (metrics.csv)
    lrs: list[float] = field(default_factory=list)  # LR of every optimizer step
    losses: list[float] = field(default_factory=list)  # data loss of every optimizer step (mean of micro-batches)
    grad_norms: list[float] = field(default_factory=list)  # pre-clip gradient norm of every step (when computed)
    monitor: list[dict] = field(default_factory=list)  # per-epoch weight/gradient statistics
    skipped_batches: list[dict] = field(default_factory=list)  # {epoch, step, tensor} skipped by the NaN guard
    snapshots: list[dict] = field(default_factory=list)  # {epoch, step, file, weights} at each cycle's end
    swa_weights: dict | None = None  # averaged weights (batch-norm recomputed), when SWA ran
    swa_epochs: int = 0  # how many epochs were averaged
    best_epoch: int = 0
    best_value: float | None = None
    epochs_run: int = 0
    stopped_early: bool = False  # stopped by early stopping
    stopped_by: str | None = None  # "early_stopping" | "callback" (on_epoch returned True) | None: ran all epochs


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


def _loss_limit(first: float | None, factor: float) -> float:
    """The loss above which :func:`_guard` stops (``inf`` before the first loss or with no factor)."""
    return factor * max(first, 1.0) if first is not None and factor else math.inf


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


def loss_function(task: str, class_weights: torch.Tensor | None, label_smoothing: float = 0.0) -> Callable:
    """The task's training loss (``methodo.tasks``): cross-entropy per row, pixel or token; MSE."""
    loss = task_spec(task).loss
    return lambda out, y: loss(out, y, class_weights, label_smoothing)


_loss_fn = loss_function  # the foundation's name


def autocast_factory(device: torch.device, precision: str) -> Callable:
    """A zero-argument context factory: bf16 autocast, or a no-op for fp32."""
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def batches_per_epoch(n: int, bs: int, world: int = 1) -> int:
    """Batches the loop uses per epoch (a trailing 1-row batch is dropped: it breaks batch norm; under DDP
    a trailing batch that would leave a rank fewer than 2 rows, ``world`` processes sharing each batch)."""
    full, rest = divmod(n, bs)
    return full + (1 if rest >= 2 * world or (rest == 1 and n == 1 and world == 1) else 0)


def _to_host(values: list[torch.Tensor]) -> list[float]:
    """0-dim tensors as Python floats, in one device→host transfer (one sync) off the CPU."""
    if len(values) == 1 or values[0].device.type != "cuda":
        return [v.item() for v in values]  # on the CPU .item() is a read, not a sync
    dev = values[0].device
    return torch.stack([v.detach().to(dev, torch.float64) for v in values]).tolist()  # float32 → 64: exact


def _sum_on_host(values: list[torch.Tensor]) -> float:
    """The sum of 0-dim tensors (the tasks' ``batch_score`` sums), added in order in float64 after one
    device→host transfer: the same value as accumulating them one by one in a float64 tensor, without
    one device operation (and, on a GPU, one sync) per batch."""
    if not values:
        return 0.0
    if len(values) == 1:
        return 0.0 + values[0].item()
    return float(sum(torch.stack(values).tolist(), 0.0))


@torch.no_grad()
def evaluate_loss(model, X, y, loss_fn, task: str, batch_size: int, y_std: float = 1.0,
                  dist=None) -> tuple[float, float]:
    """``(mean loss, the task's epoch score)`` over ``X`` in eval mode (MAE in target units). Under DDP
    (``dist``) each rank evaluates its contiguous share of the rows and the sums are reduced."""
    model.eval()
    spec = task_spec(task)
    n_all = len(X)
    if dist is not None:
        lo, hi = n_all * dist.rank // dist.world, n_all * (dist.rank + 1) // dist.world
        X, y = X[lo:hi], y[lo:hi]
    total, count, n = 0.0, 0, len(X)
    nums = []  # the batches' score sums, read once at the end
    for s in range(0, n, batch_size):
        out = model(X[s:s + batch_size])
        yb = y[s:s + batch_size]
        total += loss_fn(out, yb).item() * len(yb)
        num, den = spec.batch_score(out.float(), yb, y_std)
        nums.append(num)
        count += den
    if dist is not None:
        from methodo.train.distributed import all_sum

        total, num_sum, count = all_sum(dist, [total, _sum_on_host(nums), float(count)])
        return total / n_all, spec.finish(num_sum / max(count, 1))
    return total / n, spec.finish(_sum_on_host(nums) / max(count, 1))


def _copy_weights(state: dict) -> dict:
    """A copy of a ``state_dict`` (tensors cloned, ``_metadata`` shared: ``load_state_dict`` only
    reads it): what ``copy.deepcopy`` gives, without its per-object memo bookkeeping (it runs on
    every improving epoch)."""
    out = type(state)((k, v.detach().clone()) for k, v in state.items())
    if hasattr(state, "_metadata"):
        out._metadata = copy.copy(state._metadata)
    return out


def _copy_into(dst: dict, src: dict) -> dict:
    """``dst`` refreshed in place with the values of ``src`` (one fused copy when every tensor is on
    one device): the best weights, on every improving epoch. A fresh copy of ``src`` when ``dst``
    does not match it key for key and shape for shape (best weights read back from a checkpoint)."""
    if dst.keys() != src.keys() or any(dst[k].shape != v.shape or dst[k].dtype != v.dtype for k, v in src.items()):
        return _copy_weights(src)
    a, b = [dst[k] for k in src], list(src.values())
    if len({t.device for t in a + b}) == 1:
        torch._foreach_copy_(a, b)
    else:
        for x, y in zip(a, b):
            x.copy_(y)
    return dst


def _takes_rows(fn: Callable) -> bool:
    """True when ``fn`` (the ``extra_loss`` seam) has a ``rows`` parameter (or ``*args``): it then gets
    the batch's row indices as its fifth argument."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "rows" in params or any(p.kind is p.VAR_POSITIONAL for p in params.values())


def _trainable_groups(model: torch.nn.Module, param_groups) -> list[dict]:
    """The optimizer's parameter groups: ``param_groups`` (a list of dicts, or ``model -> list of
    dicts``) or one group of all parameters; frozen parameters (``requires_grad=False``) left out."""
    if param_groups is None:
        groups = [{"params": list(model.parameters())}]
    else:
        groups = param_groups(model) if callable(param_groups) else param_groups
        groups = [dict(g) for g in groups]
        for i, g in enumerate(groups):
            if not isinstance(g, dict) or "params" not in g:
                raise ConfigError(f"param_groups[{i}]: each group is a dict with 'params' and optimizer options")
            g["params"] = list(g["params"])
    for g in groups:  # a group with keep_frozen keeps its frozen parameters: the caller unfreezes them later
        g["params"] = [p for p in g["params"] if p.requires_grad or g.get("keep_frozen")]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ConfigError("param_groups: no trainable parameter (every parameter has requires_grad=False)")
    return groups


def _epoch_helpers(model, opt, tcfg):
    """``(monitored metric, EarlyStopping, SWA or None, WeightMonitor or None)`` for the run's config."""
    es_cfg = tcfg.early_stopping
    monitor = es_cfg.monitor if es_cfg else "val_loss"
    stopper = EarlyStopping(monitor, es_cfg.resolved_mode if es_cfg else "min",
                            es_cfg.patience if es_cfg else 0, es_cfg.min_delta if es_cfg else 0.0)
    swa = watcher = None
    if tcfg.swa is not None:
        from methodo.train.swa import SWA

        swa = SWA(model, opt, tcfg.swa, tcfg.epochs)
    if tcfg.monitor.enabled:
        from methodo.train.monitor import WeightMonitor

        watcher = WeightMonitor(model)
    return monitor, stopper, swa, watcher


def _check_weights_finite(model, epoch: int, step: int, val_loss: float, state: dict | None = None,
                          floats: list[torch.Tensor] | None = None) -> None:
    """Stop (:class:`NonFiniteLoss`) on a non-finite validation loss or weight, naming the weight
    (``state``: the model's ``state_dict``, when the caller holds one; ``floats``: its floating
    tensors, all of one device and dtype, checked first in one fused kernel)."""
    if math.isfinite(val_loss) and floats is not None and _all_finite(floats):
        return
    if not math.isfinite(val_loss):
        bad = first_non_finite_param(model, state)
        raise NonFiniteLoss(epoch, step, val_loss, tensor=f"weight {bad}" if bad else "val_loss")
    bad = first_non_finite_param(model, state)
    if bad is not None:
        raise NonFiniteLoss(epoch, step, float("nan"), tensor=f"weight {bad}")


def _fused_floats(state: dict) -> list[torch.Tensor] | None:
    """The floating tensors of ``state`` when they share one device and dtype (one fused kernel
    reads them all), else ``None``."""
    floats = [t for t in state.values() if t.is_floating_point()]
    return floats if len({(t.device, t.dtype) for t in floats}) == 1 else None


def _all_finite(floats: list[torch.Tensor]) -> bool:
    """True when every value is finite, read in one fused kernel and one transfer: the norms are
    ≥ 0, so their sum is finite only if each is (a sum that overflows reads False, and the caller's
    slower check by tensor settles it)."""
    return math.isfinite(float(torch.stack(torch._foreach_norm(floats, 2.0)).sum()))


def _show_progress(bar, row: dict, epoch: int, tcfg, live: bool) -> None:
    """The epoch's scores on the live bar, or one line per epoch when stderr is a log file."""
    import sys

    if not live and not tcfg.progress:
        return
    shown = {k: f"{v:.4g}" for k, v in row.items() if k.startswith(("train_", "val_"))}
    bar.set_postfix(shown)
    if tcfg.progress and not live:
        print(f"epoch {epoch}/{tcfg.epochs} " + " ".join(f"{k}={v}" for k, v in shown.items())
              + f" ({row['time_s']:.2f} s)", file=sys.stderr, flush=True)


def _finish(result: TrainResult, state, watcher, swa, Xtr, bs: int, ckpt_dir: Path | None) -> None:
    """The result's summary fields, and the SWA model (batch norm recomputed on ``Xtr``) when SWA ran."""
    result.best_epoch, result.best_value = state.best_epoch, state.best_value
    result.epochs_run = len(state.history)
    result.monitor = watcher.history if watcher is not None else []
    if swa is not None and swa.n_averaged > 0:
        result.swa_weights = swa.weights(Xtr, bs)
        result.swa_epochs = swa.n_averaged
        if ckpt_dir is not None:
            save_checkpoint(ckpt_dir / "swa.safetensors", result.swa_weights, meta={"epochs_averaged": swa.n_averaged})


def fit(model: torch.nn.Module, data, tcfg, *, seed: int, ckpt_dir: Path | None = None,
        class_weights: torch.Tensor | None = None, on_epoch: Callable[[dict], object] | None = None,
        resume_from: Path | None = None, param_groups: list[dict] | Callable | None = None,
        extra_loss: Callable | None = None, dist=None) -> TrainResult:
    """Train ``model`` on ``data.tensors['train']``, validating on ``'val'``; returns the history.

    The model ends with the best weights by the early-stopping monitor (``val_loss`` when early
    stopping is off: the epoch count is then fixed, but model selection still uses validation).
    Raises :class:`NonFiniteLoss` when the loss, a gradient or a weight becomes NaN/inf (with
    ``train.nan_guard.policy=stop``; ``skip`` drops such batches instead).

    Three seams, plain arguments (no hooks):

    - ``param_groups``: the optimizer's parameter groups, a list of dicts (``{"params": [...],
      "lr": ...}``, torch's format) or a callable ``model -> list of dicts`` — frozen layers,
      discriminative learning rates. Default: every parameter in one group. Parameters with
      ``requires_grad=False`` are never given to the optimizer, regularized or clipped, except in a
      group with ``"keep_frozen": True`` (gradual unfreezing: the caller's ``on_epoch`` unfreezes them
      later; torch skips a parameter without a gradient, and the regularizers keep to the parameters
      trainable when training starts). Options a group does not set come from ``train.optimizer``;
      the logged LR is group 0's.
    - ``extra_loss(model, out, xb, yb) -> tensor``: a term added to the training loss before
      ``backward`` (distillation, fairness penalties); like the L1/L2 penalties it is not part of
      the logged ``train_loss``, which stays the data loss. A callable with a ``rows`` parameter
      (``extra_loss(model, out, xb, yb, rows)``) also gets the batch's row indices into
      ``data.tensors['train']`` (a device tensor): per-row values computed once before training
      (a teacher's soft targets) are then ``values[rows]``, whatever the shuffling, sampling or
      augmentation did to the batch.
    - ``on_epoch(row)``: called after every epoch with its ``metrics.csv`` row (after the
      checkpoints are written); a truthy return value stops training after that epoch
      (``result.stopped_by == "callback"``; pruning).

    ``dist`` (a :class:`methodo.train.distributed.Dist`, under torchrun): train a DistributedDataParallel
    copy; each rank takes its share of every global batch of ``train.batch_size`` rows, the step losses,
    training scores and validation metrics are those of all ranks together, and only the rank given a
    ``ckpt_dir`` (rank 0) writes. ``None``: one process, and none of this runs.
    """
    task = data.task
    device = resolve_device(tcfg.device)
    oc = tcfg.optimizer
    if oc.lr == "auto":
        raise ConfigError("train.optimizer.lr: 'auto' must be resolved by the LR finder before fit "
                          "(methodo.train.lr_find.resolve_auto_lr, as the pipeline does)")
    closure_step = needs_closure(oc.name)
    extra_rows = extra_loss is not None and _takes_rows(extra_loss)  # extra_loss(..., rows): the batch's row indices
    if closure_step and (tcfg.accumulate > 1 or tcfg.clip.norm or tcfg.clip.value or tcfg.swa):
        raise ConfigError(f"train.optimizer.name: {oc.name!r} steps through a closure; it does not combine "
                          "with train.accumulate > 1, train.clip or train.swa")
    if closure_step and dist is not None:
        raise ConfigError(f"train.optimizer.name: {oc.name!r} steps through a closure, which DDP cannot all-reduce; "
                          "run it in one process or choose another optimizer")
    world, rank = (dist.world, dist.rank) if dist is not None else (1, 0)

    # 0. Model and data on the device; memory format; compiled forward (weights stay in `model`).
    model.to(device)
    Xtr, ytr = (t.to(device) for t in data.tensors["train"])
    Xva, yva = (t.to(device) for t in data.tensors["val"])
    channels_last = tcfg.channels_last and Xtr.ndim == 4
    if channels_last:
        model.to(memory_format=torch.channels_last)
        Xva = Xva.contiguous(memory_format=torch.channels_last)
    # DDP: the wrapper runs the training forward (it all-reduces the gradients in backward); validation,
    # checkpoints and the weight monitor read `model` itself.
    net = model
    if dist is not None:
        from methodo.train import distributed

        net = distributed.wrap(model, dist)
    forward = torch.compile(net) if tcfg.compile else net
    autocast = autocast_factory(device, tcfg.precision)
    y_std = data.preprocessor.y_std if task_spec(task).standardize_target else 1.0
    n, bs, accum = len(Xtr), tcfg.batch_size, tcfg.accumulate  # bs: the global batch (all ranks together)
    check_batch_size(bs, n)
    n_batches = batches_per_epoch(n, bs, world)
    steps_per_epoch = math.ceil(n_batches / accum)  # optimizer steps: what schedulers count
    spec = task_spec(task)
    # Regularizers from the registry (methodo.train.regularize), each at its stage; `model` ones act now.
    reg = Regularization(model, tcfg.regularization, tcfg.clip)
    if closure_step and (reg.has_before or reg.has_after):
        on = reg.after_step_keys()
        raise ConfigError(f"{on[0]}: not supported with the {oc.name!r} optimizer (it steps through a closure "
                          "that re-evaluates the loss); choose another optimizer or turn this off")
    cw = None if class_weights is None else class_weights.to(device)
    task_loss = spec.loss
    loss_kw = reg.loss_kwargs()  # criterion-stage regularizers (label smoothing)
    loss_fn = lambda out, y: task_loss(out, y, cw, **loss_kw)  # noqa: E731
    eval_loss_fn = loss_function(task, cw)  # validation loss without smoothing: comparable across runs
    guard = tcfg.nan_guard
    # auto: when clipping computes the norm anyway, or when skipping (a NaN step would poison the weights)
    check_grads = guard.check_grads if guard.check_grads is not None else (reg.clips or guard.policy == "skip")
    need_norm = reg.clips or check_grads  # the pre-clip norm: logged every step when computed
    # Data-stage hooks: per-row draw weights (data.balance: weighted_sampler) and the training-only
    # batch augmentation (data.augment). Both absent by default.
    sample_weights = getattr(data, "sample_weights", None)
    augment = getattr(data, "augment", None)

    # 1. Optimizer (over the trainable parameter groups), LR schedule (warmup + scheduler at its
    #    own frequency), early stopping, SWA, weight monitor.
    opt = build_optimizer(_trainable_groups(model, param_groups), oc.name, oc.lr, oc.options,
                          hypergradient=oc.hypergradient.beta if oc.hypergradient else None)
    sc, sc_options = tcfg.scheduler, tcfg.scheduler.options
    if tcfg.lr_scaling != "none":  # train.lr_scaling: every group's LR (and an explicit peak) × the rule's factor
        from methodo.train.distributed import lr_factor

        factor = lr_factor(tcfg.lr_scaling, batch_size=bs, world=world, base_batch=tcfg.lr_base_batch)
        for g in opt.param_groups:
            g["lr"] *= factor
        if isinstance(sc_options.get("max_lr"), (int, float)) and sc_options["max_lr"]:
            sc_options = {**sc_options, "max_lr": sc_options["max_lr"] * factor}
    reg.bind(opt)  # the proximal L1 step reads each weight's group LR
    sched = build_schedule(opt, sc.name, sc_options, epochs=tcfg.epochs, steps_per_epoch=steps_per_epoch)
    monitor, stopper, swa, watcher = _epoch_helpers(model, opt, tcfg)
    snapshot_on = tcfg.snapshot_ensemble if tcfg.snapshot_ensemble is not None else sc.name == "cosine_restarts"
    probe_rows = tcfg.monitor.probe_rows  # dead ReLU units: counted on these first validation rows
    record_every = tcfg.monitor.resolved_every(steps_per_epoch)  # epochs between two weight records
    shuffle = generator(seed, offset=1)
    # Everything a resumed run needs (beside the weights) lives in `state`; `parts` are the live
    # objects whose own state it captures before each save and restores on resume.
    state = TrainState()
    parts = Parts(optimizer=opt, schedule=sched, shuffle=shuffle, stopper=stopper, augment=augment,
                  watcher=watcher, swa=swa)
    # The model's weights and buffers by name, sharing their storage (every update is in place): read
    # for the best weights, snapshots and the finiteness check without walking the modules each time.
    model_state = model.state_dict()
    state_floats = _fused_floats(model_state)
    best_weights = _copy_weights(model_state)

    # 2. Resume: model and the whole TrainState from `last`; best weights from `best`.
    if resume_from is not None:
        weights, state = TrainState.load(resume_from / "last.safetensors")
        model.load_state_dict(weights)
        state.restore(parts)
        best_path = resume_from / "best.safetensors"
        best_weights = load_checkpoint(best_path)[0] if best_path.exists() else _copy_weights(weights)
    elif watcher is not None:
        watcher.record(0, model, Xva[:probe_rows])  # the initial distribution: epoch 0, no gradient yet
    start_epoch = state.epoch + 1
    result = TrainResult(history=state.history, lrs=state.lrs, losses=state.losses, grad_norms=state.grad_norms,
                         skipped_batches=state.skipped_batches, snapshots=state.snapshots)

    if closure_step:  # L-BFGS re-evaluates the loss (and its gradient) several times per step
        def closure():
            opt.zero_grad(set_to_none=True)
            out_ = model(xb)
            loss_ = loss_fn(out_, yb)
            if reg.has_penalty:
                loss_ = loss_ + reg.penalty()
            if extra_loss is not None:
                loss_ = loss_ + (extra_loss(model, out_, xb, yb, idx) if extra_rows else extra_loss(model, out_, xb, yb))
            loss_.backward()
            return loss_

    total_steps = tcfg.epochs * n_batches
    stop_policy = guard.policy == "stop"
    # DDP with accumulation: the gradients are all-reduced on a group's last micro-batch only
    sync_last = dist is not None and accum > 1
    # DDP: the step's loss sums ride in the gradient all-reduce (not with L-BFGS: its closure's backward runs
    # before the step's loss is known)
    piggyback = getattr(net, "piggyback", None) if dist is not None and not closure_step else None
    # read once: the step loop runs these thousands of times
    bf16, on_cpu, batch_score, group0 = tcfg.precision == "bf16", device.type == "cpu", spec.batch_score, opt.param_groups[0]
    has_penalty, has_before, has_after = reg.has_penalty, reg.has_before, reg.has_after
    loss_limit = _loss_limit(state.first_loss, tcfg.divergence_factor)  # a loss not below it goes to _guard
    import sys

    from tqdm.auto import tqdm

    # A live bar on a terminal; in a log file (CI, Slurm) one line per epoch instead.
    live = tcfg.progress and sys.stderr.isatty()
    bar = tqdm(total=total_steps, initial=(start_epoch - 1) * n_batches, disable=not live,
               unit="batch", dynamic_ncols=True, leave=False)
    bar_every = max(1, min(16, n_batches // 4))  # batches per bar update: no tqdm call per batch
    try:
        for epoch in range(start_epoch, tcfg.epochs + 1):
            t0 = time.perf_counter()
            swa_on = swa is not None and swa.owns_lr  # SWALR drives the LR: no per-step schedule
            # 3. One pass over a fresh permutation of the training rows.
            model.train()
            if dist is not None:  # this rank's dropout/augmentation draws: from (seed, epoch, rank), resumable
                distributed.seed_epoch(dist, seed, epoch, augment)
            if sample_weights is not None:  # n draws with replacement, every class equally likely
                perm = torch.multinomial(sample_weights, n, replacement=True, generator=shuffle).to(device)
            else:
                perm = torch.randperm(n, generator=shuffle).to(device)
            loss_sum, score_count, seen = 0.0, 0, 0
            score_nums = []  # the batches' score sums (device tensors: no sync per batch), summed per epoch
            group_loss, group_bad = 0.0, None  # accumulation group: summed data loss, first bad tensor
            pending: list[tuple] = []  # the group's micro-batches: (data loss tensor, rows, score sum, score count)
            step = 0  # optimizer steps in this epoch (1-based in messages)
            for b in range(n_batches):
                signals.check()  # SIGTERM stops here, between two batches
                idx = perm[b * bs:(b + 1) * bs]
                if dist is not None:  # this rank's share of the global batch (rows rank, rank + world, ...)
                    global_rows, idx = len(idx), idx[rank::world]
                xb, yb = Xtr[idx], ytr[idx]
                if augment is not None:  # training batches only; evaluation never augments
                    xb = augment(xb)
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                first_micro = b % accum == 0
                group = min(accum, n_batches - (b - b % accum))  # micro-batches in this group
                last_micro = b % accum == group - 1
                if first_micro:
                    step += 1
                    group_loss, group_bad = 0.0, None
                    opt.zero_grad(set_to_none=True)
                if sync_last:
                    net.require_backward_grad_sync = last_micro  # what DDP's no_sync() sets
                # 3a. Forward, data loss, backward of data loss + penalties + extra loss (the logged
                #     loss stays the data loss). L-BFGS steps here instead: its closure runs forward +
                #     backward (penalties included) as often as it needs; the loss logged and guarded
                #     is that of the new weights.
                if closure_step:
                    lr = opt.param_groups[0]["lr"]
                    opt.step(closure)
                    with torch.no_grad():
                        out = model(xb)
                        loss = loss_fn(out, yb)
                else:
                    if bf16:
                        with autocast():
                            out = forward(xb)
                            loss = loss_fn(out, yb)
                    else:
                        out = forward(xb)
                        loss = loss_fn(out, yb)
                    total = loss
                    if has_penalty:
                        total = total + reg.penalty()
                    if extra_loss is not None:
                        total = total + (extra_loss(model, out, xb, yb, idx) if extra_rows
                                         else extra_loss(model, out, xb, yb))
                    if piggyback is not None and last_micro:  # the step's loss sums ride in DDP's all-reduce
                        piggyback.carry(distributed.step_sums(pending + [(loss, len(idx))], dist.device))
                    if dist is not None and len(idx) * world != global_rows:
                        # DDP averages the ranks' gradients with equal weights; shares of unequal size (a
                        # trailing batch) are weighted by their rows, as in the one-process mean
                        total = total * (len(idx) * world / global_rows)
                    (total / group if group > 1 else total).backward()
                scored = out.detach()
                num, den = batch_score(scored if scored.dtype == torch.float32 else scored.float(), yb, y_std)
                pending.append((loss, len(idx), num, den))  # no detach: one op less per batch; read once below
                if live and (b + 1) % bar_every == 0:
                    bar.update(bar_every)
                if not last_micro:
                    continue
                # 3b. The guard, once per optimizer step, before the optimizer applies it: the group's
                #     losses (and the pre-clip gradient norm) come to the host in one transfer.
                #     Exploding → stop; non-finite → stop, or skip the step (not after an L-BFGS step:
                #     it is already applied, so that stops too).
                gnorm = grad_norm(reg.params, tcfg.clip.norm_type) if need_norm and not closure_step else None
                if dist is not None:  # the global batch's losses: every rank's guard decides alike
                    values, pending = distributed.global_step(dist, pending, gnorm,
                                                              piggyback.take() if piggyback is not None else None)
                elif gnorm is None and len(pending) == 1 and on_cpu:
                    values = [loss.item()]  # the common case, without building lists
                else:
                    values = _to_host([p[0] for p in pending] + ([gnorm] if gnorm is not None else []))
                for lv, (_, rows, num, den) in zip(values, pending):
                    if math.isfinite(lv) or stop_policy or closure_step:
                        if not lv < loss_limit:  # NaN, inf or past the limit: _guard says which, or lets it be
                            _guard(lv, epoch, step, state.first_loss, tcfg.divergence_factor)
                        if state.first_loss is None:
                            state.first_loss = lv
                            loss_limit = _loss_limit(lv, tcfg.divergence_factor)
                        group_loss += lv
                        loss_sum += lv * rows
                        score_nums.append(num)
                        score_count += den
                        seen += rows
                    elif group_bad is None:
                        group_bad = "loss"
                pending.clear()
                if not closure_step:
                    # 3c. Gradient: the pre-clip norm (logged), the NaN/inf check, clipping.
                    if gnorm is not None and group_bad is None:
                        gv = values[-1]
                        state.grad_norms.append(gv)
                        if not math.isfinite(gv) and check_grads:
                            name = first_non_finite_grad(model) or "?"
                            if stop_policy:
                                raise NonFiniteLoss(epoch, step, gv, tensor=f"gradient of {name}")
                            group_bad = f"gradient of {name}"
                        elif reg.clips:
                            reg.clip_grads(gnorm)
                    if group_bad is not None:  # skip policy: drop this step's gradients
                        opt.zero_grad(set_to_none=True)
                        state.skipped_batches.append({"epoch": epoch, "step": step, "tensor": group_bad})
                        state.consecutive_skips += 1
                        if state.consecutive_skips >= guard.max_skips:
                            raise NonFiniteLoss(epoch, step, float("nan"), tensor=f"{group_bad} "
                                                f"({state.consecutive_skips} consecutive batches skipped)")
                        continue
                    state.consecutive_skips = 0
                    # 3d. Decoupled weight decay, the optimizer step, proximal L1 and max-norm (regularizer stages).
                    lr = group0["lr"]
                    if has_before:
                        reg.before_step(lr)
                    opt.step()
                    if has_after:
                        reg.after_step()
                # 3e. Step bookkeeping (every optimizer): LR, loss, schedule; a snapshot at the end of
                #     a warm-restart cycle (the LR is at its minimum here).
                state.lrs.append(lr)
                cycle_ended = sched.after_step() if not swa_on else False
                state.losses.append(group_loss / group)
                if cycle_ended and snapshot_on:
                    snap = {"epoch": epoch, "step": len(state.lrs), "file": f"snapshot_{len(state.snapshots) + 1}.safetensors"}
                    state.snapshots.append({**snap, "weights": _copy_weights(model_state)})
                    if ckpt_dir is not None:
                        save_checkpoint(ckpt_dir / snap["file"], state.snapshots[-1]["weights"], meta=snap)
            if live:
                bar.update(n_batches % bar_every)

            # 4. Validation (the weight monitor notes which ReLU units fire on it), the epoch row,
            #    weight monitoring.
            recorded = watcher is not None and (epoch % record_every == 0 or epoch == tcfg.epochs)
            score_sum = _sum_on_host(score_nums)
            if dist is not None:  # one set of buffers (rank 0's), the training score over every rank's rows
                distributed.sync_buffers(dist, model)
                score_sum, score_count = distributed.all_sum(dist, [score_sum, float(score_count)])
            with watcher.probing(probe_rows) if recorded else contextlib.nullcontext():
                val_loss, val_score = evaluate_loss(model, Xva, yva, eval_loss_fn, task, tcfg.eval_batch_size, y_std,
                                                    dist)
            row = {
                "epoch": epoch, "lr": state.lrs[-1] if state.lrs else oc.lr,
                "train_loss": loss_sum / max(seen, 1),
                f"train_{spec.score}": spec.finish(score_sum / max(score_count, 1)),
                "val_loss": val_loss, f"val_{spec.score}": val_score,
            }
            if need_norm and state.grad_norms:
                row["grad_norm"] = float(np.median(state.grad_norms[-step:]))
            _check_weights_finite(model, epoch, step, val_loss, model_state, state_floats)  # never checkpoint a non-finite weight
            if recorded:
                watcher.record(epoch, model)

            # 5. Epoch-level LR schedule, or SWA (averaging; SWALR owns the LR from its start).
            if swa is not None and swa.active(epoch):
                swa.after_epoch(model)
            if not (swa is not None and swa.owns_lr):
                sched.after_epoch(row[monitor])

            # 6. Early stopping bookkeeping and checkpoints (best on improvement, last always).
            if stopper.improved(row[monitor]):
                state.best_epoch, state.best_value = epoch, row[monitor]
                best_weights = _copy_into(best_weights, model_state)
                if ckpt_dir is not None:
                    save_checkpoint(ckpt_dir / "best.safetensors", best_weights,
                                    meta={"epoch": epoch, monitor: row[monitor]})
            row["time_s"] = time.perf_counter() - t0
            state.history.append(row)
            state.epoch = epoch
            if ckpt_dir is not None:
                state.capture(parts)
                state.save(ckpt_dir / "last.safetensors", model_state)
            # 7. The caller's callback (may stop: pruning), a stop asked from outside (SIGUSR1, a Slurm job
            #    near its time limit: after this epoch's checkpoint), progress, early stopping.
            stop_asked = bool(on_epoch(row)) if on_epoch is not None else False
            stop_outside = signals.stop_requested()
            if dist is not None:  # every rank stops at the same epoch
                stop_asked, stop_outside = distributed.any_true(dist, [stop_asked, stop_outside])
            _show_progress(bar, row, epoch, tcfg, live)
            if stop_outside and epoch < tcfg.epochs and not (stop_asked or stopper.should_stop):
                raise StopRequested(f"stopped after epoch {epoch} on request ({signals.stop_reason()}); the "
                                    f"checkpoint of epoch {epoch} is saved: resume the run dir with --resume")
            if stop_asked:
                result.stopped_by = "callback"
                break
            if stopper.should_stop:
                result.stopped_early, result.stopped_by = True, "early_stopping"
                break
    finally:
        bar.close()
    if watcher is not None and state.history and watcher.history and watcher.history[-1]["epoch"] != state.epoch:
        watcher.record(state.epoch, model, Xva[:probe_rows])  # stopped early: the last epoch's weights, always
    _finish(result, state, watcher, swa, Xtr, bs, ckpt_dir)
    model.load_state_dict(best_weights)
    return result
