"""Lab `regularization`: what each regularizer of ``train.regularization`` does to the weights and to the
train/val gap. One over-sized network (two hidden layers of 128, SGD with momentum) on a small table with 20 features of which 3 carry
the signal, trained by methodo's training loop six times: without regularization, with L1 as a proximal step,
with L1 as a loss penalty, with an L2 penalty, with dropout 0.7 and with a max-norm constraint. L1 applied as
its proximal step (`l1_method: proximal`: the soft-threshold w ← sign(w)·max(|w| − lr·λ, 0) after each optimizer
step) drives most weights to exactly 0.0; L1 as a penalty λ·Σ|w| in the loss only brings them near zero (its
subgradient steps make a weight at zero oscillate by about learning rate × λ, none is exactly 0.0); L2 shrinks
all of them without zeroing them, dropout narrows the gap between training and validation loss, and max-norm
bounds the norm of every unit's incoming weights."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

ROWS, FEATURES, INFORMATIVE = 300, 20, 3
EPOCHS = 80
ZERO = 1e-3  # |w| below this counts as near zero (the penalty's subgradient steps leave weights within ~lr·λ of 0)
# L1 proximal at λ = 1e-2, the penalty at 1e-3: with momentum 0.9 the penalty's gradient λ·sign(w) goes through the
# velocity, which applies it about 1 / (1 − 0.9) = 10 times, the proximal step once per step; so the two shrink alike.
RUNS = {"none": {}, "l1": {"l1": 1e-2, "l1_method": "proximal"}, "l1_penalty": {"l1": 1e-3}, "l2": {"l2": 1e-2},
        "dropout": {"dropout": 0.7}, "max_norm": {"max_norm": 1.0}}


@step
def make_data(ctx: LabContext):
    """**Data.** 300 rows of scikit-learn's `make_classification`: 20 features, of which 3 are informative and
    17 are noise, 10 % of the labels flipped (seeded), written to a CSV file; a stratified split 60/20/20.
    With 180 training rows, two hidden layers of 128 units can memorize them."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=ROWS, n_features=FEATURES, n_informative=INFORMATIVE, n_redundant=0,
                               flip_y=0.1, class_sep=1.0, shuffle=False, random_state=ctx.seed)
    path = ctx.run_dir("data") / "table.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = [f"f{i}" for i in range(FEATURES)]
    path.write_text(",".join(cols) + ",label\n" + "".join(
        ",".join(f"{v:.6f}" for v in row) + f",c{t}\n" for row, t in zip(X, y)))
    ctx.state["path"] = str(path)
    return ctx.record(rows=ROWS, features=FEATURES, informative=INFORMATIVE)


@step
def train_all(ctx: LabContext):
    """**Train six times with methodo's training loop.** `mlp` [128, 128] (its dropout layers at rate 0), SGD at
    learning rate 0.05 with momentum 0.9, 80 epochs, batches of 32; `train.regularization` is, in turn, nothing,
    `{l1: 1e-2, l1_method: proximal}`, `l1: 1e-3` (the default method, the penalty; momentum 0.9 applies a penalty's
    gradient about 10 times, a proximal step once, hence the tenfold λ), `l2: 1e-2`, `dropout: 0.7` and
    `max_norm: 1.0`. Early stopping watches `train_loss` with a patience longer
    than the run, so each run keeps its best *training* epoch (not a val-chosen one: the gap is the point).
    After training, the train and val losses of the kept weights are measured in evaluation mode (dropout off),
    and the weight matrices (dimension ≥ 2, what the penalties act on) are read."""
    import torch

    from methodo.train.loop import evaluate_loss, loss_function

    out = {}
    for name, reg in RUNS.items():
        prep, res = ctx.train(name, {
            "data": {"source": "csv", "path": ctx.state["path"], "target": "label",
                     "split": {"method": "stratified", "val": 0.2, "test": 0.2}},
            "model": {"name": "mlp", "hidden": [128, 128], "dropout": 0.0},
            "train": {"epochs": EPOCHS, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
                      "early_stopping": {"monitor": "train_loss", "patience": EPOCHS + 1},
                      "regularization": reg}})
        loss_fn = loss_function(prep.data.task, None)
        tr, _ = evaluate_loss(prep.model, *prep.data.tensors["train"], loss_fn, prep.data.task, 1024)
        va, _ = evaluate_loss(prep.model, *prep.data.tensors["val"], loss_fn, prep.data.task, 1024)
        mats = [p.detach() for p in prep.model.parameters() if p.ndim >= 2]
        w = torch.cat([m.flatten() for m in mats]).abs().numpy()
        unit_norms = torch.cat([m.flatten(1).norm(dim=1) for m in mats]).numpy()
        ctx.state.setdefault("weights", {})[name] = w
        out[name] = {"train_loss": tr, "val_loss": va, "gap": va - tr, "weights": int(w.size),
                     "share_near_zero": float(np.mean(w < ZERO)), "share_exactly_zero": float(np.mean(w == 0)),
                     "median_abs_weight": float(np.median(w)), "max_abs_weight": float(w.max()),
                     "max_unit_norm": float(unit_norms.max())}
    return ctx.record(**out)


