"""Weight and gradient monitoring: per-layer distributions each epoch, and dead ReLU units.

Once per epoch (and once before training, as epoch 0) the loop calls :meth:`WeightMonitor.record`:

1. for each weight of dimension ≥ 2 (linear and conv kernels): quantiles of its values, its RMS;
2. for the same weights: quantiles of ``|grad|`` of the epoch's last optimizer step, its RMS;
3. for each ``nn.ReLU`` module: the fraction of its units (features, or channels of a conv map)
   that output 0 for every one of ``probe_rows`` fixed training rows (eval mode, no gradient).

It draws no random numbers and changes no weight, so turning it on does not change training.
Quantiles of large tensors are taken on a fixed-stride subsample (at most ``MAX_ELEMENTS`` values);
the RMS uses every value.

Examples
--------
>>> import torch
>>> from methodo.train.monitor import WeightMonitor
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> mon = WeightMonitor(net)
>>> row = mon.record(0, net, torch.randn(16, 4))
>>> sorted(row["layers"])
['0.weight', '2.weight']
"""

from __future__ import annotations

import numpy as np
import torch

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
MAX_ELEMENTS = 4_096


def _sample(t: torch.Tensor) -> np.ndarray:
    """The tensor's values as float32 numpy, strided down to at most ``MAX_ELEMENTS`` (deterministic)."""
    flat = t.detach().reshape(-1)
    if flat.numel() > MAX_ELEMENTS:
        flat = flat[:: flat.numel() // MAX_ELEMENTS + 1]
    return flat.float().cpu().numpy()


_Q = np.asarray(QUANTILES)


def _quantiles(flat: np.ndarray) -> list[float]:
    """The ``QUANTILES`` of ``flat``, interpolated linearly between order statistics (numpy's default)."""
    s = np.sort(flat)
    pos = _Q * (len(s) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(s) - 1)
    return (s[lo] + (s[hi] - s[lo]) * (pos - lo)).tolist()


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().float().pow(2).mean().sqrt())


class WeightMonitor:
    """Per-layer weight/gradient statistics and dead ReLU fractions, one row per epoch."""

    def __init__(self, model: torch.nn.Module):
        self.layers = [(n, p) for n, p in model.named_parameters() if p.ndim >= 2 and p.requires_grad]
        self.relus = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.ReLU)]
        self.history: list[dict] = []

    @torch.no_grad()
    def record(self, epoch: int, model: torch.nn.Module, probe: torch.Tensor | None = None) -> dict:
        row: dict = {"epoch": epoch, "layers": {}, "dead_relu": {}}
        for name, p in self.layers:
            w = _sample(p)
            stats = {"w_q": _quantiles(w), "w_rms": _rms(p)}
            if p.grad is not None:
                g = np.abs(_sample(p.grad))
                stats["g_q"] = _quantiles(g)
                stats["g_rms"] = _rms(p.grad)
            row["layers"][name] = stats
        if probe is not None and self.relus:
            row["dead_relu"] = self._dead_fractions(model, probe)
        self.history.append(row)
        return row

    def _dead_fractions(self, model: torch.nn.Module, probe: torch.Tensor) -> dict[str, float]:
        alive: dict[str, torch.Tensor] = {}

        def hook(name):
            def fn(module, inputs, out):
                # a unit is a feature (N, F) or a channel (N, C, ...): alive if > 0 anywhere
                pos = (out > 0)
                dims = [0] + list(range(2, pos.ndim))
                alive[name] = pos.any(dim=dims) if pos.ndim > 1 else pos
            return fn

        handles = [m.register_forward_hook(hook(n)) for n, m in self.relus]
        was_training = model.training
        try:
            model.eval()
            model(probe)
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        return {n: round(1.0 - float(a.float().mean()), 6) for n, a in alive.items()}
