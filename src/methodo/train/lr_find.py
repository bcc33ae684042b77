"""The LR range test (Smith 2017; the "LR finder" of fastai): how high can the learning rate go?

Algorithm:

1. Save the model's weights and buffers, the optimizer's state (when one is given) and every RNG.
2. Train on successive batches while the LR grows exponentially from ``start_lr`` to ``end_lr``
   over ``num_iter`` steps: ``lr_i = start · (end/start)^(i/(num_iter−1))``.
3. Record the loss of each step, and its exponential moving average (bias-corrected, factor
   ``smooth``). Stop early when the smoothed loss exceeds ``diverge`` × its minimum, or when the
   loss is not finite: the LR is past the point where training diverges.
4. Restore the weights, buffers, optimizer state and RNGs (a run with ``lr=auto`` then trains
   exactly as a run given the suggested LR as a number).
5. Suggest LRs from the loss smoothed forward and backward (zero lag: a one-way average trails
   the loss and would shift every suggestion towards higher LRs):
   - ``steepest`` (the default): where the loss falls fastest w.r.t. log(LR), before the minimum
     (the first 10% of the steps, the noisiest, are not candidates);
   - ``valley``: fastai's rule: the middle of the longest stretch over which the smoothed loss
     keeps decreasing (on a long flat start it lands too low: see docs/training.md);
   - ``min_div10``: the LR at the minimum loss, divided by 10 (Smith's rule of thumb).

Examples
--------
>>> from methodo.train.lr_find import valley_index
>>> valley_index([5.0, 4.0, 3.0, 2.0, 1.0, 3.0, 9.0])
1
"""

from __future__ import annotations

import copy
import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch


@dataclass
class LRFindResult:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # raw loss of each step
    smoothed: list[float] = field(default_factory=list)  # bias-corrected moving average (stops the test)
    centred: list[float] = field(default_factory=list)  # zero-lag smoothing (the suggestions read it)
    suggestions: dict[str, float] = field(default_factory=dict)  # valley, steepest, min_div10
    suggestion: str = "steepest"
    suggested_lr: float | None = None
    diverged: bool = False  # stopped early on divergence
    num_iter: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def valley_index(losses) -> int:
    """fastai's ``valley``: about the middle of the longest decreasing subsequence of ``losses``."""
    n = len(losses)
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[max_end] < lds[i]:
            max_end = i
            max_start = max_end - lds[max_end] + 1  # fastai omits the + 1 (starts one before the valley)
    sections = (max_end - max_start) / 3
    return max(0, int(max_start + int(sections) + int(sections / 2)))


def steepest_index(lrs, smoothed) -> int:
    """Index of the most negative slope d(loss)/d(log lr), before the minimum of the loss."""
    lo = int(np.argmin(smoothed))
    if lo < 2:
        return 0
    slope = np.gradient(np.asarray(smoothed[: lo + 1]), np.log(np.asarray(lrs[: lo + 1])))
    return int(np.argmin(slope))


def zero_phase(losses: list[float], beta: float) -> list[float]:
    """The loss smoothed forward then backward by an exponential moving average: no lag.

    A one-way moving average trails the raw loss by about ``1/(1−beta)`` steps, i.e. it shifts
    the curve towards higher LRs; suggestions are read from this centred curve instead.
    """
    def ema(xs):
        out, avg = [], 0.0
        for i, x in enumerate(xs):
            avg = beta * avg + (1 - beta) * x
            out.append(avg / (1 - beta ** (i + 1)) if beta else x)
        return out

    return ema(ema(list(losses))[::-1])[::-1]


def suggest(lrs: list[float], losses: list[float], beta: float) -> tuple[dict[str, float], list[float]]:
    """``(suggestions, centred curve)`` from the raw losses of the range test."""
    if len(lrs) < 5:
        raise ValueError(f"the range test ran only {len(lrs)} steps before the loss diverged; "
                         "lower train.lr_find.start_lr or raise train.lr_find.num_iter")
    curve = zero_phase(losses, beta)
    lo = int(np.argmin(curve))
    skip = len(curve) // 10  # the first steps are the noisiest: not a candidate for the steepest slope
    steep = skip + steepest_index(lrs[skip:], curve[skip:])
    return {
        "valley": float(lrs[valley_index(curve)]),
        "steepest": float(lrs[steep]),
        "min_div10": float(lrs[lo] / 10),
    }, curve


