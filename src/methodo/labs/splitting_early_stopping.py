"""Lab `splitting-early-stopping`: the three splits and early stopping. A network far larger than the data needs
(two hidden layers of 256 on 120 training rows of two noisy moons, 25 % of the labels flipped) is trained by
methodo's training loop: the training loss keeps falling while the validation loss turns up (it starts to learn
the noise). Early stopping on the validation loss stops the run ``patience`` epochs after the best epoch and
restores the weights of that epoch; the test split, never read while training or choosing, is evaluated once,
at the end."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

ROWS, FLIP = 200, 0.25  # two moons, labels flipped at random: a floor of noise to memorize
PATIENCE = 20


@step
def make_data(ctx: LabContext):
    """**Data and splits.** 200 points of two noisy moons (scikit-learn's `make_moons`, noise 0.3), 25 % of the
    labels flipped at random (seeded), written to a CSV file. methodo splits it stratified: 60 % train (what
    the weights are fitted on), 20 % val (what early stopping and every other choice look at), 20 % test
    (read once, after every choice is made)."""
    from sklearn.datasets import make_moons

    X, y = make_moons(n_samples=ROWS, noise=0.3, random_state=ctx.seed)
    rng = np.random.default_rng(ctx.seed)
    flip = rng.random(ROWS) < FLIP
    y = np.where(flip, 1 - y, y)
    path = ctx.run_dir("data") / "moons.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    names = np.array(["a", "b"])[y]
    path.write_text("x,y,label\n" + "".join(f"{a:.6f},{b:.6f},{c}\n" for (a, b), c in zip(X, names)))
    ctx.state["path"] = str(path)
    return ctx.record(rows=ROWS, flipped_share=float(flip.mean()))


@step
def train(ctx: LabContext):
    """**Train with early stopping.** `mlp` with hidden layers [256, 256], Adam at learning rate 0.01, batches of
    16, up to 300 epochs, `train.early_stopping: {monitor: val_loss, patience: 20}`, through methodo's training
    loop (`methodo.train.loop.fit`, what `methodo run` calls). Each epoch's row holds the train and val loss
    only: the loop is never given the test split."""
    from methodo.train.loop import evaluate_loss, loss_function

    prep, res = ctx.train("model", {
        "data": {"source": "csv", "path": ctx.state["path"], "target": "label",
                 "split": {"method": "stratified", "val": 0.2, "test": 0.2}},
        "model": {"name": "mlp", "hidden": [256, 256], "dropout": 0.0},
        "train": {"epochs": 300, "batch_size": 16, "optimizer": {"name": "adam", "lr": 0.01},
                  "early_stopping": {"monitor": "val_loss", "patience": PATIENCE}}})
    h = res.history
    tr = [r["train_loss"] for r in h]
    va = [r["val_loss"] for r in h]
    best = res.best_epoch
    loss_fn = loss_function(prep.data.task, None)
    Xv, yv = prep.data.tensors["val"]
    kept_val_loss, _ = evaluate_loss(prep.model, Xv, yv, loss_fn, prep.data.task, 1024)
    ctx.state["prep"] = prep
    idx = prep.data.indices
    sets = [set(map(int, idx[s])) for s in ("train", "val", "test")]
    return ctx.record(
        train_loss=tr, val_loss=va, epochs_run=res.epochs_run, best_epoch=best, stopped_early=res.stopped_early,
        split_rows={s: len(idx[s]) for s in ("train", "val", "test")},
        splits_disjoint=not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]),
        epoch_columns=sorted({k for r in h for k in r}),
        val_loss_best=va[best - 1], val_loss_last=va[-1], train_loss_best=tr[best - 1], train_loss_last=tr[-1],
        val_loss_of_kept_weights=kept_val_loss)


@step
def test_once(ctx: LabContext):
    """**Touch the test split once.** The restored model (best epoch) predicts the test split, and methodo's
    metrics score it: this is the only time the lab reads it. The model of the last epoch is not scored on
    test: comparing both there would be choosing on test."""
    from methodo.evaluate.metrics import compute_metrics, predict

    prep = ctx.state["prep"]
    reads = 0
    out = {}
    for split in ("val", "test"):
        X, y = prep.data.tensors[split]
        reads += split == "test"
        scores = predict(prep.model, X, task=prep.data.task)
        m = compute_metrics(prep.data.task, scores, y, 2, names=["accuracy"])
        out[f"{split}_accuracy"] = m["accuracy"]
    return ctx.record(test_reads=reads, **out)


@step
def plot(ctx: LabContext):
    """**Figure.** Training and validation loss per epoch: the validation curve turns up while the training curve
    keeps falling; the best epoch (kept) and the epoch early stopping stopped at are marked."""
    import matplotlib.pyplot as plt

    n = ctx.numbers
    ep = np.arange(1, n["epochs_run"] + 1)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.plot(ep, n["train_loss"], label="train loss", c="#4477aa")
    ax.plot(ep, n["val_loss"], label="val loss", c="#cc6677")
    ax.axvline(n["best_epoch"], c="k", ls="--", lw=1, label=f"best epoch {n['best_epoch']} (restored)")
    ax.axvline(n["epochs_run"], c="grey", ls=":", lw=1, label=f"stopped at {n['epochs_run']} (patience {PATIENCE})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.set_title(f"test accuracy of the restored model, read once: {n['test_accuracy']:.3f}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "splitting_early_stopping")


def conclude(ctx: LabContext):
    n = ctx.numbers
    checks = {
        "val loss turns up: last ≥ 1.1 × best": n["val_loss_last"] >= 1.1 * n["val_loss_best"],
        "train loss keeps falling after the best epoch": n["train_loss_last"] < n["train_loss_best"],
        "early stopping stopped the run before the last epoch": n["stopped_early"] and n["epochs_run"] < 300,
        "stopped patience epochs after the best": n["epochs_run"] == n["best_epoch"] + PATIENCE,
        "the kept weights are the best epoch's (same val loss)":
            abs(n["val_loss_of_kept_weights"] - n["val_loss_best"]) <= 1e-5 * max(1.0, n["val_loss_best"]),
        "the training rows never saw test (no test column per epoch)":
            not any(c.startswith("test") for c in n["epoch_columns"]),
        "train, val and test are disjoint": n["splits_disjoint"],
        "test read once": n["test_reads"] == 1,
    }
    sentence = (f"From epoch {n['best_epoch']} to {n['epochs_run']} the training loss fell from "
                f"{n['train_loss_best']:.3f} to {n['train_loss_last']:.3f} while the validation loss rose from "
                f"{n['val_loss_best']:.3f} to {n['val_loss_last']:.3f}; early stopping (patience {PATIENCE}) stopped "
                f"at epoch {n['epochs_run']} and restored epoch {n['best_epoch']} (val loss "
                f"{n['val_loss_of_kept_weights']:.3f}), whose test accuracy, read once, is {n['test_accuracy']:.3f}.")
    return sentence, checks


LAB = Lab("splitting-early-stopping", "Train, val, test: early stopping",
          "The validation loss turns up while the training loss keeps falling; early stopping on the validation "
          "loss restores the best epoch; the test split is touched once, at the end.",
          (make_data, train, test_once, plot), conclude,
          intro="The course's three splits: train fits the weights, val chooses (here the epoch), test measures "
                "once. Early stopping is a choice made on val, so it is measured on test.")
