"""The resumable state of a training run: one dataclass that saves and restores itself.

Every field of :class:`TrainState` is one key of ``last.safetensors``'s state (the same flat keys the
checkpoint always had, so checkpoints written before this class existed still load). The loop
updates the counters and series (``history``, ``lrs``, ``first_loss``, ...) directly on the state;
the fields that belong to live objects (optimizer, schedule, RNGs, early stopping, weight monitor,
SWA) are read from them by :meth:`TrainState.capture` and written back by :meth:`TrainState.restore`
— the one place that lists them. Adding a field is adding one line here (and one in those two
methods when it belongs to a live object); the round-trip test covers every field.

Examples
--------
>>> from methodo.train.state import TrainState
>>> s = TrainState(epoch=3, lrs=[0.1, 0.1])
>>> TrainState.from_dict(s.to_dict()).lrs
[0.1, 0.1]
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from methodo.errors import BadInput
from methodo.train.checkpoint import load_checkpoint, save_checkpoint


@dataclass
class Parts:
    """The live objects whose state is part of a checkpoint (``None`` when a feature is off)."""

    optimizer: Any
    schedule: Any
    shuffle: torch.Generator
    stopper: Any
    augment: Any = None  # has ``.generator`` (data.augment)
    watcher: Any = None  # WeightMonitor, ``.history``
    swa: Any = None


@dataclass
class TrainState:
    """Everything a killed run needs to continue bit for bit, beside the weights.

    Field order is the order of the checkpoint's keys (kept as it was before this class).
    """

    epoch: int = 0  # last finished epoch (1-based; 0: none yet)
    optimizer: dict | None = None  # optimizer.state_dict()
    schedule: dict | None = None  # LR schedule (warmup position + scheduler)
    rng_torch: torch.Tensor | None = None
    rng_numpy: tuple | None = None
    rng_python: tuple | None = None
    rng_shuffle: torch.Tensor | None = None  # the sampler's position: the next epoch's permutation
    rng_augment: torch.Tensor | None = None  # data.augment's generator (None: no augmentation)
    stopper_best: float | None = None  # early stopping: best monitored value so far
    stopper_bad_epochs: int = 0  # early stopping: epochs without improvement
    history: list[dict] = field(default_factory=list)  # metrics.csv rows
    lrs: list[float] = field(default_factory=list)  # LR of every optimizer step
    losses: list[float] = field(default_factory=list)  # data loss of every optimizer step
    grad_norms: list[float] = field(default_factory=list)  # pre-clip norm of every step (when computed)
    skipped_batches: list[dict] = field(default_factory=list)  # NaN guard (skip policy): {epoch, step, tensor}
    consecutive_skips: int = 0  # NaN guard: skipped steps in a row
    best_epoch: int = 0
    best_value: float | None = None
    first_loss: float | None = None  # the divergence guard's reference (first batch's loss)
    monitor: list[dict] | None = None  # WeightMonitor.history (None: monitoring off)
    swa: dict | None = None  # SWA.state_dict() (None: SWA off)
    snapshots: list[dict] = field(default_factory=list)  # {epoch, step, file[, weights]} per cycle end

    # ------------------------------------------------------------------ live objects

    def capture(self, parts: Parts) -> None:
        """Read the live objects' state into this state (just before saving)."""
        self.optimizer = parts.optimizer.state_dict()
        self.schedule = parts.schedule.state_dict()
        self.rng_torch, self.rng_numpy, self.rng_python = torch.get_rng_state(), np.random.get_state(), random.getstate()
        self.rng_shuffle = parts.shuffle.get_state()
        self.rng_augment = parts.augment.generator.get_state() if parts.augment is not None else None
        self.stopper_best, self.stopper_bad_epochs = parts.stopper.best, parts.stopper.bad_epochs
        self.monitor = parts.watcher.history if parts.watcher is not None else None
        self.swa = parts.swa.state_dict() if parts.swa is not None else None

    def restore(self, parts: Parts) -> None:
        """Write this state back into the live objects (on resume)."""
        parts.optimizer.load_state_dict(self.optimizer)
        parts.schedule.load_state_dict(self.schedule)
        torch.set_rng_state(self.rng_torch)
        np.random.set_state(self.rng_numpy)
        random.setstate(self.rng_python)
        parts.shuffle.set_state(self.rng_shuffle)
        if parts.augment is not None and self.rng_augment is not None:  # the same augmentations from here on
            parts.augment.generator.set_state(self.rng_augment)
        parts.stopper.best, parts.stopper.bad_epochs = self.stopper_best, self.stopper_bad_epochs
        if parts.watcher is not None and self.monitor is not None:
            parts.watcher.history = self.monitor
        if parts.swa is not None and self.swa is not None:
            parts.swa.load_state_dict(self.swa)

    # ------------------------------------------------------------------ plain data

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's state tree: every field; snapshot weights stay in their own files."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["snapshots"] = [{k: v for k, v in s.items() if k != "weights"} for s in self.snapshots]
        return out

    @classmethod
    def from_dict(cls, state: dict[str, Any], *, source: str = "checkpoint") -> TrainState:
        """The state from a checkpoint's tree; a missing or unknown key is a :class:`BadInput`."""
        if not isinstance(state, dict):
            raise BadInput(f"{source}: holds no training state (a weights-only checkpoint cannot resume a run)")
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in state]
        unknown = [k for k in state if k not in names]
        if missing or unknown:
            raise BadInput(f"{source}: not a training state this version of methodo can resume "
                           f"(missing keys: {missing or 'none'}; unknown keys: {unknown or 'none'})")
        return cls(**state)

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path, weights: dict[str, torch.Tensor]) -> Path:
        """Write ``weights`` and this state atomically to ``path`` (``last.safetensors``)."""
        return save_checkpoint(path, weights, self.to_dict(), meta={"epoch": self.epoch})

    @classmethod
    def load(cls, path: str | Path) -> tuple[dict[str, torch.Tensor], TrainState]:
        """``(weights, state)`` from ``path``; snapshot weights are read from their files beside it."""
        path = Path(path)
        weights, tree, _ = load_checkpoint(path)
        state = cls.from_dict(tree, source=str(path))
        state.snapshots = [{**s, "weights": load_checkpoint(path.parent / s["file"])[0]} for s in state.snapshots]
        return weights, state
