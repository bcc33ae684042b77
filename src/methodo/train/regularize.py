"""Regularization and gradient clipping, each a small function the loop calls at its place.

Where each one acts in a training step (the loop's numbered steps):

- ``loss``         L1 / L2 penalties are added to the data loss before ``backward``
                   (the logged ``train_loss`` stays the data loss, comparable to ``val_loss``);
- ``criterion``    label smoothing changes the cross-entropy target;
- ``model``        dropout sets the rate of every dropout layer once, before training;
- ``gradient``     clipping by global norm or by value, after ``backward`` (the pre-clip norm is
                   returned so the loop can log it every step);
- ``before_step``  decoupled weight decay ``w ← w − lr·λ·w`` right before ``optimizer.step()``,
                   exactly as AdamW does it, for any optimizer;
- ``after_step``   the max-norm constraint rescales each unit's incoming weights after the step;
                   with ``train.regularization.l1_method: proximal`` the L1 term leaves the loss and
                   acts here instead, as the proximal (soft-thresholding) step of ISTA / proximal
                   SGD, ``w ← sign(w)·max(|w| − lr·λ, 0)`` with the LR of each weight's parameter
                   group, before max-norm: weights then reach exactly 0.0 and stay there while their
                   gradient is below λ (the penalty's subgradient only makes them oscillate around 0).

Penalties, decay and max-norm act on weights of dimension ≥ 2 (linear and conv kernels), not on
biases or normalization scales, as is usual; frozen parameters (``requires_grad=False``) are never
regularized nor clipped.

The registry is what the loop applies: :class:`Regularization` walks ``REGULARIZERS`` and calls
every entry whose config value (``meta["key"]``, e.g. ``train.regularization.l1``) differs from its
default ("off"), at its ``meta["stage"]``, with the call signature of that stage:

==============  =====================================================  ==========================
stage           call                                                   when
==============  =====================================================  ==========================
``loss``        ``fn(weights, value) -> tensor`` (summed, in name      every forward, before
                order, into the penalty added for ``backward``)        ``backward``
``criterion``   the value is passed to the task's loss as the          building the loss
                keyword ``meta["loss_kwarg"]``
``model``       ``fn(model, value)``                                   once, before training
``gradient``    ``fn(params, value, norm_type, total=pre_clip_norm)``  after ``backward``
``before_step`` ``fn(weights, value, lr)``                             before ``optimizer.step``
``after_step``  ``fn(weights, value)``                                 after ``optimizer.step``
==============  =====================================================  ==========================

So registering a function with its stage and a key under ``train.regularization`` is enough to
use it from a config (``train.regularization.NAME: VALUE``; the value is a number ≥ 0 unless the
entry gives a ``check`` callable); ``default`` (meta, 0.0 unless given) is the "off" value.

Examples
--------
>>> from methodo.train.regularize import REGULARIZERS
>>> REGULARIZERS.entry("max_norm").meta["stage"]
'after_step'
"""

from __future__ import annotations

import torch

from methodo.registry import Registry

REGULARIZERS = Registry("regularizer")


def decayed(model: torch.nn.Module) -> list[torch.Tensor]:
    """The parameters that penalties, decay and max-norm apply to: trainable weights of dim ≥ 2."""
    return [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]


@REGULARIZERS.register("l1", help="L1 penalty λ·Σ|w| added to the loss (sparse weights); "
                       "with l1_method=proximal a soft-threshold after each step instead (exact zeros)",
                       stage="loss", key="train.regularization.l1", example=1e-3)
def l1_penalty(params: list[torch.Tensor], strength: float) -> torch.Tensor:
    return strength * sum(p.abs().sum() for p in params)


L1_METHODS = ("penalty", "proximal")  # train.regularization.l1_method


@torch.no_grad()
def soft_threshold_(params: list[torch.Tensor], threshold: float) -> None:
    """The proximal step of ``threshold``·Σ|w|, in place: ``w ← sign(w)·max(|w| − threshold, 0)``.

    Written ``w − clamp(w, −t, t)``, which is the same number in floating point (``w ∓ t`` beyond the
    threshold, ``w − w = 0.0`` within it) without the sign and max tensors.

    >>> w = torch.tensor([0.5, -0.05, 0.0, -0.3])
    >>> soft_threshold_([w], 0.1); w
    tensor([ 0.4000,  0.0000,  0.0000, -0.2000])
    """
    if threshold > 0:
        for p in params:
            p.sub_(p.clamp(-threshold, threshold))


@REGULARIZERS.register("l2", help="L2 penalty λ/2·Σw² added to the loss (coupled weight decay)",
                       stage="loss", key="train.regularization.l2", example=1e-3)
def l2_penalty(params: list[torch.Tensor], strength: float) -> torch.Tensor:
    return 0.5 * strength * sum(p.pow(2).sum() for p in params)


