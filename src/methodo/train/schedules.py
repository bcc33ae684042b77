"""Learning-rate schedulers by name. Each entry says whether it steps per batch or per epoch.

A factory takes the optimizer, the run's ``epochs``, ``steps_per_epoch`` (optimizer steps, i.e.
after gradient accumulation) and ``total_steps`` (the optimizer steps it schedules: the run's
steps minus the warmup), plus its own options (checked against its signature). ``interval`` is
``"step"`` (after every optimizer step) or ``"epoch"`` (after each validation); ``"plateau"``
schedulers receive the monitored value. ``horizon`` (default true) says the schedule is planned over
the run's epochs: a resumed run may then not change ``train.epochs``.

Every scheduler can be preceded by a linear warmup (``warmup_epochs`` or ``warmup_steps``,
from ``warmup_start_factor`` × the LR to the LR): :class:`LRSchedule` runs the warmup per step,
then hands over to the scheduler, which starts its own schedule only then (as ``SequentialLR``
would, but for any scheduler, including per-epoch and plateau ones).

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
_RESERVED = ("optimizer", "epochs", "steps_per_epoch", "total_steps")
# Options every scheduler accepts: the linear warmup composed before it.
WARMUP_OPTIONS = {"warmup_epochs": 0, "warmup_steps": 0, "warmup_start_factor": 0.01}


def _momentum_cycles(optimizer) -> bool:
    return "momentum" in optimizer.defaults or "betas" in optimizer.defaults


@SCHEDULERS.register("none", help="constant learning rate", interval="epoch", horizon=False)
def none(optimizer, *, epochs, steps_per_epoch, total_steps):
    return None


@SCHEDULERS.register("step", help="StepLR: multiply the LR by gamma every step_size epochs "
                     "(default a third of the epochs)", interval="epoch")
def step(optimizer, *, epochs, steps_per_epoch, total_steps, step_size: int = 0, gamma: float = 0.1):
    from torch.optim.lr_scheduler import StepLR

    return StepLR(optimizer, step_size=int(step_size) or max(1, epochs // 3), gamma=gamma)


@SCHEDULERS.register("multistep", help="MultiStepLR: multiply the LR by gamma at each listed epoch "
                     "(default at 50% and 75% of the epochs)", interval="epoch")
def multistep(optimizer, *, epochs, steps_per_epoch, total_steps, milestones: list = (), gamma: float = 0.1):
    from torch.optim.lr_scheduler import MultiStepLR

    ms = [int(m) for m in milestones] or [max(1, int(epochs * 0.5)), max(2, int(epochs * 0.75))]
    return MultiStepLR(optimizer, milestones=ms, gamma=gamma)


@SCHEDULERS.register("exponential", help="ExponentialLR: multiply the LR by gamma every epoch",
                     interval="epoch", horizon=False)
def exponential(optimizer, *, epochs, steps_per_epoch, total_steps, gamma: float = 0.95):
    from torch.optim.lr_scheduler import ExponentialLR

    return ExponentialLR(optimizer, gamma=gamma)


@SCHEDULERS.register("linear", help="LinearLR: move the LR linearly from start_factor to end_factor "
                     "× the LR over the run, per step", interval="step")
def linear(optimizer, *, epochs, steps_per_epoch, total_steps, start_factor: float = 1.0,
           end_factor: float = 0.01):
    from torch.optim.lr_scheduler import LinearLR

    return LinearLR(optimizer, start_factor=start_factor, end_factor=end_factor,
                    total_iters=max(1, total_steps - 1))


@SCHEDULERS.register("cyclic", help="CyclicLR: cycle between base_lr (default LR/10) and max_lr "
                     "(default the LR; 'auto': the LR finder's) every 2 × step_size_up steps; "
                     "mode triangular | triangular2 | exp_range", interval="step")
def cyclic(optimizer, *, epochs, steps_per_epoch, total_steps, base_lr: float = 0.0, max_lr: float = 0.0,
           step_size_up: int = 0, mode: str = "triangular", gamma: float = 0.99994):
    from torch.optim.lr_scheduler import CyclicLR

    if mode not in ("triangular", "triangular2", "exp_range"):
        raise ValueError(f"mode must be 'triangular', 'triangular2' or 'exp_range' (got {mode!r})")
    peak = max_lr or optimizer.param_groups[0]["lr"]
    low = base_lr or peak / 10
    if not 0 < low < peak:
        raise ValueError(f"base_lr must be positive and below max_lr (base_lr={low}, max_lr={peak})")
    # default half-cycle: 2 epochs (Smith 2017 suggests 2-10 epochs), at most a quarter of the run
    up = int(step_size_up) or max(1, min(2 * steps_per_epoch, total_steps // 4))
    return CyclicLR(optimizer, base_lr=low, max_lr=peak, step_size_up=up, mode=mode, gamma=gamma,
                    cycle_momentum=_momentum_cycles(optimizer))


def _peaks(optimizer, max_lr: float):
    """One-cycle's peak LR: ``max_lr`` (default the LR) for one group; for several groups with their own
    LRs (discriminative fine-tuning) each group's, scaled alike (``max_lr`` is group 0's)."""
    lrs = [g["lr"] for g in optimizer.param_groups]
    if len(set(lrs)) == 1:
        return max_lr or lrs[0]
    return [lr * (max_lr / lrs[0] if max_lr else 1.0) for lr in lrs]


@SCHEDULERS.register("onecycle", help="OneCycleLR: warm up to max_lr (default the optimizer LR; "
                     "'auto': the LR finder's), then anneal, per step", interval="step")
def onecycle(optimizer, *, epochs, steps_per_epoch, total_steps, max_lr: float = 0.0, pct_start: float = 0.3,
             anneal_strategy: str = "cos", div_factor: float = 25.0, final_div_factor: float = 1e4,
             three_phase: bool = False):
    from torch.optim.lr_scheduler import OneCycleLR

    peak = _peaks(optimizer, max_lr)
    return OneCycleLR(optimizer, max_lr=peak, total_steps=max(2, total_steps),
                      pct_start=pct_start, anneal_strategy=anneal_strategy, div_factor=div_factor,
                      final_div_factor=final_div_factor, three_phase=three_phase,
                      cycle_momentum=_momentum_cycles(optimizer))


@SCHEDULERS.register("cosine", help="CosineAnnealingLR over the whole run, per step, down to eta_min",
                     interval="step")
def cosine(optimizer, *, epochs, steps_per_epoch, total_steps, eta_min: float = 0.0):
    from torch.optim.lr_scheduler import CosineAnnealingLR

    return CosineAnnealingLR(optimizer, T_max=max(1, total_steps), eta_min=eta_min)


@SCHEDULERS.register("cosine_restarts", help="CosineAnnealingWarmRestarts (SGDR), per step: cycles of "
                     "T_0 epochs (default a third of the run), each T_mult × longer; a snapshot of the "
                     "model at each cycle's end (the LR minimum) feeds the snapshot ensemble", interval="step", cycles=True)
def cosine_restarts(optimizer, *, epochs, steps_per_epoch, total_steps, T_0: int = 0, T_mult: int = 1,
                    eta_min: float = 0.0):
    from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts

    if T_0 != int(T_0) or T_0 < 0 or T_mult != int(T_mult) or T_mult < 1:
        raise ValueError(f"T_0 (epochs, 0: a third of the run) and T_mult must be whole numbers, "
                         f"T_mult >= 1 (got T_0={T_0}, T_mult={T_mult})")
    t0 = int(T_0) or max(1, epochs // 3)
    if t0 < 1 or int(T_mult) < 1:
        raise ValueError(f"T_0 and T_mult must be integers >= 1 (got T_0={T_0}, T_mult={T_mult})")
    # cycles are counted in epochs; the scheduler steps per optimizer step, so T_0 is in steps
    return CosineAnnealingWarmRestarts(optimizer, T_0=t0 * steps_per_epoch, T_mult=int(T_mult), eta_min=eta_min)


@SCHEDULERS.register("plateau", help="ReduceLROnPlateau: multiply the LR by factor when the "
                     "early-stopping monitor stalls for patience epochs", interval="plateau", horizon=False)
def plateau(optimizer, *, epochs, steps_per_epoch, total_steps, mode: str = "min", factor: float = 0.1,
            patience: int = 3, threshold: float = 1e-4, min_lr: float = 0.0):
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    return ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience,
                             threshold=threshold, min_lr=min_lr)


class LRSchedule:
    """Drives one registered scheduler at its own frequency, after an optional linear warmup.

    The loop calls :meth:`after_step` after every optimizer step and :meth:`after_epoch` after
    each validation; this object decides what each call means for its scheduler:

    1. During warmup (``warmup_steps`` optimizer steps) the LR of each group rises linearly from
       ``start_factor`` × its target to the target (the scheduler's own starting LR).
    2. After warmup, a ``"step"`` scheduler steps on every optimizer step, an ``"epoch"`` one on
       every epoch end, a ``"plateau"`` one on every epoch end with the monitored value.

    Its :meth:`state_dict` holds the warmup position and the scheduler's state, so a resumed run
    continues the same LR curve.
    """

    def __init__(self, optimizer, scheduler, interval: str, *, warmup_steps: int = 0,
                 start_factor: float = 0.01, name: str = "none", cycles: bool = False):
        self.optimizer, self.scheduler, self.interval, self.name = optimizer, scheduler, interval, name
        self.cycles = cycles  # the scheduler restarts (cosine_restarts): after_step reports cycle ends
        self.warmup_steps, self.start_factor = int(warmup_steps), float(start_factor)
        self.steps = 0  # optimizer steps taken so far
        self.epochs_done = 0
        # the LR each group reaches at the end of warmup = the scheduler's starting LR
        self.targets = [g["lr"] for g in optimizer.param_groups]
        if self.warmup_steps > 0:
            self._set_warm(0)

    @property
    def warming_up(self) -> bool:
        return self.steps < self.warmup_steps

    def _set_warm(self, t: int) -> None:
        f = self.start_factor + (1.0 - self.start_factor) * t / self.warmup_steps
        for g, target in zip(self.optimizer.param_groups, self.targets):
            g["lr"] = target * f

    def after_step(self) -> bool:
        """Advance one optimizer step; True when a warm-restart cycle has just ended at this step."""
        self.steps += 1
        if self.steps <= self.warmup_steps:
            self._set_warm(self.steps)  # reaches the target exactly at steps == warmup_steps
            return False
        if self.scheduler is not None and self.interval == "step":
            self.scheduler.step()
            # CosineAnnealingWarmRestarts wraps T_cur to 0 on the step that ends a cycle
            return self.cycles and self.scheduler.T_cur == 0
        return False

    def after_epoch(self, monitored: float | None = None) -> None:
        self.epochs_done += 1
        if self.scheduler is None or self.warming_up or self.interval == "step":
            return
        if self.interval == "plateau":
            self.scheduler.step(monitored)
        else:
            self.scheduler.step()

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {"steps": self.steps, "epochs_done": self.epochs_done, "targets": list(self.targets),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.epochs_done = int(state["steps"]), int(state["epochs_done"])
        self.targets = list(state["targets"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])


def _split_warmup(options: dict) -> tuple[dict, dict]:
    warm = {k: options[k] for k in WARMUP_OPTIONS if k in options}
    return {k: v for k, v in options.items() if k not in WARMUP_OPTIONS}, warm


def warmup_steps_of(options: dict, steps_per_epoch: int) -> int:
    _, warm = _split_warmup(options)
    return int(warm.get("warmup_steps", 0)) or int(warm.get("warmup_epochs", 0)) * steps_per_epoch


def build_schedule(optimizer, name: str, options: dict, *, epochs: int, steps_per_epoch: int) -> LRSchedule:
    """The :class:`LRSchedule` of the named scheduler with its options (warmup included)."""
    entry = SCHEDULERS.entry(name, key="train.scheduler.name")
    own, warm = _split_warmup(options)
    w = warmup_steps_of(options, steps_per_epoch)
    total = epochs * steps_per_epoch
    if w >= total:
        raise ConfigError(f"warmup of {w} steps leaves nothing of the {total}-step run", key="warmup_steps")
    sched = entry.obj(optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, total_steps=total - w, **own)
    return LRSchedule(optimizer, sched, entry.meta["interval"], warmup_steps=w,
                      start_factor=warm.get("warmup_start_factor", WARMUP_OPTIONS["warmup_start_factor"]),
                      name=name, cycles=bool(entry.meta.get("cycles")))


def check_scheduler_options(name: str, options: dict) -> None:
    """Raise ``ConfigError`` for options the scheduler refuses (tried on a dummy optimizer)."""
    import torch

    fn = SCHEDULERS.get(name)  # the config loader adds the key to the message
    own, warm = _split_warmup(options)
    for k, v in warm.items():
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
        if k != "warmup_start_factor" and not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            raise ConfigError(f"{k} must be an integer >= 0 (got {v!r})", key=k)
        if k == "warmup_start_factor" and not (ok and 0 <= v <= 1):
            raise ConfigError(f"warmup_start_factor must be a number in [0, 1] (got {v!r})", key=k)
    if own.get("max_lr") == "auto":  # resolved by the LR finder before training
        own = {**own, "max_lr": 0.1}
    check_kwargs(fn, own, reserved=_RESERVED,
                 what=f"scheduler {name!r} (plus {', '.join(WARMUP_OPTIONS)})")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    try:
        fn(opt, epochs=10, steps_per_epoch=10, total_steps=100, **own)
    except (ValueError, TypeError) as exc:
        msg = str(exc).splitlines()[0]
        key = next((k for k in own if k in msg), None)
        raise ConfigError(f"scheduler {name!r} refuses this value: {msg}", key=key) from None
