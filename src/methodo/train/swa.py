"""Free ensembles from one training run: snapshot ensembles and stochastic weight averaging.

- Snapshot ensemble ("Train 1, get M for free", Huang et al. 2017): with cosine warm restarts
  the LR falls to its minimum at the end of each cycle, where the model sits in a local minimum;
  a snapshot of the weights is kept there, and the ensemble averages the members' predicted
  probabilities (or values).
- SWA (Izmailov et al. 2018): from ``swa.start`` on, the weights at the end of each epoch are
  averaged into one model (``torch.optim.swa_utils.AveragedModel``), the LR is held at
  ``swa.lr`` by ``SWALR``, and the batch-norm statistics of the averaged model are recomputed on
  the training data at the end.

Examples
--------
>>> from methodo.train.swa import swa_start_epoch
>>> swa_start_epoch(0.75, 20), swa_start_epoch(5, 20)
(16, 5)
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch


def swa_start_epoch(start: float, epochs: int) -> int:
    """The first averaged epoch: ``start`` itself when ≥ 1, else that fraction of ``epochs``."""
    if start >= 1:
        return int(start)
    return max(1, min(epochs, math.floor(start * epochs) + 1))


class SWA:
    """Weight averaging from ``start`` on; with ``swa.lr`` set, ``SWALR`` owns the LR afterwards.

    The epoch ``start`` is trained on the regular schedule and is the first one averaged;
    ``SWALR`` is created then (its constructor takes the first annealing step), so it drives the
    LR from epoch ``start + 1`` on, per epoch, and the regular scheduler stops.
    """

    def __init__(self, model: torch.nn.Module, optimizer, swa_cfg, epochs: int):
        from torch.optim.swa_utils import AveragedModel

        self.start = swa_start_epoch(swa_cfg.start, epochs)
        self.cfg, self.optimizer = swa_cfg, optimizer
        self.averaged = AveragedModel(model, use_buffers=False)
        self.scheduler = None

    def active(self, epoch: int) -> bool:
        return epoch >= self.start

    @property
    def owns_lr(self) -> bool:
        return self.scheduler is not None

    def _make_scheduler(self) -> None:
        from torch.optim.swa_utils import SWALR

        self.scheduler = SWALR(self.optimizer, swa_lr=self.cfg.lr, anneal_epochs=self.cfg.anneal_epochs,
                               anneal_strategy="cos")

    def after_epoch(self, model: torch.nn.Module) -> None:
        self.averaged.update_parameters(model)
        if self.cfg.lr is None:
            return
        if self.scheduler is None:
            self._make_scheduler()
        else:
            self.scheduler.step()

    @property
    def n_averaged(self) -> int:
        return int(self.averaged.n_averaged)

    def weights(self, X: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
        """The averaged weights, with batch-norm statistics recomputed on ``X`` (training rows)."""
        model = copy.deepcopy(self.averaged.module)
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            from torch.optim.swa_utils import update_bn

            rng = torch.get_rng_state()  # update_bn runs dropout in train mode: keep the RNG stream
            update_bn([X[s:s + batch_size] for s in range(0, len(X), batch_size)], model)
            torch.set_rng_state(rng)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def state_dict(self) -> dict:
        return {"averaged": self.averaged.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state["averaged"])
        if state["scheduler"] is not None:
            lrs = [g["lr"] for g in self.optimizer.param_groups]
            self._make_scheduler()  # its constructor steps once: put the saved LR back
            self.scheduler.load_state_dict(state["scheduler"])
            for g, lr in zip(self.optimizer.param_groups, lrs):
                g["lr"] = lr


@torch.no_grad()
def ensemble_predict(model: torch.nn.Module, members: list[dict[str, torch.Tensor]], X: torch.Tensor, *,
                     task: str, batch_size: int = 1024, inverse_y=None) -> np.ndarray:
    """Average of the members' predictions (class probabilities, or values in target units).

    ``model`` is a template of the right architecture; its own weights are put back afterwards.
    """
    from methodo.evaluate import predict

    if not members:
        raise ValueError("an ensemble needs at least one member")
    keep = copy.deepcopy(model.state_dict())
    try:
        total = None
        for w in members:
            model.load_state_dict(w)
            p = predict(model, X, task=task, batch_size=batch_size, inverse_y=inverse_y)
            total = p if total is None else total + p
        return total / len(members)
    finally:
        model.load_state_dict(keep)
