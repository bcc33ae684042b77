"""Lab `smote`: class balancing against a rare class, on the training split only. One imbalanced table (5 % of
the rows in the class ``rare``, overlapping the ``common`` class) is trained four times by methodo's training
loop with ``data.balance`` set, in turn, to ``none``, ``oversample`` (repeat random rare rows), ``smote``
(synthesize rare rows between rare neighbours) and ``class_weights`` (weight the loss instead of resampling).
Balancing changes only what the loop trains on: the validation and test rows, their number and their class
counts, are the same in the four runs, so their recall is comparable; and every balancer raises the recall of
the rare class well above the unbalanced run's (paid for in precision)."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

N, RARE_SHARE, SHIFT = 3000, 0.05, 1.25
BALANCERS = ("none", "oversample", "smote", "class_weights")
COLORS = {"none": "#999999", "oversample": "#4477aa", "smote": "#228833", "class_weights": "#ee7733"}
SHOWN = ("recall", "precision", "balanced_accuracy")


@step
def make_data(ctx: LabContext):
    """**Data.** 3000 rows with two features, exactly 150 (5 %) in class `rare` and 2850 in `common`: both
    Gaussian with unit spread, the rare class shifted by 1.25 along each feature, so the classes overlap and a model
    minimizing the plain average loss is rewarded for answering `common` in the overlap. Written to a CSV
    file, the way a user gives methodo a table."""
    rng = np.random.default_rng(ctx.seed)
    y = np.zeros(N, dtype=int)
    y[rng.choice(N, int(N * RARE_SHARE), replace=False)] = 1
    X = rng.normal(size=(N, 2)) + SHIFT * y[:, None]
    path = ctx.run_dir("data") / "imbalanced.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a,b,label\n" + "".join(f"{a:.6f},{b:.6f},{'rare' if t else 'common'}\n"
                                            for (a, b), t in zip(X, y)))
    ctx.state["file"] = str(path)
    return ctx.record(rows=N, rare=int(y.sum()), rare_share=RARE_SHARE)


@step
def train_four_ways(ctx: LabContext):
    """**Train four times with methodo's training loop.** The same config — an `mlp` with one hidden layer of 16
    units, Adam at 0.01, 20 epochs in batches of 128, a stratified 60/20/20 split — with `data.balance` set to `none`,
    `oversample`, `smote` and `class_weights`. Methodo applies the balancer after the split and after the
    scaling is fitted, to the training rows only. We keep, for each run, the row indices and class counts of
    every split, what the loop trained on, and the validation and test inputs, to compare them across runs."""
    import torch

    from methodo.evaluate.metrics import compute_metrics, predict

    out, ref = {}, None
    ctx.state["train_sets"] = {}
    for name in BALANCERS:
        prep, _ = ctx.train(name, {
            "data": {"source": "csv", "path": ctx.state["file"], "target": "label", "balance": name,
                     "split": {"method": "stratified", "val": 0.2, "test": 0.2}},
            "model": {"name": "mlp", "hidden": [16], "dropout": 0.0},
            "train": {"epochs": 20, "batch_size": 128, "optimizer": {"name": "adam", "lr": 0.01},
                      "early_stopping": None}})
        d = prep.data
        assert d.dataset.class_names == ["common", "rare"]  # the rare class is the positive class (index 1)
        Xt, yt = d.tensors["train"]
        ctx.state["train_sets"][name] = (Xt.numpy(), yt.numpy(), len(d.indices["train"]))
        held = {s: (d.indices[s], d.tensors[s][0], d.tensors[s][1]) for s in ("val", "test")}
        if ref is None:
            ref = held
        same = all(np.array_equal(held[s][0], ref[s][0]) and torch.equal(held[s][1], ref[s][1])
                   and torch.equal(held[s][2], ref[s][2]) for s in held)
        run = {"train_rows": len(d.indices["train"]), "trained_on_rows": int(len(yt)),
               "train_counts_before": dict(d.class_counts_before_balancing),
               "trained_on_counts": dict(d.class_counts["train"]),
               "class_weights": None if d.class_weights is None else [float(w) for w in d.class_weights],
               "val_rows": len(d.indices["val"]), "test_rows": len(d.indices["test"]),
               "val_counts": dict(d.class_counts["val"]), "test_counts": dict(d.class_counts["test"]),
               "val_test_same_as_none": same}
        for split in ("val", "test"):
            X, y = d.tensors[split]
            scores = predict(prep.model, X, task=d.task)
            run[split] = compute_metrics(d.task, scores, y.numpy(), 2, names=list(SHOWN))
        out[name] = run
    return ctx.record(**out)


@step
def plot(ctx: LabContext):
    """**Figure.** Left: what `smote` trained on — the real training rows, and the synthetic rare rows SMOTE drew on
    the segments between rare neighbours (scaled units). Middle: the class counts the loop trained on, per run.
    Right: recall and precision of the rare class on the test split, the same rows in every run."""
    import matplotlib.pyplot as plt

    n = ctx.numbers
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.8), gridspec_kw={"width_ratios": [1.1, 1, 1]})
    X, y, n_real = ctx.state["train_sets"]["smote"]
    real, synth = slice(0, n_real), slice(n_real, None)
    a.scatter(*X[real][y[real] == 0].T, s=4, c="#bbbbbb", label="common (real)")
    a.scatter(*X[synth].T, s=4, c="#88ccaa", label="rare (synthetic, SMOTE)")
    a.scatter(*X[real][y[real] == 1].T, s=10, c="#aa3377", label="rare (real)")
    a.set_title("training rows of the smote run", fontsize=9)
    a.legend(fontsize=7, markerscale=2)
    x = np.arange(len(BALANCERS))
    common = [n[k]["trained_on_counts"]["common"] for k in BALANCERS]
    rare = [n[k]["trained_on_counts"]["rare"] for k in BALANCERS]
    b.bar(x, common, color="#bbbbbb", label="common")
    b.bar(x, rare, bottom=common, color="#aa3377", label="rare")
    b.set_xticks(x, [k.replace("_", "\n") for k in BALANCERS], fontsize=8)
    b.set_ylabel("rows the loop trained on")
    b.set_title(f"val/test: {n['none']['val_rows']}/{n['none']['test_rows']} rows in every run", fontsize=9)
    b.legend(fontsize=8)
    c.bar(x - 0.2, [n[k]["test"]["recall"] for k in BALANCERS], 0.4, color=[COLORS[k] for k in BALANCERS],
          label="recall (rare)")
    c.bar(x + 0.2, [n[k]["test"]["precision"] or 0.0 for k in BALANCERS], 0.4, color="none", hatch="//",
          edgecolor=[COLORS[k] for k in BALANCERS], label="precision (rare)")
    c.set_xticks(x, [k.replace("_", "\n") for k in BALANCERS], fontsize=8)
    c.set_ylim(0, 1.05)
    c.set_title("test split", fontsize=9)
    c.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "smote")


def conclude(ctx: LabContext):
    n = ctx.numbers
    no = n["none"]
    others = BALANCERS[1:]
    checks = {
        "val and test are the same rows, inputs and class counts in all four runs":
            all(n[k]["val_test_same_as_none"] and n[k]["val_counts"] == no["val_counts"]
                and n[k]["test_counts"] == no["test_counts"] for k in BALANCERS),
        "resampling changed the training rows only (oversample and smote: equal classes; class_weights: none added)":
            all(n[k]["trained_on_counts"]["rare"] == n[k]["trained_on_counts"]["common"] for k in ("oversample", "smote"))
            and n["class_weights"]["trained_on_rows"] == no["trained_on_rows"] == no["train_rows"],
        "every balancer raises test recall of the rare class by ≥ 0.2 over none":
            all(n[k]["test"]["recall"] >= no["test"]["recall"] + 0.2 for k in others),
        "and on val too": all(n[k]["val"]["recall"] >= no["val"]["recall"] + 0.2 for k in others),
    }
    rec = ", ".join(f"{k} {n[k]['test']['recall']:.2f}" for k in others)
    prec = ", ".join(_fmt(n[k]["test"]["precision"]) for k in others)
    sentence = (f"With {100 * RARE_SHARE:.0f} % rare rows, the test recall of the rare class is "
                f"{no['test']['recall']:.2f} without balancing and {rec} with balancing (test precision "
                f"{_fmt(no['test']['precision'])} → {prec}), on the same {no['test_rows']} test rows "
                f"({no['test_counts']['rare']} rare) and {no['val_rows']} val rows in all four runs; only the "
                f"training rows changed ({no['train_counts_before']['rare']} rare of {no['train_rows']}, resampled "
                f"to {n['smote']['trained_on_counts']['rare']} by smote).")
    return sentence, checks


def _fmt(v):
    return "undefined" if v is None else f"{v:.2f}"


LAB = Lab("smote", "Balancing a rare class: oversampling, SMOTE, class weights",
          "Resampling (random oversampling, SMOTE) or class weights, applied to the training rows only, raise the "
          "recall of a rare class over an unbalanced run, while the validation and test rows stay untouched.",
          (make_data, train_four_ways, plot), conclude,
          intro="A model trained on 5 % positives learns that answering 'negative' is almost always right. "
                "Balancing the training rows (or the loss) changes that trade-off; the held-out rows must keep "
                "the true proportions, or their scores would not describe the real world.")