def lr_range_test(model: torch.nn.Module, data, tcfg, *, seed: int, optimizer=None,
                  class_weights: torch.Tensor | None = None) -> LRFindResult:
    """Run the LR range test on ``data.tensors['train']``; the model (and optimizer) are restored.

    ``tcfg`` is a :class:`~methodo.config.TrainConfig`; ``tcfg.lr_find`` sets the ramp, the
    optimizer is ``tcfg.optimizer`` (a fresh one unless ``optimizer`` is given).
    """
    from methodo.seed import generator
    from methodo.train.loop import loss_function, resolve_device
    from methodo.train.optim import build_optimizer

    lf = tcfg.lr_find
    device = resolve_device(tcfg.device)
    model.to(device)
    Xtr, ytr = (t.to(device) for t in data.tensors["train"])
    n, bs = len(Xtr), min(tcfg.batch_size, len(Xtr))
    loss_fn = loss_function(data.task, None if class_weights is None else class_weights.to(device),
                            tcfg.regularization.label_smoothing)

    # 1. Save everything the test changes.
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    saved_rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    was_training = model.training
    opt = optimizer
    if opt is None:
        oc = tcfg.optimizer
        opt = build_optimizer(model.parameters(), oc.name, lf.start_lr, oc.options)
    shuffle = generator(seed, offset=7)
    ratio = lf.end_lr / lf.start_lr
    res = LRFindResult(suggestion=lf.suggestion, num_iter=lf.num_iter)
    avg, best = 0.0, math.inf
    try:
        model.train()
        perm, pos = torch.randperm(n, generator=shuffle).to(device), 0
        for i in range(lf.num_iter):
            # 2. The exponential ramp; batches from successive permutations of the training rows.
            lr = lf.start_lr * ratio ** (i / (lf.num_iter - 1))
            for g in opt.param_groups:
                g["lr"] = lr
            if pos + bs > n:
                perm, pos = torch.randperm(n, generator=shuffle).to(device), 0
            idx = perm[pos:pos + bs]
            pos += bs
            loss = loss_fn(model(Xtr[idx]), ytr[idx])
            lv = loss.item()
            # 3. Smoothed loss; stop on divergence.
            if not math.isfinite(lv):
                res.diverged = True
                break
            avg = lf.smooth * avg + (1 - lf.smooth) * lv
            sm = avg / (1 - lf.smooth ** (i + 1)) if lf.smooth else lv
            res.lrs.append(lr)
            res.losses.append(lv)
            res.smoothed.append(sm)
            best = min(best, sm)
            if i > 0 and sm > lf.diverge * best:
                res.diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        # 4. Restore the model, the optimizer and the RNGs.
        model.load_state_dict(saved_model)
        if optimizer is not None:
            optimizer.load_state_dict(saved_opt)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        torch.set_rng_state(saved_rng[0])
        np.random.set_state(saved_rng[1])
        random.setstate(saved_rng[2])
        model.train(was_training)
    # 5. Suggestions.
    res.suggestions, res.centred = suggest(res.lrs, res.losses, lf.smooth)
    res.suggested_lr = res.suggestions[lf.suggestion]
    return res


def plot(res: LRFindResult, path: Path) -> Path:
    """Loss vs LR (log scale), raw and smoothed, with each suggestion marked."""
    from methodo.report.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(res.lrs, res.losses, color="#bbbbbb", lw=0.8, label="loss (raw)")
    ax.plot(res.lrs, res.centred, color="#1565c0", lw=1.6, label="loss (smoothed, zero lag)")
    marks = {"valley": ("o", "#2e7d32"), "steepest": ("v", "#e65100"), "min_div10": ("s", "#6a1b9a")}
    for name, lr in res.suggestions.items():
        i = int(np.argmin(np.abs(np.log(np.asarray(res.lrs)) - math.log(lr))))
        marker, color = marks[name]
        chosen = " (suggested)" if name == res.suggestion else ""
        ax.plot([lr], [res.centred[i]], marker=marker, color=color, ms=9, ls="none",
                label=f"{name.replace('_', ' ')}: {lr:.2e}{chosen}")
    ax.axvline(res.suggested_lr, color="#2e7d32", ls="--", lw=0.8)
    ax.set_xscale("log")
    lo, hi = min(res.centred), res.centred[0]
    ax.set_ylim(lo - 0.15 * abs(hi - lo) - 1e-3, max(hi, res.centred[-1]) + 0.3 * abs(hi - lo) + 1e-3)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(f"LR range test ({len(res.lrs)} steps{', stopped on divergence' if res.diverged else ''})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def write(res: LRFindResult, out_dir: Path, figure: Path | None = None) -> dict[str, Path]:
    """``lr_find.json`` in ``out_dir`` and the plot (``figure``, default ``out_dir/lr_find.png``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "lr_find.json"
    tmp = js.with_name(".lr_find.json.tmp")
    tmp.write_text(json.dumps(res.to_dict(), indent=2))
    tmp.replace(js)
    fig = plot(res, figure or out_dir / "lr_find.png")
    return {"json": js, "figure": fig}


def resolve_auto_lr(model, data, tcfg, *, seed: int, class_weights=None):
    """``(tcfg, result)``: ``lr=auto`` and ``max_lr=auto`` replaced by the suggested LR.

    ``result`` is ``None`` (and ``tcfg`` unchanged) when nothing is ``auto``.
    """
    oc, sc = tcfg.optimizer, tcfg.scheduler
    lr_auto, max_auto = oc.lr == "auto", sc.options.get("max_lr") == "auto"
    if not (lr_auto or max_auto):
        return tcfg, None
    probe = tcfg
    if lr_auto:  # the ramp sets the LR itself; any number validates the optimizer
        probe = tcfg.model_copy(update={"optimizer": type(oc).model_validate({**oc.model_dump(), "lr": 1.0})})
    res = lr_range_test(model, data, probe, seed=seed, class_weights=class_weights)
    new_oc = type(oc).model_validate({**oc.model_dump(), "lr": res.suggested_lr}) if lr_auto else oc
    new_sc = type(sc).model_validate({**sc.model_dump(), "max_lr": res.suggested_lr}) if max_auto else sc
    return tcfg.model_copy(update={"optimizer": new_oc, "scheduler": new_sc}), res
