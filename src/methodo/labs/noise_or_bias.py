"""Lab `noise-or-bias`: a high training error has two causes the course tells apart. The same network (a linear
layer) on a learnable target it is too simple for ("always says cat": it predicts the majority class) and on
a target with no correlation with the inputs (shuffled labels). Both end with the same training error;
methodo's own diagnosis (the pipeline's findings, with its gradient-boosting reference) calls the first
``underfitting`` (bias: a flexible model does much better) and the second ``noise_floor`` (noise: nothing
does better)."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

N_OUTER, N_INNER = 1400, 600  # 70 % / 30 %: the majority class is what a model that learned nothing says
NETWORK = {"name": "mlp", "hidden": [], "dropout": 0.0}  # one linear layer: too simple for circles
CASES = ("learnable", "shuffled")


@step
def make_data(ctx: LabContext):
    """**Data.** Two concentric circles, 1400 points on the outer one (class `outer`, 70 %) and 600 on the inner
    (`inner`, 30 %), in (x, y). The *learnable* target is the circle a point lies on; the *shuffled* target is
    the same labels randomly permuted (seeded), so it has no correlation with the inputs. Each is written to a
    CSV file, the way a user gives methodo a table."""
    from sklearn.datasets import make_circles

    X, y = make_circles(n_samples=(N_OUTER, N_INNER), noise=0.08, factor=0.5, random_state=ctx.seed)
    shuffled = np.random.default_rng(ctx.seed).permutation(y)
    files = {}
    for case, target in (("learnable", y), ("shuffled", shuffled)):
        path = ctx.run_dir("data") / f"{case}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        names = np.array(["outer", "inner"])[target]
        path.write_text("x,y,label\n" + "".join(f"{a:.6f},{b:.6f},{c}\n" for (a, b), c in zip(X, names)))
        files[case] = str(path)
    ctx.state["files"] = files
    return ctx.record(rows=int(len(y)), majority_share=round(N_OUTER / len(y), 4),
                      shuffled_agreement_with_true=float(np.mean(shuffled == y)))


@step
def train_both(ctx: LabContext):
    """**Train the same network on both targets with `methodo run`.** One linear layer (`mlp` with `hidden: []`),
    Adam, 20 epochs, a stratified split; the pipeline evaluates it, fits its reference (scikit-learn's
    `HistGradientBoostingClassifier` on the same features and split) and runs the diagnosis."""
    out = {}
    for case in CASES:
        res = ctx.run_pipeline(case, {
            "data": {"source": "csv", "path": ctx.state["files"][case], "target": "label",
                     "split": {"method": "stratified", "val": 0.2, "test": 0.2}},
            "model": NETWORK,
            "train": {"epochs": 20, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.05},
                      "early_stopping": None},
            "evaluate": {"bootstrap": 0}})
        r = res.record
        ctx.state.setdefault("timings", {})[case] = r.timings
        ids = [f.id for f in r.findings]
        ref = r.reference
        out[case] = {"train_accuracy": r.metrics["train"]["accuracy"], "val_accuracy": r.metrics["val"]["accuracy"],
                     "reference_train_accuracy": ref.train, "reference_val_accuracy": ref.val,
                     "share_predicted_majority": _majority_share(res),
                     "underfitting": "underfitting" in ids, "noise_floor": "noise_floor" in ids, "findings": ids}
    ctx.state["cases"] = out
    return ctx.record(**out)


def _majority_share(res) -> float:
    """The share of validation rows the network predicts as the majority class (`outer`), from the run's files."""
    import csv

    with open(res.run_dir / "predictions_val.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return round(sum(r["predicted"] == "outer" for r in rows) / len(rows), 4)


@step
def plot(ctx: LabContext):
    """**Figure.** Training and validation accuracy of the network beside its reference, for each target, with
    the finding methodo reported. Same network error in both cases; only the reference tells them apart."""
    import matplotlib.pyplot as plt

    n = ctx.numbers
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, case in zip(axes, CASES):
        c = n[case]
        vals = [c["train_accuracy"], c["val_accuracy"], c["reference_train_accuracy"], c["reference_val_accuracy"]]
        ax.bar(range(4), vals, color=["#4477aa", "#88aadd", "#cc6677", "#eeaabb"])
        ax.set_xticks(range(4), ["net\ntrain", "net\nval", "reference\ntrain", "reference\nval"], fontsize=8)
        ax.axhline(n["majority_share"], ls="--", c="k", lw=1, label="always 'outer'")
        found = "underfitting" if c["underfitting"] else "noise_floor" if c["noise_floor"] else "neither"
        ax.set_title(f"{case} target → {found}")
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "noise_or_bias")


def conclude(ctx: LabContext):
    n = ctx.numbers
    le, sh = n["learnable"], n["shuffled"]
    checks = {
        "learnable target: underfitting, not noise_floor": le["underfitting"] and not le["noise_floor"],
        "shuffled target: noise_floor, not underfitting": sh["noise_floor"] and not sh["underfitting"],
        "both networks have a high training error (≥ 0.15)": max(le["train_accuracy"], sh["train_accuracy"]) <= 0.85,
    }
    sentence = (f"The linear network reaches training accuracy {le['train_accuracy']:.3f} on the learnable target and "
                f"{sh['train_accuracy']:.3f} on the shuffled one (majority share {n['majority_share']:.2f}); the "
                f"reference reaches val {le['reference_val_accuracy']:.3f} vs {sh['reference_val_accuracy']:.3f}, so "
                f"methodo reports {_said(le)} for the first and {_said(sh)} for the second.")
    return sentence, checks


def _said(case: dict) -> str:
    return " and ".join(k for k in ("underfitting", "noise_floor") if case[k]) or "neither finding"


LAB = Lab("noise-or-bias", "Noise or bias? Two reasons for a high training error",
          "A model that 'always says cat' on a learnable target has bias (methodo: underfitting); the same model on "
          "labels with no correlation to the inputs faces noise (methodo: noise_floor) — methodo's diagnosis tells "
          "the two apart although the training errors are the same.",
          (make_data, train_both, plot), conclude,
          intro="When the training error is high, more capacity helps only if the error is bias. The course's two "
                "cases: a model that always answers the majority class, and a target that carries no information.")
