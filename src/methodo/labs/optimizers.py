"""Lab `optimizers`: every optimizer of methodo's registry — the twelve ``torch.optim`` optimizers that
``train.optimizer.name`` accepts — on one task, through methodo's training loop: the same network, data, split,
seed and number of steps; only ``train.optimizer`` changes. Full-batch steps (one step per epoch), so that Rprop
and L-BFGS, which are meant for full batches, run as intended, and every loss curve is a curve of steps (an L-BFGS
step evaluates the loss up to 20 times, its ``max_iter``: equal steps are not equal work)."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

EPOCHS = 60  # full-batch: one optimizer step per epoch
# a usual learning rate for each (the torch default where it is one); options beyond lr are torch's defaults
LRS = {"adadelta": 1.0, "adagrad": 0.05, "adam": 0.01, "adamax": 0.02, "adamw": 0.01, "asgd": 0.1, "lbfgs": 0.5,
       "nadam": 0.01, "radam": 0.01, "rmsprop": 0.005, "rprop": 0.01, "sgd": 0.1}
OPTIONS = {"sgd": {"momentum": 0.9}}


@step
def train_all(ctx: LabContext):
    """**Train with each of the twelve optimizers.** `methodo list optimizers` names them; each run is the
    config `train.optimizer: {name: NAME, lr: LR}` (SGD with momentum 0.9) on `breast_cancer` (569 rows, 30
    features standardized on train, a stratified split 60/20/20), `mlp` with one hidden layer of 32, 60 epochs
    of one full-batch step each (batches of 341, the training split), no early stopping (the loop keeps the best-val-loss epoch's weights). We keep
    the training loss of every step and the validation loss and accuracy of every epoch."""
    from methodo.train import OPTIMIZERS

    names = OPTIMIZERS.names()
    out = {}
    curves = {}
    for name in names:
        prep, res = ctx.train(name, {
            "data": {"source": "breast_cancer", "split": {"method": "stratified", "val": 0.2, "test": 0.2}},
            "model": {"name": "mlp", "hidden": [32], "dropout": 0.0},
            "train": {"epochs": EPOCHS, "batch_size": 341, "early_stopping": None,
                      "optimizer": {"name": name, "lr": LRS[name], **OPTIONS.get(name, {})}}})
        h = res.history
        tr = [r["train_loss"] for r in h]
        curves[name] = tr
        out[name] = {"lr": LRS[name], "first_train_loss": tr[0], "final_train_loss": tr[-1],
                     "final_val_loss": h[-1]["val_loss"], "final_val_accuracy": h[-1]["val_accuracy"],
                     "best_val_loss": min(r["val_loss"] for r in h), "steps": len(res.losses),
                     "finite": bool(np.all(np.isfinite(tr)))}
    ctx.state["curves"] = curves
    rank = sorted(names, key=lambda k: out[k]["final_train_loss"])
    return ctx.record(optimizers=names, epochs=EPOCHS, table=out, ranking_by_final_train_loss=rank)


@step
def plot(ctx: LabContext):
    """**Figure.** Left: the training loss per step of the twelve runs side by side (log scale). Right: the final
    table, training and validation loss after 60 steps, sorted."""
    import matplotlib.pyplot as plt

    n = ctx.numbers
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    cmap = plt.get_cmap("tab20")
    for i, name in enumerate(n["optimizers"]):
        c = ctx.state["curves"][name]
        axes[0].plot(np.arange(1, len(c) + 1), np.maximum(c, 1e-8), color=cmap(i), lw=1.3, ls="-" if i < 10 else "--", label=name)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("epoch (one full-batch step)")
    axes[0].set_ylabel("training loss (floored at 1e-8)")
    axes[0].legend(fontsize=7, ncol=2)
    rank = n["ranking_by_final_train_loss"]
    y = np.arange(len(rank))
    t = n["table"]
    axes[1].barh(y - 0.2, [max(t[k]["final_train_loss"], 1e-8) for k in rank], 0.4, label="train loss",
                 color="#4477aa")
    axes[1].barh(y + 0.2, [max(t[k]["final_val_loss"], 1e-8) for k in rank], 0.4, label="val loss", color="#cc6677")
    axes[1].set_xscale("log")
    axes[1].set_yticks(y, [f"{k} (lr {t[k]['lr']:g})" for k in rank], fontsize=8)
    axes[1].invert_yaxis()
    axes[1].set_xlabel(f"loss after {n['epochs']} steps")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "optimizers")


def conclude(ctx: LabContext):
    n = ctx.numbers
    t = n["table"]
    rank = n["ranking_by_final_train_loss"]
    checks = {
        "all twelve registered optimizers ran": len(n["optimizers"]) == 12 and len(t) == 12,
        "every run's loss stayed finite": all(v["finite"] for v in t.values()),
        "every optimizer at least halved the training loss": all(v["final_train_loss"] <= 0.5 * v["first_train_loss"]
                                                                 for v in t.values()),
        "every run beats chance on val (accuracy ≥ 0.8)": all(v["final_val_accuracy"] >= 0.8 for v in t.values()),
    }
    best, worst = rank[0], rank[-1]
    vbest = min(t, key=lambda k: t[k]["final_val_loss"])
    sentence = (f"All {len(t)} optimizers trained the same network in {n['epochs']} full-batch steps; the final training "
                f"loss ranges from {t[best]['final_train_loss']:.3g} ({best}) to {t[worst]['final_train_loss']:.3g} "
                f"({worst}); the lowest final validation loss is {t[vbest]['final_val_loss']:.3g} ({vbest}), and "
                f"the final validation accuracy ranges from "
                f"{min(v['final_val_accuracy'] for v in t.values()):.3f} to "
                f"{max(v['final_val_accuracy'] for v in t.values()):.3f}.")
    return sentence, checks


LAB = Lab("optimizers", "Twelve optimizers on one task",
          "Every torch.optim optimizer of methodo's registry on one task, through methodo's training: the loss "
          "curves side by side and the final losses in one table.",
          (train_all, plot), conclude,
          intro="The course's tour of optimizers, measured: the same network, data and number of steps, only "
                "`train.optimizer` changes. Each runs at a usual learning rate for it; the ranking is of this task "
                "and these rates, not a verdict on the optimizers.")
