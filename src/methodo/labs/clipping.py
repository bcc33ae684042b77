"""Lab `clipping`: gradient clipping against exploding updates. A deliberately unstable setup — a 3-hidden-layer
MLP on scikit-learn's diabetes regression, SGD with learning rate 0.2 and momentum 0.9 — is trained twice by
methodo's training loop, once as is and once with ``train.clip.norm: 0.1`` (the global gradient norm is rescaled
to at most 0.1 before each step). Without clipping the loss explodes within a few epochs and the loop stops the
run (its divergence guard: a loss above ``divergence_factor`` × the first one, or a non-finite one); with
clipping the same setup trains and beats the mean prediction on validation."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

CLIP = 0.1
EPOCHS = 30


def _config(clip: float | None) -> dict:
    return {"data": {"source": "diabetes", "split": {"method": "random", "val": 0.2, "test": 0.2}},
            "model": {"name": "mlp", "hidden": [64, 64, 64], "dropout": 0.0},
            "train": {"epochs": EPOCHS, "batch_size": 32, "early_stopping": None, "clip": {"norm": clip},
                      "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9}}}


@step
def without_clipping(ctx: LabContext):
    """**Train without clipping.** `mlp` [64, 64, 64] on `diabetes` (442 rows, targets standardized on train),
    `train.optimizer: {name: sgd, lr: 0.2, momentum: 0.9}`, 30 epochs, batches of 32, no clipping. The loop's
    guard stops a run whose loss becomes non-finite or exceeds `train.divergence_factor` (10⁴) × the first
    batch's loss; we record where it stopped."""
    from methodo.train.loop import NonFiniteLoss

    try:
        _, res = ctx.train("unclipped", _config(None))
    except NonFiniteLoss as exc:
        return ctx.record(unclipped={"diverged": True, "epoch": exc.epoch, "step": exc.step, "loss": exc.value,
                                     "reason": str(exc)})
    h = res.history
    return ctx.record(unclipped={"diverged": False, "epochs_run": res.epochs_run,
                                 "best_val_loss": min(r["val_loss"] for r in h)})


@step
def with_clipping(ctx: LabContext):
    """**The same run with `train.clip.norm: 0.1`.** Everything else equal; the loop computes the global gradient
    norm before each step (logged per step) and rescales the gradient to norm 0.1 when it is larger. We compare
    the best validation loss (mean squared error in standardized units) with the mean prediction's."""
    prep, res = ctx.train("clipped", _config(CLIP))
    yt = prep.data.tensors["train"][1].float().numpy()
    yv = prep.data.tensors["val"][1].float().numpy()
    baseline = float(np.mean((yv - yt.mean()) ** 2))  # predicting the training mean
    va = [r["val_loss"] for r in res.history]
    gn = np.asarray(res.grad_norms, dtype=float)
    ctx.state["losses"] = list(res.losses)
    ctx.state["grad_norms"] = gn
    return ctx.record(clipped={
        "epochs_run": res.epochs_run, "val_loss": va, "best_epoch": res.best_epoch, "best_val_loss": min(va),
        "all_step_losses_finite": bool(np.all(np.isfinite(res.losses))), "steps": len(res.losses),
        "grad_norm_median": float(np.median(gn)), "grad_norm_max": float(gn.max()),
        "share_of_steps_clipped": float(np.mean(gn > CLIP))}, mean_prediction_val_loss=baseline)


@step
def plot(ctx: LabContext):
    """**Figure.** Left: the clipped run's training loss per step, and where the unclipped run was stopped.
    Right: the gradient norm before clipping, per step, against the clipping threshold: every step above the
    line is rescaled, so no update is longer than learning rate × 0.1, however large the gradient."""
    import matplotlib.pyplot as plt

    n = ctx.numbers
    un, cl = n["unclipped"], n["clipped"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    losses = ctx.state["losses"]
    axes[0].plot(np.arange(1, len(losses) + 1), losses, c="#4477aa", lw=0.8, label=f"clip.norm {CLIP}")
    axes[0].axhline(n["mean_prediction_val_loss"], c="k", ls="--", lw=1, label="mean prediction (val)")
    if un["diverged"]:
        spe = len(losses) // cl["epochs_run"]
        at = (un["epoch"] - 1) * spe + un["step"]
        axes[0].axvline(at, c="#cc3311", lw=1.5, label=f"no clipping: stopped, loss {un['loss']:.2g}")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("optimizer step")
    axes[0].set_ylabel("training loss (MSE, standardized)")
    axes[0].legend(fontsize=8)
    gn = ctx.state["grad_norms"]
    axes[1].plot(np.arange(1, len(gn) + 1), gn, c="#228833", lw=0.8, label="gradient norm before clipping")
    axes[1].axhline(CLIP, c="k", ls="--", lw=1, label=f"clip.norm = {CLIP}")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("optimizer step")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "clipping")


def conclude(ctx: LabContext):
    n = ctx.numbers
    un, cl, base = n["unclipped"], n["clipped"], n["mean_prediction_val_loss"]
    checks = {
        "without clipping the run diverges": un["diverged"],
        "with clipping every step's loss is finite and all epochs run":
            cl["all_step_losses_finite"] and cl["epochs_run"] == EPOCHS,
        "with clipping the model learns: best val loss ≤ 0.8 × the mean prediction's": cl["best_val_loss"] <= 0.8 * base,
        "clipping was active (most pre-clip norms above the threshold)": cl["share_of_steps_clipped"] > 0.5,
    }
    stop = (f"diverges at epoch {un['epoch']}, step {un['step']} (loss {un['loss']:.3g})" if un["diverged"]
            else f"does not diverge (best val loss {un['best_val_loss']:.3f})")
    sentence = (f"Without clipping, SGD at learning rate 0.2 with momentum 0.9 {stop}; with train.clip.norm {CLIP} "
                f"the same run trains {cl['epochs_run']} epochs to a best validation loss of {cl['best_val_loss']:.3f} "
                f"(the mean prediction: {base:.3f}), {100 * cl['share_of_steps_clipped']:.0f} % of its steps clipped "
                f"(median pre-clip norm {cl['grad_norm_median']:.2f}).")
    return sentence, checks


LAB = Lab("clipping", "Gradient clipping: an exploding run, tamed",
          "A deliberately exploding setup (SGD, large learning rate and momentum) diverges without gradient "
          "clipping and trains with it.",
          (without_clipping, with_clipping, plot), conclude,
          intro="Clipping the global gradient norm bounds the size of every update (learning rate × clip norm), "
                "whatever the gradient: a guard against the rare huge gradient that throws training off.")
