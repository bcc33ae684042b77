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
- ``after_step``   the max-norm constraint rescales each unit's incoming weights after the step.

Penalties, decay and max-norm act on weights of dimension ≥ 2 (linear and conv kernels), not on
biases or normalization scales, as is usual.

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


@REGULARIZERS.register("l1", help="L1 penalty λ·Σ|w| added to the loss (sparse weights)",
                       stage="loss", key="train.regularization.l1", example=1e-3)
def l1_penalty(params: list[torch.Tensor], strength: float) -> torch.Tensor:
    return strength * sum(p.abs().sum() for p in params)


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
                       key="train.regularization.max_norm", example=0.5)
@torch.no_grad()
def max_norm(params: list[torch.Tensor], c: float) -> None:
    for p in params:
        norms = p.flatten(1).norm(dim=1).clamp_min(1e-12)  # one norm per output unit
        scale = (c / norms).clamp(max=1.0)
        p.mul_(scale.view(-1, *([1] * (p.ndim - 1))))


@REGULARIZERS.register("dropout", help="set the rate of every dropout layer of the model",
                       stage="model", key="train.regularization.dropout", example=0.5)
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
                       key="train.regularization.label_smoothing", example=0.1)
def label_smoothing_loss(logits: torch.Tensor, y: torch.Tensor, eps: float,
                         weight: torch.Tensor | None = None) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits, y, weight=weight, label_smoothing=eps)


@REGULARIZERS.register("clip_norm", help="gradient clipping by global norm (the pre-clip norm is "
                       "logged every step)", stage="gradient", key="train.clip.norm", example=0.1)
@torch.no_grad()
def clip_norm(params: list[torch.Tensor], max_norm: float, norm_type: float = 2.0,
              total: torch.Tensor | None = None) -> torch.Tensor:
    """Scale all gradients so their global ``norm_type``-norm is at most ``max_norm``; returns the pre-clip norm."""
    total = grad_norm(params, norm_type) if total is None else total
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


@REGULARIZERS.register("clip_value", help="gradient clipping by value: each element to [−v, v] "
                       "(the pre-clip norm is logged every step)", stage="gradient",
                       key="train.clip.value", example=1e-3)
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


def first_non_finite_param(model: torch.nn.Module) -> str | None:
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            return name
    return None


class Regularization:
    """The regularization and clipping of one run, from ``train.regularization`` and ``train.clip``.

    ``active`` flags let the loop skip every call that would do nothing, so a feature that is off
    costs nothing per step.
    """

    def __init__(self, model: torch.nn.Module, reg_cfg, clip_cfg):
        self.cfg, self.clip = reg_cfg, clip_cfg
        self.weights = decayed(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.has_penalty = bool(reg_cfg.l1 or reg_cfg.l2)
        self.has_before = bool(reg_cfg.decoupled_wd)
        self.has_after = reg_cfg.max_norm is not None
        self.clips = clip_cfg.norm is not None or clip_cfg.value is not None
        if reg_cfg.dropout is not None:
            set_dropout(model, reg_cfg.dropout)

    def penalty(self) -> torch.Tensor:
        total = torch.zeros((), device=self.weights[0].device) if self.weights else torch.zeros(())
        if self.cfg.l1:
            total = total + l1_penalty(self.weights, self.cfg.l1)
        if self.cfg.l2:
            total = total + l2_penalty(self.weights, self.cfg.l2)
        return total

    def clip_grads(self, total: torch.Tensor) -> None:
        """Clip by norm and/or value, given the pre-clip global norm ``total``."""
        if self.clip.norm is not None:
            clip_norm(self.params, self.clip.norm, self.clip.norm_type, total=total)
        if self.clip.value is not None:
            torch.nn.utils.clip_grad_value_(self.params, self.clip.value)

    def before_step(self, lr: float) -> None:
        decoupled_weight_decay(self.weights, self.cfg.decoupled_wd, lr)

    def after_step(self) -> None:
        max_norm(self.weights, self.cfg.max_norm)