@step
def plot(ctx: LabContext):
    """**Figure.** Left: the distribution of |w| per run (log scale; a weight at exactly 0.0 is drawn at 1e-7): the
    proximal L1 piles weights up at exactly 0, the L1 penalty near zero, L2 moves the whole distribution left.
    Right: training and validation loss of the kept weights per run: the gap."""
    import matplotlib.pyplot as plt

    n = ctx.numbers
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.6))
    bins = np.logspace(-7, 1, 60)
    colors = {"none": "#444444", "l1": "#cc3311", "l1_penalty": "#ee99aa", "l2": "#0077bb", "dropout": "#009988",
              "max_norm": "#ee7733"}
    for name in ("none", "l1", "l1_penalty", "l2"):
        w = np.clip(ctx.state["weights"][name], 1e-7, None)
        label = "l1 proximal" if name == "l1" else name.replace("_", " ")
        axes[0].hist(w, bins=bins, histtype="step", color=colors[name], lw=1.3,
                     label=f"{label}: {100 * n[name]['share_near_zero']:.0f} % below {ZERO:g}, "
                           f"{100 * n[name]['share_exactly_zero']:.0f} % = 0")
    axes[0].axvline(ZERO, c="k", ls=":", lw=1)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("|w| (weight matrices; exactly 0.0 drawn at 1e-7)")
    axes[0].set_ylabel("weights")
    axes[0].legend(fontsize=8)
    names = list(RUNS)
    x = np.arange(len(names))
    axes[1].bar(x - 0.2, [n[k]["train_loss"] for k in names], 0.4, label="train loss", color="#4477aa")
    axes[1].bar(x + 0.2, [n[k]["val_loss"] for k in names], 0.4, label="val loss", color="#cc6677")
    axes[1].set_xticks(x, [f"{k}\n{n[k]['max_unit_norm']:.2f}" for k in names], fontsize=8)
    axes[1].set_xlabel("run, and its largest unit norm ‖w‖", fontsize=8)
    axes[1].set_ylabel("cross-entropy (eval mode)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "regularization")


def conclude(ctx: LabContext):
    n = ctx.numbers
    no, l1, l1p, l2, do, mn = (n[k] for k in RUNS)
    c = RUNS["max_norm"]["max_norm"]
    checks = {
        "L1 (proximal): most weights exactly 0.0 (≥ 50 %)": l1["share_exactly_zero"] >= 0.5,
        "L1 (proximal): far more zero weights than without (≥ 5×)": l1["share_near_zero"] >= 5 * max(no["share_near_zero"], 0.01),
        "L1 (penalty): most weights near zero (≥ 50 % below 1e-3), none exactly 0.0":
            l1p["share_near_zero"] >= 0.5 and l1p["share_exactly_zero"] == 0,
        "without regularization and with L2 no weight is exactly 0.0":
            no["share_exactly_zero"] == 0 and l2["share_exactly_zero"] == 0,
        "L2: few near-zero weights (< 10 %)": l2["share_near_zero"] < 0.1,
        "L2: shrinks them all (median and max |w| below the unregularized)":
            l2["median_abs_weight"] < no["median_abs_weight"] and l2["max_abs_weight"] < no["max_abs_weight"],
        "dropout narrows the train/val gap (≤ 0.6 × the unregularized gap)": do["gap"] <= 0.6 * no["gap"],
        "without regularization there is a gap (val − train ≥ 0.2)": no["gap"] >= 0.2,
        "max-norm bounds every unit's norm by c": mn["max_unit_norm"] <= c * (1 + 1e-5),
        "without max-norm some unit's norm exceeds c": no["max_unit_norm"] > c,
    }
    sentence = (f"L1 as a proximal step puts {100 * l1['share_exactly_zero']:.0f} % of the weights at exactly 0.0 "
                f"(as a penalty: {100 * l1p['share_exactly_zero']:.0f} % exactly 0.0, {100 * l1p['share_near_zero']:.0f} % "
                f"below {ZERO:g}; without regularization {100 * no['share_exactly_zero']:.0f} % and "
                f"{100 * no['share_near_zero']:.0f} %; L2 {100 * l2['share_exactly_zero']:.0f} %), L2 shrinks "
                f"the median |w| from {no['median_abs_weight']:.3g} to {l2['median_abs_weight']:.3g} with "
                f"{100 * l2['share_near_zero']:.0f} % near zero, dropout 0.7 narrows the val − train loss gap from "
                f"{no['gap']:.3f} to {do['gap']:.3f}, and max-norm {c:g} keeps every unit's norm at most "
                f"{mn['max_unit_norm']:.3f} (without it: {no['max_unit_norm']:.2f}).")
    return sentence, checks


LAB = Lab("regularization", "Regularization: L1, L2, dropout, max-norm",
          "L1 drives many weights exactly to 0 (as a proximal step; as a penalty only near 0), L2 shrinks them all; "
          "dropout narrows the train/val gap; max-norm bounds the norm of every unit's incoming weights.",
          (make_data, train_all, plot), conclude,
          intro="The course's regularizers, each one line of `train.regularization`, on one over-sized network: "
                "what they do to the weights, and to the gap between training and validation.")
