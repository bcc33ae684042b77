"""Lab `lr-finder`: the LR range test (L. Smith 2017; fastai's "LR finder") against a grid of learning rates.
methodo's range test (``methodo lr-find``, :func:`methodo.pipeline.lr_find`) trains a small network on
scikit-learn's digits for at most 100 steps while the learning rate grows exponentially from 10⁻⁷ to 10, and
suggests a learning rate from the loss curve (its default rule, ``steepest``: where the smoothed loss falls
fastest). The same network is then trained for 12 epochs at seven learning rates from 10⁻³ to 1 (half a
decade apart) and at the suggested one, and their validation losses compared: the suggestion, read from one
short ramp, lands in the grid's best region, at a fraction of the grid's cost. Where the other two rules of
``train.lr_find.suggestion`` fall is reported: ``min_div10`` (the LR of the loss minimum / 10) lands lower, and
``valley`` (fastai's rule) on the flat start of the curve, below the grid, where nothing trains in 12 epochs
(docs/training.md explains why it is not the default)."""

from __future__ import annotations

import math

import numpy as np

from methodo.labs import Lab, LabContext, step

EPOCHS = 12
GRID = [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0]
WITHIN = 1.25  # the suggestion's val loss is at most this × the grid's best
REGION = 1.5  # the grid's good region: the learning rates whose val loss is at most this × the best


def _config(lr) -> dict:
    return {"data": {"source": "digits", "split": {"method": "stratified", "val": 0.2, "test": 0.2}},
            "model": {"name": "mlp", "hidden": [64], "dropout": 0.0},
            "train": {"epochs": EPOCHS, "batch_size": 64, "early_stopping": None, "monitor": {"enabled": False},
                      "optimizer": {"name": "sgd", "lr": lr, "momentum": 0.9}}}


def _val_loss(ctx: LabContext, name: str, lr: float) -> float | None:
    """The validation loss after the last epoch at ``lr``; None when the loop stopped the run (diverged)."""
    from methodo.train.loop import NonFiniteLoss

    try:
        _, res = ctx.train(name, _config(lr))
    except NonFiniteLoss:
        return None
    return res.history[-1]["val_loss"]


@step
def range_test(ctx: LabContext):
    """**The range test.** `methodo.pipeline.lr_find` (what `methodo lr-find CONFIG` runs) on the config the grid
    trains below — `mlp` with one hidden layer of 64 units, `digits`, SGD with momentum 0.9, batches of 64 —
    with `train.optimizer.lr: auto`: from fresh weights, one batch per step, the learning rate of step *i* is
    10⁻⁷ · (10⁸)^(i/99); the loss is smoothed, and the test stops when the smoothed loss exceeds 4 × its
    minimum. The model is restored afterwards. The three rules read the curve smoothed forward and backward."""
    from methodo.pipeline import lr_find

    _, res = lr_find(ctx.config("range-test", _config("auto")), out=ctx.run_dir("range-test"))
    ctx.state["range"] = res
    return ctx.record(range_test={"steps": len(res.lrs), "stopped_on_divergence": res.diverged,
                                  "first_lr": res.lrs[0], "last_lr": res.lrs[-1],
                                  "first_loss": res.centred[0], "min_loss": min(res.centred),
                                  "lr_at_min_loss": res.lrs[int(np.argmin(res.centred))]},
                      suggestions=res.suggestions, rule=res.suggestion, suggested_lr=res.suggested_lr)


@step
def grid(ctx: LabContext):
    """**The grid.** The same config trained for 12 epochs (no early stopping, no schedule) at each learning
    rate of the grid 10⁻³, 3·10⁻³, …, 1, and at each rule's suggestion; the validation loss after the last
    epoch (cross-entropy) of each; then the suggestion (the `steepest` rule's), trained the same way. The grid's
    *good region*: from the smallest to the largest grid learning rate whose loss is at most 1.5 × the grid's
    best; where each rule's suggestion falls."""
    losses = {lr: _val_loss(ctx, f"grid-{lr:g}", lr) for lr in GRID}
    ok = {lr: v for lr, v in losses.items() if v is not None}
    best_lr = min(ok, key=ok.get)
    best = ok[best_lr]
    good = [lr for lr, v in ok.items() if v <= REGION * best]
    lo, hi = min(good), max(good)
    suggested = ctx.numbers["suggested_lr"]
    rules = {rule: {"lr": lr, "in_good_region": lo <= lr <= hi, "below_grid": lr < GRID[0]}
             for rule, lr in ctx.numbers["suggestions"].items()}
    rules[ctx.numbers["rule"]]["val_loss"] = _val_loss(ctx, "suggested", suggested)
    return ctx.record(epochs=EPOCHS, grid=[{"lr": lr, "val_loss": v} for lr, v in losses.items()],
                      grid_best={"lr": best_lr, "val_loss": best}, grid_worst_val_loss=max(ok.values()),
                      good_region=[lo, hi], rules=rules,
                      suggested={"lr": suggested, "val_loss": rules[ctx.numbers["rule"]]["val_loss"]})


