"""Weight and gradient monitoring: per-layer distributions over training, and dead ReLU units.

Before training (epoch 0), every ``train.monitor.every`` epochs and at the last epoch the loop calls
:meth:`WeightMonitor.record`:

1. for each weight of dimension ≥ 2 (linear and conv kernels): quantiles of its values, its RMS;
2. for the same weights: quantiles of ``|grad|`` of the epoch's last optimizer step, its RMS;
3. for each ``nn.ReLU`` module: the fraction of its units (features, or channels of a conv map)
   that output 0 for every one of the first ``probe_rows`` validation rows (eval mode, no
   gradient). The loop reads them during its validation pass (:meth:`WeightMonitor.probing`), so
   counting dead units costs no forward pass of its own; epoch 0 (and a last epoch reached by
   early stopping between two records) forwards those rows once.

It draws no random numbers and changes no weight, so turning it on does not change training.
Quantiles of large tensors are taken on a fixed-stride subsample (at most ``MAX_ELEMENTS`` values);
the RMS uses every value. All layers are handled together: one fused norm per kind of tensor, one
sort, one device→host transfer.

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

import contextlib
import math

import numpy as np
import torch

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
MAX_ELEMENTS = 1_024
_Q = np.asarray(QUANTILES)


def _stride(numel: int) -> int:
    """The step of the fixed-stride subsample that keeps at most ``MAX_ELEMENTS`` values."""
    return numel // MAX_ELEMENTS + 1 if numel > MAX_ELEMENTS else 1


class _Quantiles:
    """The ``QUANTILES`` of the strided values of a fixed list of tensors (a model's weights, then
    their gradients), interpolated linearly between order statistics (numpy's default).

    Built once per model: one row per tensor in a CPU buffer padded with +inf, filled by one fused
    copy, sorted in place by numpy, read at precomputed positions. Each call is a handful of
    library calls whatever the number of layers (once per epoch, after the training steps have
    pushed this code out of the CPU caches, it is the number of calls that costs, not the work).
    """

    def __init__(self, numels: list[int]):
        self.strides = [_stride(n) for n in numels]
        self.lens = [-(-n // st) for n, st in zip(numels, self.strides)]
        width = max(self.lens)
        buf = np.full((len(numels), width), np.inf, dtype=np.float32)  # +inf: the padding, sorted last
        for i, n in enumerate(self.lens):
            buf[i, :n] = 0.0  # rows not filled yet read as zeros, never inf − inf
        self.buf = torch.from_numpy(buf)  # shares memory with ``buf``: torch fills it, numpy sorts it
        self.rows = [self.buf[i, :n] for i, n in enumerate(self.lens)]
        lens = np.asarray(self.lens)[:, None]
        pos = _Q[None, :] * (lens - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, lens - 1)
        base = np.arange(len(numels))[:, None] * width
        self.ends = np.concatenate([(base + lo).ravel(), (base + hi).ravel()])  # flat positions: lows, then highs
        self.frac = (pos - lo).ravel().tolist()

    def strided(self, i: int, t: torch.Tensor) -> torch.Tensor:
        """Row ``i``'s fixed-stride subsample of ``t``, flat (a view when ``t`` is contiguous)."""
        return t.detach().reshape(-1)[:: self.strides[i]]

    def __call__(self, rows: list[int], src: list[torch.Tensor], absolute: list[int]) -> list[list[float]]:
        """Fill ``rows`` from the subsamples ``src`` (``absolute``: rows that take absolute values)
        → the quantiles of every row (rows not filled this time hold stale values: read only those
        filled)."""
        dst = [self.rows[i] for i in rows]
        if all(t.device.type == "cpu" for t in src):
            torch._foreach_copy_(dst, src)
        else:
            for d, t in zip(dst, src):
                d.copy_(t)
        if absolute:
            torch._foreach_abs_([self.rows[i] for i in absolute])
        s = self.buf.numpy()
        s.sort(axis=1)
        ends = s.ravel()[self.ends].tolist()  # float32 → Python floats (exact)
        n = len(self.frac)
        q = [a + (b - a) * f for a, b, f in zip(ends[:n], ends[n:], self.frac)]
        k = len(_Q)
        return [q[i:i + k] for i in range(0, n, k)]


class WeightMonitor:
    """Per-layer weight/gradient statistics and dead ReLU fractions, one row per epoch."""

    def __init__(self, model: torch.nn.Module):
        self.layers = [(n, p) for n, p in model.named_parameters() if p.ndim >= 2 and p.requires_grad]
        self.relus = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.ReLU)]
        self.history: list[dict] = []
        self._alive: dict[str, torch.Tensor] = {}  # from the last probing(): unit → fired at least once
        numels = [p.numel() for _, p in self.layers]
        self._root = [math.sqrt(n) for n in numels]  # RMS = norm / √n
        self._quantiles = _Quantiles(numels * 2) if self.layers else None  # weights, then |gradients|
        # one fused norm kernel when every tensor is float32 on one device (the usual case)
        self._samples: list[tuple[int, torch.Tensor]] = []  # (weight's data_ptr, its subsample view)
        self._fused = len({(p.device, p.dtype) for _, p in self.layers}) == 1 and \
            all(p.dtype == torch.float32 for _, p in self.layers)

    def _weight_samples(self) -> list[torch.Tensor]:
        """The weights' subsamples: views built once (the optimizer updates weights in place),
        rebuilt when a weight moved (``model.to``) or is not contiguous (a view would be a copy)."""
        if len(self._samples) != len(self.layers) or any(
                p.data_ptr() != ptr for (_, p), (ptr, _) in zip(self.layers, self._samples)):
            self._samples = [(p.data_ptr(), self._quantiles.strided(i, p)) for i, (_, p) in enumerate(self.layers)]
            if not all(p.is_contiguous() for _, p in self.layers):
                samples, self._samples = [v for _, v in self._samples], []  # copies: good for this call only
                return samples
        return [v for _, v in self._samples]

    @contextlib.contextmanager
    def probing(self, rows: int):
        """While open, every ``nn.ReLU`` notes which of its units fire (> 0) on the first ``rows``
        rows forwarded (over several batches if need be); :meth:`record` then reports the others."""
        alive: dict[str, torch.Tensor] = {}
        seen: dict[str, int] = {}

        def hook(name):
            def fn(module, inputs, out):
                need = rows - seen.get(name, 0)
                if need <= 0 or out.ndim == 0:
                    return
                o = out if len(out) <= need else out[:need]  # (no gradient: record and the loop's validation)
                seen[name] = seen.get(name, 0) + len(o)
                # a unit is a feature (N, F) or a channel (N, C, ...): it fired if its max is > 0
                top = o.amax(dim=(0, *range(2, o.ndim))) if o.ndim > 1 else o.amax().reshape(1)
                fired = top > 0
                alive[name] = fired if name not in alive else alive[name] | fired
            return fn

        handles = [m.register_forward_hook(hook(n)) for n, m in self.relus]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            self._alive = alive

    @torch.no_grad()
    def record(self, epoch: int, model: torch.nn.Module, probe: torch.Tensor | None = None) -> dict:
        """The epoch's row. Dead units: from forwarding ``probe`` (eval mode) when given, else from
        the last :meth:`probing` (the loop's validation pass); none when neither saw a ReLU."""
        if probe is not None and self.relus:
            was_training = model.training
            try:
                model.eval()
                with self.probing(len(probe)):
                    model(probe)
            finally:
                model.train(was_training)
        row: dict = {"epoch": epoch, "layers": {}, "dead_relu": {}}
        if self.layers:
            params = [p for _, p in self.layers]
            k = len(params)
            grads = [(k + i, p.grad) for i, p in enumerate(params) if p.grad is not None]
            tensors = params + [g for _, g in grads]
            norms = torch.stack(torch._foreach_norm(tensors, 2.0)).tolist() if self._fused else \
                [float(torch.linalg.vector_norm(t.detach().float())) for t in tensors]
            src = self._weight_samples() + [self._quantiles.strided(i, g) for i, g in grads]
            quant = self._quantiles(list(range(k)) + [i for i, _ in grads], src, [i for i, _ in grads])
            g_norm = dict(zip((i for i, _ in grads), norms[k:]))
            for i, (name, p) in enumerate(self.layers):
                stats = {"w_q": quant[i], "w_rms": norms[i] / self._root[i]}
                if k + i in g_norm:
                    stats["g_q"], stats["g_rms"] = quant[k + i], g_norm[k + i] / self._root[i]
                row["layers"][name] = stats
        if self._alive:
            # one transfer for every unit of every ReLU; the fractions in Python
            fired = torch.cat(list(self._alive.values())).tolist()
            start = 0
            for name, a in self._alive.items():
                n = len(a)
                row["dead_relu"][name] = round(1.0 - sum(fired[start:start + n]) / n, 6)
                start += n
            self._alive = {}
        self.history.append(row)
        return row