@REGULARIZERS.register("decoupled_wd", help="decoupled weight decay w ← w − lr·λ·w before each step, "
                       "as AdamW, for any optimizer", stage="before_step",
                       key="train.regularization.decoupled_wd", example=0.1)
@torch.no_grad()
def decoupled_weight_decay(params: list[torch.Tensor], strength: float, lr: float) -> None:
    if strength:
        torch._foreach_mul_(params, 1.0 - lr * strength)


@REGULARIZERS.register("max_norm", help="max-norm constraint: each unit's incoming weight vector is "
                       "rescaled to L2 norm ≤ c after each step", stage="after_step",
                       key="train.regularization.max_norm", example=0.5, default=None)
@torch.no_grad()
def max_norm(params: list[torch.Tensor], c: float) -> None:
    for p in params:
        norms = p.flatten(1).norm(dim=1).clamp_min(1e-12)  # one norm per output unit
        scale = (c / norms).clamp(max=1.0)
        p.mul_(scale.view(-1, *([1] * (p.ndim - 1))))


@REGULARIZERS.register("dropout", help="set the rate of every dropout layer of the model",
                       stage="model", key="train.regularization.dropout", example=0.5, default=None)
def set_dropout(model: torch.nn.Module, p: float) -> int:
    """Set ``p`` on every ``nn.Dropout*`` module; returns how many were changed."""
    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = float(p)
            n += 1
    return n


@REGULARIZERS.register("label_smoothing", help="label smoothing ε: the target puts 1−ε on the class "
                       "and ε spread over all classes", stage="criterion",
                       key="train.regularization.label_smoothing", example=0.1, loss_kwarg="label_smoothing")
def label_smoothing_loss(logits: torch.Tensor, y: torch.Tensor, eps: float,
                         weight: torch.Tensor | None = None) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits, y, weight=weight, label_smoothing=eps)


@REGULARIZERS.register("clip_norm", help="gradient clipping by global norm (the pre-clip norm is "
                       "logged every step)", stage="gradient", key="train.clip.norm", example=0.1, default=None)
@torch.no_grad()
def clip_norm(params: list[torch.Tensor], max_norm: float, norm_type: float = 2.0,
              total: torch.Tensor | None = None) -> torch.Tensor:
    """Scale all gradients so their global ``norm_type``-norm is at most ``max_norm``; returns the pre-clip norm."""
    total = grad_norm(params, norm_type) if total is None else total
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


@REGULARIZERS.register("clip_value", help="gradient clipping by value: each element to [−v, v] "
                       "(the pre-clip norm is logged every step)", stage="gradient",
                       key="train.clip.value", example=1e-3, default=None)
@torch.no_grad()
def clip_value(params: list[torch.Tensor], value: float, norm_type: float = 2.0,
               total: torch.Tensor | None = None) -> torch.Tensor:
    total = grad_norm(params, norm_type) if total is None else total
    torch.nn.utils.clip_grad_value_(params, value)
    return total


