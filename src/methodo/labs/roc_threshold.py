"""Lab `roc-threshold`: the ROC curve, and a decision threshold chosen on the validation split to reach a recall
target, then applied once to the test split. The model is trained by `methodo run` with
``evaluate.threshold: {rule: target_recall, value: 0.95}`` (methodo's threshold sweep,
``methodo.evaluate.threshold``); the lab reads what the run chose and what it gave on test."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, predictions, step

N, POSITIVE_SHARE, TARGET_RECALL = 4000, 0.4, 0.95


@step
def make_data(ctx: LabContext):
    """**Data.** 4000 rows, 40 % positive, three features: each class a Gaussian, the positives shifted by 1.2
    standard deviations along the first two features and not at all along the third (noise), so the classes
    overlap and every threshold trades recall for precision. Written to a CSV file."""
    rng = np.random.default_rng(ctx.seed)
    y = (rng.random(N) < POSITIVE_SHARE).astype(int)
    X = rng.normal(size=(N, 3)) + 1.2 * y[:, None] * np.array([1.0, 1.0, 0.0])
    path = ctx.run_dir("data") / "binary.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a,b,c,label\n" + "".join(f"{a:.6f},{b:.6f},{c:.6f},{'yes' if t else 'no'}\n"
                                              for (a, b, c), t in zip(X, y)))
    ctx.state["file"] = str(path)
    return ctx.record(rows=N, positives=int(y.sum()), target_recall=TARGET_RECALL)


@step
def train_and_choose(ctx: LabContext):
    """**Train, then choose the threshold on validation with `methodo run`.** A small `mlp` (one hidden layer of
    8 units) on a stratified split; `evaluate.threshold: {rule: target_recall, value: 0.95}` makes the
    evaluation sweep every threshold on the *validation* predictions, keep the highest whose recall reaches
    0.95, and apply it once to *test* (`summary.json` → `threshold`, beside the default 0.5)."""
    res = ctx.run_pipeline("model", {
        "data": {"source": "csv", "path": ctx.state["file"], "target": "label",
                 "split": {"method": "stratified", "val": 0.2, "test": 0.2}},
        "model": {"name": "mlp", "hidden": [8], "dropout": 0.0},
        "train": {"epochs": 15, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}},
        "evaluate": {"bootstrap": 0, "reference": False,
                     "threshold": {"rule": "target_recall", "value": TARGET_RECALL}}})
    th = res.record.threshold
    for split in ("val", "test"):
        ctx.state[split] = predictions(res, split)
    keep = ("precision", "recall", "specificity", "f1")
    return ctx.record(threshold=th.value, rule=th.rule, why=th.why,
                      val_at_threshold={k: th.val.get(k) for k in keep},
                      test_at_threshold={k: th.test.get(k) for k in keep},
                      test_at_0_5={k: th.test_at_0_5.get(k) for k in keep},
                      test_roc_auc=res.record.metrics["test"]["roc_auc"],
                      test_positives=int(ctx.state["test"][0].sum()))


@step
def roc_curves(ctx: LabContext):
    """**ROC curves.** The true-positive rate (recall) against the false-positive rate (1 − specificity) over
    every threshold, on validation and on test (scikit-learn's `roc_curve`); the area is methodo's `roc_auc`
    metric. The chosen threshold is one point on each curve."""
    from sklearn.metrics import roc_curve

    from methodo.evaluate.metrics import compute_metrics

    curves = {}
    for split in ("val", "test"):
        y, p = ctx.state[split]
        fpr, tpr, _ = roc_curve(y, p[:, 1])
        curves[split] = (fpr, tpr)
        ctx.record(**{f"{split}_roc_auc_check": compute_metrics("classification", p, y, 2, names=["roc_auc"])["roc_auc"]})
    ctx.state["curves"] = curves
    return ctx.numbers["val_roc_auc_check"], ctx.numbers["test_roc_auc_check"]


@step
def plot(ctx: LabContext):
    """**Figure.** Left: the ROC curves with the operating points of the chosen threshold and of 0.5. Right:
    recall and precision on test at both thresholds."""
    import matplotlib.pyplot as plt

    n = ctx.numbers
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.8))
    for split, style in (("val", "--"), ("test", "-")):
        fpr, tpr = ctx.state["curves"][split]
        a.plot(fpr, tpr, style, label=f"{split} (AUC {n[f'{split}_roc_auc_check']:.3f})")
    for where, label, marker in (("test_at_threshold", f"t = {n['threshold']:.3f} (chosen on val)", "o"),
                                 ("test_at_0_5", "t = 0.5", "s")):
        a.plot(1 - n[where]["specificity"], n[where]["recall"], marker, ms=8, label=f"test, {label}")
    a.axhline(TARGET_RECALL, c="0.6", lw=0.8, ls=":")
    a.plot([0, 1], [0, 1], c="0.8", lw=0.8)
    a.set_xlabel("false-positive rate")
    a.set_ylabel("true-positive rate (recall)")
    a.legend(fontsize=7, loc="lower right")
    keys = ("recall", "precision")
    x = np.arange(len(keys))
    b.bar(x - 0.2, [n["test_at_0_5"][k] for k in keys], 0.4, label="t = 0.5", color="#999999")
    b.bar(x + 0.2, [n["test_at_threshold"][k] for k in keys], 0.4, label=f"t = {n['threshold']:.3f}", color="#4477aa")
    b.axhline(TARGET_RECALL, c="k", ls=":", lw=1, label="recall target")
    b.set_xticks(x, keys)
    b.set_ylim(0, 1.05)
    b.set_title("test")
    b.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "roc_threshold")


def conclude(ctx: LabContext):
    n = ctx.numbers
    v, t, d = n["val_at_threshold"], n["test_at_threshold"], n["test_at_0_5"]
    checks = {
        "the threshold reaches the recall target on val": v["recall"] >= TARGET_RECALL,
        "the chosen threshold is below 0.5": n["threshold"] < 0.5,
        "on test, recall rises above that of 0.5": t["recall"] > d["recall"],
        "on test, recall stays near the target (≥ target − 0.05)": t["recall"] >= TARGET_RECALL - 0.05,
        "precision is what it costs (test precision falls)": t["precision"] < d["precision"],
    }
    sentence = (f"The highest threshold with validation recall ≥ {TARGET_RECALL} is {n['threshold']:.3f} (val recall "
                f"{v['recall']:.3f}); on test it gives recall {t['recall']:.3f} (vs {d['recall']:.3f} at 0.5) for "
                f"precision {t['precision']:.3f} (vs {d['precision']:.3f}); test ROC AUC {n['test_roc_auc']:.3f}.")
    return sentence, checks


LAB = Lab("roc-threshold", "ROC curve and a decision threshold chosen on validation",
          "A threshold chosen on the validation split for a recall target (0.95) carries over to the test split: "
          "test recall near the target, above that of the default 0.5, paid for in precision.",
          (make_data, train_and_choose, roc_curves, plot), conclude,
          intro="A classifier outputs scores; the decision threshold is a separate choice, made on validation "
                "for what the application needs (here: miss at most 5 % of positives), then checked once on test.")
