"""Lab `snapshots`: snapshot ensembles, "train 1, get M for free" (Huang et al. 2017). One training run with
cosine annealing and warm restarts (``train.scheduler: {name: cosine_restarts, T_0: 4}``, 20 epochs: five cycles)
leaves methodo's training loop with a snapshot of the weights at the end of every cycle, where the learning rate
is at its minimum. The ensemble — the mean of the five snapshots' predicted probabilities, which is what
``methodo run`` evaluates as ``ensembles.snapshot`` (``methodo.stages.evaluate_ensembles``) — is compared on the
test split with the last snapshot alone (the model the same run would otherwise end with), and with each
snapshot alone. The large restart learning rate (0.5) sends each cycle to a different minimum, so the members
disagree where they are unsure, and averaging them lowers the test log-loss well below the last snapshot's;
the accuracy, on 360 test images, moves by a few images at most."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

EPOCHS, T_0, LR = 20, 4, 0.5
MEMBERS = EPOCHS // T_0
METRICS = ["accuracy", "log_loss"]


@step
def train(ctx: LabContext):
    """**One run, five cycles.** `mlp` with one hidden layer of 256 units on `digits` (a stratified 60/20/20
    split), SGD with momentum 0.9, batches of 64, 20 epochs, `train.scheduler: {name: cosine_restarts, T_0: 4}`:
    the learning rate falls from 0.5 to 0 along a cosine every 4 epochs, then jumps back to 0.5. At the step
    where each cycle ends, the loop copies the weights (`train.snapshot_ensemble` is on by default with
    `cosine_restarts`): five snapshots, at epochs 4, 8, 12, 16 and 20, for the cost of one training."""
    prep, res = ctx.train("snapshots", {
        "data": {"source": "digits", "split": {"method": "stratified", "val": 0.2, "test": 0.2}},
        "model": {"name": "mlp", "hidden": [256], "dropout": 0.0},
        "train": {"epochs": EPOCHS, "batch_size": 64, "early_stopping": None, "monitor": {"enabled": False},
                  "optimizer": {"name": "sgd", "lr": LR, "momentum": 0.9},
                  "scheduler": {"name": "cosine_restarts", "T_0": T_0}}})
    ctx.state.update(prep=prep, res=res)
    lrs = np.asarray(res.lrs, dtype=float)
    ctx.state["lrs"] = lrs
    steps = [s["step"] for s in res.snapshots]
    return ctx.record(snapshots=len(res.snapshots), snapshot_epochs=[s["epoch"] for s in res.snapshots],
                      snapshot_steps=steps, lr_at_snapshots=[float(lrs[s - 1]) for s in steps], peak_lr=LR,
                      val_loss=[r["val_loss"] for r in res.history])


@step
def evaluate(ctx: LabContext):
    """**Test: each snapshot, the last one, the ensemble.** methodo's `evaluate_ensembles` gives the ensemble's
    test metrics (as `methodo run` reports them); `ensemble_predict` with one member gives each snapshot's own
    predictions, and with the last *k* members the ensemble of the last *k* cycles, scored by methodo's
    `compute_metrics` (accuracy and log-loss: the mean negative log-probability of the true class, which sees
    how sure the model is, not only whether its top class is right)."""
    from methodo.evaluate.metrics import compute_metrics
    from methodo.stages import evaluate_ensembles
    from methodo.train.swa import ensemble_predict

    prep, res = ctx.state["prep"], ctx.state["res"]
    X, _ = prep.data.tensors["test"]
    y = prep.data.raw_y["test"]
    weights = [s["weights"] for s in res.snapshots]

    def score(members):
        p = ensemble_predict(prep.model, members, X, task=prep.ds.task)
        m = compute_metrics(prep.ds.task, p, y, prep.n_classes, names=METRICS)
        return {k: m[k] for k in METRICS}

    members = [score([w]) for w in weights]
    last_k = [score(weights[-k:]) for k in range(1, len(weights) + 1)]
    ens = evaluate_ensembles(prep, res)["snapshot"]
    methodo = {k: ens["metrics"]["test"][k] for k in METRICS}
    return ctx.record(test_rows=len(y), members=members, last=members[-1], ensemble=methodo,
                      ensemble_of_last_k=last_k, ensemble_members=ens["members"],
                      best_member_log_loss=min(m["log_loss"] for m in members),
                      mean_member_log_loss=float(np.mean([m["log_loss"] for m in members])))


@step
def plot(ctx: LabContext):
    """**Figure.** Left: the learning rate of every step, the snapshots marked where each cycle ends. Right: the
    test log-loss of each snapshot alone, and of the ensemble of the last *k* snapshots: *k* = 1 is the last
    snapshot, *k* = 5 the whole ensemble."""
    import matplotlib.pyplot as plt

    n, lrs = ctx.numbers, ctx.state["lrs"]
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8))
    ax = axes[0]
    ax.plot(np.arange(1, len(lrs) + 1), lrs, c="#aa3377", lw=1)
    ax.plot(n["snapshot_steps"], n["lr_at_snapshots"], "v", c="k", ms=8, label="snapshot (cycle end)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(f"cosine_restarts, T_0 = {T_0} epochs", fontsize=9)
    ax.set_ylim(-0.02, LR * 1.25)
    ax.legend(fontsize=8, loc="upper right", framealpha=1)
    ax = axes[1]
    k = np.arange(1, MEMBERS + 1)
    ax.plot(k, [m["log_loss"] for m in n["members"]], "o", c="#4477aa", label="snapshot alone (at its epoch)")
    for i, (m, e) in enumerate(zip(n["members"], n["snapshot_epochs"])):
        ax.annotate(f"ep {e}", (i + 1, m["log_loss"]), textcoords="offset points", xytext=(6, 0), fontsize=7)
    ax.plot(k, [m["log_loss"] for m in n["ensemble_of_last_k"]], "-s", c="#ee6677",
            label="ensemble of the last k snapshots")
    ax.set_xticks(k)
    ax.set_xlabel("snapshot number / k")
    ax.set_ylabel("test log-loss")
    ax.set_title(f"last snapshot {n['last']['log_loss']:.3f} → ensemble of {MEMBERS} {n['ensemble']['log_loss']:.3f}",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "snapshots")


def conclude(ctx: LabContext):
    n = ctx.numbers
    last, ens = n["last"], n["ensemble"]
    checks = {
        f"{MEMBERS} snapshots, one at the end of each cycle": n["snapshots"] == MEMBERS
        and n["snapshot_epochs"] == [T_0 * (i + 1) for i in range(MEMBERS)],
        "each snapshot is taken where the LR is at its minimum (< 1 % of the peak)":
            max(n["lr_at_snapshots"]) < 0.01 * LR,
        "the ensemble's test log-loss is at most 0.9 × the last snapshot's": ens["log_loss"] <= 0.9 * last["log_loss"],
        "the ensemble's test log-loss is below the best single snapshot's": ens["log_loss"] < n["best_member_log_loss"],
    }
    rows = n["test_rows"]
    diff = round((ens["accuracy"] - last["accuracy"]) * rows)
    sentence = (f"One run with cosine restarts left {n['snapshots']} snapshots (epochs "
                f"{', '.join(map(str, n['snapshot_epochs']))}); their ensemble has a test log-loss of "
                f"{ens['log_loss']:.3f} against {last['log_loss']:.3f} for the last snapshot alone "
                f"({100 * (1 - ens['log_loss'] / last['log_loss']):.0f} % lower) and "
                f"{n['best_member_log_loss']:.3f} for "
                f"the best single snapshot, while the test accuracy moves from {last['accuracy']:.3f} to "
                f"{ens['accuracy']:.3f} ({diff:+d} of {rows} images).")
    return sentence, checks


LAB = Lab("snapshots", "Snapshot ensembles: train 1, get M for free",
          "The snapshots that one cosine-restarts run leaves at its cycle ends, ensembled, beat the last snapshot "
          "alone on test (log-loss), at no extra training cost.",
          (train, evaluate, plot), conclude,
          intro="Huang et al. (2017): with warm restarts, the learning rate falls to a minimum at the end of each "
                "cycle, where the model sits in a minimum of the loss; the restart sends it to another. The "
                "snapshots taken there are different models from one training, and averaging their predictions "
                "is an ensemble for free.")
