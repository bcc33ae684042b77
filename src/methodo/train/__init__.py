"""Training: the loop, optimizers, schedulers and pickle-free checkpoints."""

from methodo.train.optim import OPTIMIZERS
from methodo.train.schedules import SCHEDULERS

__all__ = ["OPTIMIZERS", "SCHEDULERS"]
