"""Lab `imbalance-trap`: with 99 % negatives, the model that always answers "negative" has accuracy 0.99, recall
0, and no precision at all (nothing is predicted positive: methodo reports it undefined, with the reason, never
a silent 0). The metrics that expose it — balanced accuracy, recall, MCC, Cohen's kappa, average precision —
are computed by methodo's metrics on the same test rows as a real model trained by `methodo run` with class
weights."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, predictions, step

N, POSITIVES = 10_000, 100  # exactly 1 % positives
SHOWN = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "mcc", "cohen_kappa", "average_precision")


@step
def make_data(ctx: LabContext):
    """**Data.** 10 000 rows with two features, exactly 100 of them positive (1 %): negatives around (0, 0),
    positives around (2, 2), both with unit spread, so a model can find most positives at the cost of some
    false alarms. Written to a CSV file, the way a user gives methodo a table."""
    rng = np.random.default_rng(ctx.seed)
    y = np.zeros(N, dtype=int)
    y[rng.choice(N, POSITIVES, replace=False)] = 1
    X = rng.normal(size=(N, 2)) + 2.0 * y[:, None]
    path = ctx.run_dir("data") / "imbalanced.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a,b,label\n" + "".join(f"{a:.6f},{b:.6f},{'positive' if t else 'negative'}\n"
                                            for (a, b), t in zip(X, y)))
    ctx.state["file"] = str(path)
    return ctx.record(rows=N, positives=POSITIVES, positive_share=POSITIVES / N)


@step
def train_model(ctx: LabContext):
    """**A real model with `methodo run`.** An `mlp` with one hidden layer of 16 units, trained with class
    weights (`data.balance: class_weights`: each positive counts 99 times as much in the loss) on a
    stratified split; its test predictions are read from the run's `predictions_test.csv`."""
    res = ctx.run_pipeline("model", {
        "data": {"source": "csv", "path": ctx.state["file"], "target": "label", "balance": "class_weights",
                 "split": {"method": "stratified", "val": 0.15, "test": 0.15}},
        "model": {"name": "mlp", "hidden": [16], "dropout": 0.0},
        "train": {"epochs": 15, "batch_size": 128, "optimizer": {"name": "adam", "lr": 0.01}},
        "evaluate": {"bootstrap": 0, "reference": False}})
    names = res.record.data.classes  # sorted class names: negative (0), positive (1)
    ctx.state["y_test"], ctx.state["p_test"] = predictions(res, "test")
    ctx.state["classes"] = names
    return ctx.record(test_rows=len(ctx.state["y_test"]), test_positives=int(ctx.state["y_test"].sum()),
                      classes=names, model_findings=[f.id for f in res.record.findings])


@step
def score_both(ctx: LabContext):
    """**Score both models with methodo's metrics.** The all-negative model (probability 1 for `negative` on
    every row: methodo's `most_frequent` dummy baseline) and the trained model, on the same test rows, with
    `methodo.evaluate.metrics.compute_metrics`; an undefined metric is `None` and its reason is kept."""
    from methodo.evaluate.metrics import compute_metrics

    y, p = ctx.state["y_test"], ctx.state["p_test"]
    neg = ctx.state["classes"].index("negative")
    always = np.zeros_like(p)
    always[:, neg] = 1.0
    out = {}
    for name, scores in (("all_negative", always), ("model", p)):
        why: dict[str, str] = {}
        m = compute_metrics("classification", scores, y, 2, names=list(SHOWN), undefined=why)
        out[name] = {**m, "undefined": why}
    return ctx.record(**out)


@step
def plot(ctx: LabContext):
    """**Figure.** Each metric for the two models. Accuracy ranks the useless model first; every metric that
    looks at the positives (a missing bar: undefined) shows it has learned nothing."""
    import matplotlib.pyplot as plt

    n = ctx.numbers
    fig, ax = plt.subplots(figsize=(9, 3.6))
    x = np.arange(len(SHOWN))
    for i, (name, color) in enumerate((("all_negative", "#999999"), ("model", "#4477aa"))):
        vals = [n[name][k] for k in SHOWN]
        ax.bar(x + (i - 0.5) * 0.38, [0 if v is None else v for v in vals], 0.38, color=color,
               label=name.replace("_", "-"))
        for j, v in enumerate(vals):
            if v is None:
                ax.text(x[j] + (i - 0.5) * 0.38, 0.02, "undefined", rotation=90, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [k.replace("_", "\n") for k in SHOWN], fontsize=8)
    ax.axhline(0, c="k", lw=0.6)
    ax.set_ylim(-0.1, 1.05)
    ax.set_title(f"test rows: {n['test_rows']}, positives: {n['test_positives']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "imbalance_trap")


def conclude(ctx: LabContext):
    n = ctx.numbers
    a, m = n["all_negative"], n["model"]
    share_neg = 1 - n["test_positives"] / n["test_rows"]
    checks = {
        "all-negative accuracy is the negative share (≥ 0.99)": abs(a["accuracy"] - share_neg) < 1e-9
        and a["accuracy"] >= 0.99 - 1e-9,
        "all-negative recall is 0": a["recall"] == 0.0,
        "all-negative precision is undefined, with a reason": a["precision"] is None and "precision" in a["undefined"],
        "all-negative balanced accuracy is 0.5": abs(a["balanced_accuracy"] - 0.5) < 1e-9,
        "the model finds positives (recall ≥ 0.5)": (m["recall"] or 0) >= 0.5,
        "balanced accuracy ranks the model first": m["balanced_accuracy"] > a["balanced_accuracy"],
    }
    sentence = (f"Always answering negative scores accuracy {a['accuracy']:.3f} with recall {a['recall']:.1f} and "
                f"precision undefined ({a['undefined'].get('precision', 'defined')}); the trained model's accuracy is "
                f"{m['accuracy']:.3f} but its recall {m['recall']:.3f} and balanced accuracy "
                f"{m['balanced_accuracy']:.3f} (vs {a['balanced_accuracy']:.2f}) show which one learned something.")
    return sentence, checks


LAB = Lab("imbalance-trap", "The imbalance trap: accuracy 0.99 that means nothing",
          "With 99 % negatives the all-negative model has accuracy 0.99, recall 0 and undefined precision; "
          "balanced accuracy, recall, MCC and average precision expose it.",
          (make_data, train_model, score_both, plot), conclude,
          intro="The course's warning about the accuracy of a classifier on imbalanced data, and the metrics "
                "to read instead.")
