"""Learning-rate schedulers by name. Each entry says whether it steps per batch or per epoch.

A factory takes the optimizer, the run's ``epochs`` and ``steps_per_epoch``, and its own options
(checked against its signature). ``interval`` is ``"step"`` (after every optimizer step) or
``"epoch"`` (after each validation); ``"plateau"`` schedulers receive the monitored value.

Examples
--------
>>> from methodo.train.schedules import SCHEDULERS
>>> SCHEDULERS.entry("onecycle").meta["interval"]
'step'
"""

from __future__ import annotations

from methodo.errors import ConfigError
from methodo.registry import Registry, check_kwargs

SCHEDULERS = Registry("scheduler")
_RESERVED = ("optimizer", "epochs", "steps_per_epoch")


@SCHEDULERS.register("none", help="constant learning rate", interval="epoch")
def none(optimizer, *, epochs, steps_per_epoch):
    return None


@SCHEDULERS.register("step", help="StepLR: multiply the LR by gamma every step_size epochs "
                     "(default a third of the epochs)", interval="epoch")
def step(optimizer, *, epochs, steps_per_epoch, step_size: int = 0, gamma: float = 0.1):
    from torch.optim.lr_scheduler import StepLR

    return StepLR(optimizer, step_size=int(step_size) or max(1, epochs // 3), gamma=gamma)


@SCHEDULERS.register("multistep", help="MultiStepLR: multiply the LR by gamma at each listed epoch",
                     interval="epoch")
def multistep(optimizer, *, epochs, steps_per_epoch, milestones: list = (), gamma: float = 0.1):
    from torch.optim.lr_scheduler import MultiStepLR

    ms = list(milestones) or [int(epochs * 0.5), int(epochs * 0.75)]
    return MultiStepLR(optimizer, milestones=ms, gamma=gamma)


@SCHEDULERS.register("exponential", help="ExponentialLR: multiply the LR by gamma every epoch",
                     interval="epoch")
def exponential(optimizer, *, epochs, steps_per_epoch, gamma: float = 0.95):
    from torch.optim.lr_scheduler import ExponentialLR

    return ExponentialLR(optimizer, gamma=gamma)


@SCHEDULERS.register("cosine", help="CosineAnnealingLR over the whole run, per step, down to eta_min",
                     interval="step")
def cosine(optimizer, *, epochs, steps_per_epoch, eta_min: float = 0.0):
    from torch.optim.lr_scheduler import CosineAnnealingLR

    return CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch, eta_min=eta_min)


@SCHEDULERS.register("onecycle", help="OneCycleLR: warm up to max_lr (default: the optimizer lr), "
                     "then anneal, per step", interval="step")
def onecycle(optimizer, *, epochs, steps_per_epoch, max_lr: float = 0.0, pct_start: float = 0.3,
             anneal_strategy: str = "cos", div_factor: float = 25.0, final_div_factor: float = 1e4,
             three_phase: bool = False):
    from torch.optim.lr_scheduler import OneCycleLR

    peak = max_lr or optimizer.param_groups[0]["lr"]
    return OneCycleLR(optimizer, max_lr=peak, epochs=epochs, steps_per_epoch=steps_per_epoch,
                      pct_start=pct_start, anneal_strategy=anneal_strategy, div_factor=div_factor,
                      final_div_factor=final_div_factor, three_phase=three_phase,
                      cycle_momentum="momentum" in optimizer.defaults or "betas" in optimizer.defaults)


@SCHEDULERS.register("plateau", help="ReduceLROnPlateau: multiply the LR by factor when the "
                     "early-stopping monitor stalls for patience epochs", interval="plateau")
def plateau(optimizer, *, epochs, steps_per_epoch, mode: str = "min", factor: float = 0.1,
            patience: int = 3, threshold: float = 1e-4, min_lr: float = 0.0):
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    return ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience,
                             threshold=threshold, min_lr=min_lr)


def build_scheduler(optimizer, name: str, options: dict, *, epochs: int, steps_per_epoch: int):
    """``(scheduler or None, interval)`` for the named scheduler."""
    entry = SCHEDULERS.entry(name, key="train.scheduler.name")
    sched = entry.obj(optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, **options)
    return sched, entry.meta["interval"]


def check_scheduler_options(name: str, options: dict) -> None:
    """Raise ``ConfigError`` for options the scheduler refuses (tried on a dummy optimizer)."""
    import torch

    fn = SCHEDULERS.get(name)  # the config loader adds the key to the message
    check_kwargs(fn, options, reserved=_RESERVED, what=f"scheduler {name!r}")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    try:
        fn(opt, epochs=10, steps_per_epoch=10, **options)
    except (ValueError, TypeError) as exc:
        msg = str(exc).splitlines()[0]
        key = next((k for k in options if k in msg), None)
        raise ConfigError(f"scheduler {name!r} refuses this value: {msg}", key=key) from None
