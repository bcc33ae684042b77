"""Imported once by the forkserver of ``methodo tune --workers K`` before it forks the workers: the modules
every trial needs (torch, scikit-learn, the data stage, the loop, the metrics, optuna), so no worker imports them again."""

import optuna  # noqa: F401
import sklearn.model_selection  # noqa: F401
import torch  # noqa: F401

import methodo.evaluate  # noqa: F401
import methodo.stages  # noqa: F401
import methodo.train.loop  # noqa: F401
import methodo.tune.study  # noqa: F401
import methodo.tune.trial  # noqa: F401