@step
def plot(ctx: LabContext):
    """**Figure.** Left: the range test — the loss of each step against its learning rate, raw and smoothed,
    with the three rules' suggestions. Right: the grid's validation loss after 12 epochs against the learning
    rate, the good region shaded, the suggestion trained the same way, and where the other rules fall."""
    import matplotlib.pyplot as plt

    n, res = ctx.numbers, ctx.state["range"]
    marks = {"steepest": ("v", "#e65100"), "min_div10": ("s", "#6a1b9a"), "valley": ("o", "#2e7d32")}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.9), sharex=True)
    ax = axes[0]
    ax.plot(res.lrs, res.losses, c="#bbbbbb", lw=0.8, label="loss per step")
    ax.plot(res.lrs, res.centred, c="#1565c0", lw=1.6, label="smoothed (zero lag)")
    for rule, lr in n["suggestions"].items():
        i = int(np.argmin(np.abs(np.log(res.lrs) - math.log(lr))))
        m, c = marks[rule]
        ax.plot([lr], [res.centred[i]], m, c=c, ms=9, label=f"{rule}: {lr:.2g}")
    ax.set_xscale("log")
    ax.set_ylim(0, max(res.centred) * 1.1)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"range test: {len(res.lrs)} steps", fontsize=9)
    ax.legend(fontsize=8)
    ax = axes[1]
    g = [(p["lr"], p["val_loss"]) for p in n["grid"] if p["val_loss"] is not None]
    ax.plot([a for a, _ in g], [b for _, b in g], "-o", c="#444444", label="grid")
    lo, hi = n["good_region"]
    ax.axvspan(lo, hi, color="#ccddaa", alpha=0.5, label=f"≤ {REGION} × best")
    for rule, r in n["rules"].items():
        m, c = marks[rule]
        if r.get("val_loss") is not None:
            ax.plot([r["lr"]], [r["val_loss"]], m, c=c, ms=10, label=f"{rule} (trained): {r['val_loss']:.3f}")
        else:
            ax.axvline(r["lr"], c=c, ls=":", lw=1.2, label=f"{rule}: {r['lr']:.2g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"validation loss after {EPOCHS} epochs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "lr_finder")


def conclude(ctx: LabContext):
    n = ctx.numbers
    s, best, (lo, hi) = n["suggested"], n["grid_best"], n["good_region"]
    ratio = s["val_loss"] / best["val_loss"] if s["val_loss"] is not None else math.inf
    rt = n["range_test"]
    checks = {
        "the range test went past the point of divergence (it stopped on the exploding loss)":
            rt["stopped_on_divergence"],
        "the range test's smoothed loss fell by a fifth or more before it rose":
            rt["min_loss"] <= 0.8 * rt["first_loss"],
        "the learning rate matters: the grid's worst loss is ≥ 5 × its best":
            n["grid_worst_val_loss"] >= 5 * best["val_loss"],
        f"the suggestion's val loss is within {WITHIN} × the grid's best": ratio <= WITHIN,
        f"the suggestion lies in the grid's good region (loss ≤ {REGION} × the best)": lo <= s["lr"] <= hi,
    }
    def fmt(v):
        return "none (the run diverged)" if v is None else f"{v:.3f}"

    def where(r):
        return "inside it" if r["in_good_region"] else "below the grid" if r["below_grid"] else \
            "below it" if r["lr"] < lo else "above it"

    others = ", ".join(f"{k} {r['lr']:.2g} {where(r)}" for k, r in n["rules"].items() if k != n["rule"])
    sentence = (f"The range test ({rt['steps']} steps) suggests {s['lr']:.3g} ({n['rule']}); trained for {EPOCHS} "
                f"epochs it reaches a validation loss of {fmt(s['val_loss'])}, {ratio:.2f} × the best of the "
                f"{len(n['grid'])}-point grid ({best['val_loss']:.3f} at {best['lr']:g}; the grid ranges up to "
                f"{n['grid_worst_val_loss']:.2f}), {'inside' if lo <= s['lr'] <= hi else 'outside'} its good region "
                f"{lo:g}–{hi:g} (loss ≤ {REGION} × the "
                f"best); the other rules: {others}.")
    return sentence, checks


LAB = Lab("lr-finder", "The LR finder against a grid of learning rates",
          "The LR range test's suggested learning rate, read from one short ramp, lands in the best region of a "
          "grid of learning rates each trained for 12 epochs.",
          (range_test, grid, plot), conclude,
          intro="How high can the learning rate go? Smith's range test raises it exponentially over one short "
                "run and watches the loss: too low, nothing moves; too high, the loss explodes; in between it falls "
                "fastest. Here its suggestion is checked against the slow way: a grid of full trainings.")