@torch.no_grad()
def grad_norm(params: list[torch.Tensor], norm_type: float = 2.0) -> torch.Tensor:
    """The global gradient norm over ``params`` (a 0-dim tensor; inf/NaN when a gradient is)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if len({(g.device, g.dtype) for g in grads}) > 1:  # mixed devices/dtypes: torch's grouping
        return torch.nn.utils.get_total_norm(grads, norm_type)
    # one fused kernel for the per-tensor norms, then their norm (half the cost of get_total_norm)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, norm_type)), norm_type)


def first_non_finite_grad(model: torch.nn.Module) -> str | None:
    """Name of the first parameter whose gradient holds a NaN or inf (for the error message)."""
    for name, p in model.named_parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return name
    return None


@torch.no_grad()
def first_non_finite_param(model: torch.nn.Module, state: dict | None = None) -> str | None:
    """Name of the first weight or buffer holding a NaN or inf; ``None`` when all are finite.

    One fused norm over every floating tensor answers the usual case (all finite) in one pass; only
    when that norm is not finite (a NaN/inf, or finite values so large their squares overflow) are
    the tensors checked one by one, for the name. ``state``: the model's ``state_dict`` when the
    caller holds one (its tensors share the model's storage).
    """
    state = model.state_dict() if state is None else state
    floats = [t for t in state.values() if t.is_floating_point()]
    if floats and len({(t.device, t.dtype) for t in floats}) == 1:
        if bool(torch.isfinite(torch.stack(torch._foreach_norm(floats, 2.0))).all()):
            return None
    for name, t in state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            return name
    return None


STAGES = ("loss", "criterion", "model", "gradient", "before_step", "after_step")


def register_regularizer(name: str, fn=None, *, stage: str, help: str, example: float, default=0.0,
                         check=None, **meta):
    """Register ``fn`` as regularizer ``name`` at ``stage``, usable as ``train.regularization.NAME``.

    ``check(value)`` (optional) raises ``ValueError`` for a value it refuses; by default the value
    must be a number ≥ 0. Usable as a decorator when ``fn`` is omitted.
    """
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r}: choose one of {STAGES}")
    return REGULARIZERS.register(name, fn, help=help, stage=stage, key=f"train.regularization.{name}",
                                 example=example, default=default, check=check, **meta)


def config_value(entry, reg_cfg, clip_cfg):
    """The configured value of ``entry`` (from ``train.regularization`` or ``train.clip``)."""
    section, key = entry.meta["key"].rsplit(".", 1)
    cfg = clip_cfg if section == "train.clip" else reg_cfg
    return getattr(cfg, key, entry.meta.get("default", 0.0))


def is_on(entry, value) -> bool:
    """A regularizer is on when its value differs from its default (0, or None where 0 means something)."""
    return value is not None and value != entry.meta.get("default", 0.0)


class Regularization:
    """The regularization and clipping of one run, from ``train.regularization`` and ``train.clip``,
    as the registry says: each entry that is on, grouped by stage, in name order.

    ``has_*`` flags let the loop skip every call that would do nothing, so a feature that is off
    costs nothing per step. ``weights`` (trainable, dim ≥ 2) are what penalties, decay and max-norm
    act on; ``params`` (trainable) what clipping acts on.
    """

    def __init__(self, model: torch.nn.Module, reg_cfg, clip_cfg):
        self.clip = clip_cfg
        self.weights = decayed(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.stages: dict[str, list[tuple]] = {s: [] for s in STAGES}
        # l1_method: proximal moves the L1 strength from the loss to a soft-threshold after each step
        self.prox_l1 = 0.0
        proximal = getattr(reg_cfg, "l1_method", "penalty") == "proximal"
        for entry in REGULARIZERS.entries():  # name order: l1 before l2, clip_norm before clip_value
            value = config_value(entry, reg_cfg, clip_cfg)
            if is_on(entry, value):
                if proximal and entry.meta["key"] == "train.regularization.l1":
                    self.prox_l1 = float(value)
                    continue
                self.stages[entry.meta["stage"]].append((entry.obj, value, entry))
        self.has_prox = self.prox_l1 > 0
        self._prox_groups: list[tuple[int, list[torch.Tensor]]] | None = None  # set by bind()
        self.has_penalty = bool(self.stages["loss"])
        self.has_before = bool(self.stages["before_step"])
        self.has_after = bool(self.stages["after_step"]) or self.has_prox
        self.clips = bool(self.stages["gradient"])
        for fn, value, _ in self.stages["model"]:
            fn(model, value)

    def loss_kwargs(self) -> dict:
        """Keyword options of the task's training loss from ``criterion`` regularizers (label smoothing)."""
        return {e.meta["loss_kwarg"]: v for _, v, e in self.stages["criterion"]}

    def penalty(self) -> torch.Tensor:
        total = torch.zeros((), device=self.weights[0].device) if self.weights else torch.zeros(())
        for fn, value, _ in self.stages["loss"]:
            total = total + fn(self.weights, value)
        return total

    def clip_grads(self, total: torch.Tensor) -> None:
        """Clip (by norm, then by value), given the pre-clip global norm ``total``."""
        for fn, value, _ in self.stages["gradient"]:
            fn(self.params, value, self.clip.norm_type, total=total)

    def before_step(self, lr: float) -> None:
        for fn, value, _ in self.stages["before_step"]:
            fn(self.weights, value, lr)

    def after_step_keys(self) -> list[str]:
        """The config keys of what acts around the optimizer step (refused with a closure optimizer)."""
        keys = ["train.regularization.l1_method"] if self.has_prox else []
        return keys + [e.meta["key"] for st in ("before_step", "after_step") for _, _, e in self.stages[st]]

    def bind(self, optimizer: torch.optim.Optimizer) -> None:
        """Pair each parameter group of ``optimizer`` with its weights (those of :attr:`weights`), so the
        proximal L1 step thresholds each weight by the LR of its own group (per-group LRs, schedulers)."""
        ids = {id(w) for w in self.weights}
        self._opt = optimizer  # its groups are read at each step: load_state_dict (resume) replaces them
        self._prox_groups = [(i, ws) for i, g in enumerate(optimizer.param_groups)
                             if (ws := [p for p in g["params"] if id(p) in ids])]

    def after_step(self) -> None:
        if self.has_prox:
            if self._prox_groups is None:
                raise RuntimeError("Regularization.bind(optimizer) must be called before a proximal L1 step")
            groups = self._opt.param_groups
            for i, ws in self._prox_groups:  # the LR the step just used (hypergradient sets it in step)
                soft_threshold_(ws, groups[i]["lr"] * self.prox_l1)
        for fn, value, _ in self.stages["after_step"]:
            fn(self.weights, value)
