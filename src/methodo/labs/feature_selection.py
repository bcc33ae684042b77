"""Lab `feature-selection`: noise features, feature selection, and the selection bias it can hide. Two
experiments with methodo's own selection step (``data.features: [{f_test: {k: K}}]``, the K features with the
largest univariate F statistic) and a small linear model (``mlp`` with ``hidden: []``) trained by methodo's loop.

1. **Noise hurts, selection on train recovers.** 200 rows with 5 informative features: adding 500 pure-noise
   features lowers the accuracy measured on 4000 fresh rows; the selection step, which methodo fits on the
   training split only, finds the informative features again and recovers the accuracy.
2. **Selection on all the data leaks** (Ambroise & McLachlan, PNAS 2002; Hastie, Tibshirani & Friedman, *The
   Elements of Statistical Learning*, § 7.10.2). 200 rows of 2000 pure-noise features with random labels: no
   model can beat 50 %. Selecting the 20 "best" features on all 200 rows, then cross-validating (methodo's
   ``kfold`` split, 5 folds) gives an accuracy far above 50 % — the held-out folds took part in the selection —
   while the same models score 50 % on fresh rows. Selecting inside each fold, on its training rows (what
   ``data.features`` does), gives a cross-validated accuracy near 50 %: the truth."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

N_SMALL, INFORMATIVE, NOISE, SHIFT = 200, 5, 500, 0.5  # experiment 1: class means ±0.5 along 5 features
N_LEAK, P_LEAK, K_LEAK, FOLDS = 200, 2000, 20, 5  # experiment 2: pure noise, random labels
N_FRESH = 4000
MODEL = {"name": "mlp", "hidden": [], "dropout": 0.0}  # a linear model (logistic regression)
TRAIN = {"epochs": 30, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.02}, "early_stopping": None}
RUNS = ("informative", "with_noise", "selected_on_train")


def _write_csv(path, X: np.ndarray, y: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = [f"f{i}" for i in range(X.shape[1])]
    path.write_text(",".join(cols) + ",label\n" + "".join(
        ",".join(f"{v:.5f}" for v in row) + f",c{t}\n" for row, t in zip(X, y)))
    return str(path)


def _balanced_labels(rng, n: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % 2)


def _fresh_accuracy(prep, X: np.ndarray, y: np.ndarray) -> float:
    """Accuracy on new rows, through the run's own fitted transforms (feature steps, then scaling)."""
    import torch

    from methodo.evaluate.metrics import compute_metrics, predict

    d = prep.data
    if d.features is not None:
        X = np.asarray(d.features.transform(X), dtype=np.float32)
    Xt = torch.from_numpy(np.ascontiguousarray(d.preprocessor.transform_x(np.asarray(X, dtype=np.float32))))
    return compute_metrics(d.task, predict(prep.model, Xt, task=d.task), y, 2, names=["accuracy"])["accuracy"]


def _test_accuracy(prep) -> tuple[int, int]:
    """Correct predictions and rows of the run's test split (a held-out fold in a kfold split)."""
    from methodo.evaluate.metrics import predict

    X, y = prep.data.tensors["test"]
    pred = predict(prep.model, X, task=prep.data.task).argmax(1)
    return int((pred == y.numpy()).sum()), int(len(y))


@step
def make_data(ctx: LabContext):
    """**Data.** Experiment 1: 200 rows, two balanced classes, 5 informative features (class means ±0.5 along
    each, unit spread), and a copy with 500 pure-noise features appended; 4000 fresh rows drawn the same way
    measure the true accuracy. Experiment 2: 200 rows of 2000 pure-noise features with random balanced labels,
    and 4000 fresh rows of the same kind. Written to CSV files, the way a user gives methodo a table."""
    rng = np.random.default_rng(ctx.seed)

    def informative(n):
        y = _balanced_labels(rng, n)
        X = rng.normal(size=(n, INFORMATIVE)) + SHIFT * (2 * y[:, None] - 1)
        return np.hstack([X, rng.normal(size=(n, NOISE))]), y

    X1, y1 = informative(N_SMALL)
    Xf1, yf1 = informative(N_FRESH)
    X2, y2 = rng.normal(size=(N_LEAK, P_LEAK)), _balanced_labels(rng, N_LEAK)
    Xf2, yf2 = rng.normal(size=(N_FRESH, P_LEAK)), _balanced_labels(rng, N_FRESH)
    d = ctx.run_dir("data")
    ctx.state.update(
        files={"informative": _write_csv(d / "informative.csv", X1[:, :INFORMATIVE], y1),
               "with_noise": _write_csv(d / "with_noise.csv", X1, y1),
               "noise": _write_csv(d / "noise.csv", X2, y2)},
        X2=X2, y2=y2, fresh1=(Xf1, yf1), fresh2=(Xf2, yf2))
    return ctx.record(small_rows=N_SMALL, informative=INFORMATIVE, noise_features=NOISE, leak_rows=N_LEAK,
                      leak_features=P_LEAK, k=K_LEAK, folds=FOLDS, fresh_rows=N_FRESH)


@step
def noise_then_selection(ctx: LabContext):
    """**Experiment 1: noise features hurt; selection fitted on train recovers.** Three trainings of the linear
    model (Adam at 0.02, 30 epochs in batches of 64, a stratified 60/20/20 split): on the 5 informative
    features; on those plus 500 noise features; and on the 505 with `data.features: [{f_test: {k: 5}}]`, which
    methodo fits on the 120 training rows only and applies unchanged to every other row. Each model is scored
    on the 4000 fresh rows (the true accuracy) and on its test split; for the third we read which features the
    fitted step kept."""
    Xf, yf = ctx.state["fresh1"]
    out = {}
    for name in RUNS:
        cfg = {"data": {"source": "csv", "path": ctx.state["files"]["informative" if name == "informative" else
                                                                    "with_noise"], "target": "label",
                        "split": {"method": "stratified", "val": 0.2, "test": 0.2}},
               "model": MODEL, "train": TRAIN}
        if name == "selected_on_train":
            cfg["data"]["features"] = [{"f_test": {"k": INFORMATIVE}}]
        prep, _ = ctx.train(name, cfg)
        ok, rows = _test_accuracy(prep)
        run = {"features_in": int(prep.data.input_shape[0]), "test_accuracy": ok / rows,
               "fresh_accuracy": _fresh_accuracy(prep, Xf[:, :INFORMATIVE] if name == "informative" else Xf, yf)}
        if name == "selected_on_train":
            kept = prep.data.feature_names
            run["kept"] = kept
            run["informative_kept"] = sum(f in {f"f{i}" for i in range(INFORMATIVE)} for f in kept)
        out[name] = run
    return ctx.record(**out)


@step
def selection_bias(ctx: LabContext):
    """**Experiment 2: selecting on all the data leaks.** *Wrong:* methodo's `f_test` step (k = 20) is fitted on
    all 200 noise rows — `methodo.data.features.build_pipeline` and `fit_transform`, by hand, outside the run —
    and the 20 columns it keeps are written to a new CSV; then 5-fold cross-validation with methodo's `kfold`
    split (`data.split: {method: kfold, folds: 5, fold: i}`, validation rows carved from the other folds): the
    accuracy on each held-out fold, pooled. *Right:* the same 5 folds on the 2000 columns with
    `data.features: [{f_test: {k: 20}}]`, which each fold fits on its own training rows. Every model is also
    scored on the 4000 fresh rows: its true accuracy, 50 % for any model here."""
    from methodo.data.features import build_pipeline, fit_transform

    X, y = ctx.state["X2"], ctx.state["y2"]
    Xf, yf = ctx.state["fresh2"]
    names = [f"f{i}" for i in range(P_LEAK)]
    pipe, _ = build_pipeline([{"f_test": {"k": K_LEAK}}], task="classification", seed=ctx.seed, feature_names=names)
    Xsel = fit_transform(pipe, X, y)  # fitted on every row: the held-out folds take part in the selection
    picked = np.flatnonzero(pipe.steps[0][1].support_)
    path = _write_csv(ctx.run_dir("data") / "selected_on_all.csv", Xsel, y)
    out = {}
    for name, file, features, fresh in (("selected_on_all_rows", path, [], Xf[:, picked]),
                                        ("selected_in_each_fold", ctx.state["files"]["noise"],
                                         [{"f_test": {"k": K_LEAK}}], Xf)):
        correct = total = 0
        fresh_acc = []
        for fold in range(1, FOLDS + 1):
            prep, _ = ctx.train(f"{name}-{fold}", {
                "data": {"source": "csv", "path": file, "target": "label", "features": features,
                         "split": {"method": "kfold", "folds": FOLDS, "fold": fold, "val": 0.1}},
                "model": MODEL, "train": TRAIN})
            ok, rows = _test_accuracy(prep)
            correct, total = correct + ok, total + rows
            fresh_acc.append(_fresh_accuracy(prep, fresh, yf))
        out[name] = {"cv_accuracy": correct / total, "cv_rows": total, "fresh_accuracy_mean": float(np.mean(fresh_acc)),
                     "fresh_accuracy_per_fold": fresh_acc}
    ctx.state["picked"] = picked
    return ctx.record(**out)


@step
def plot(ctx: LabContext):
    """**Figure.** Left: experiment 1, the true accuracy (fresh rows) of the three models. Right: experiment 2,
    the cross-validated accuracy each procedure reports beside the true accuracy of the same models: selection
    on all rows reports far more than it delivers; selection inside the folds reports the truth."""
    import matplotlib.pyplot as plt

    n = ctx.numbers
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = [f"{INFORMATIVE} informative", f"+ {NOISE} noise", f"+ {NOISE} noise,\nf_test k={INFORMATIVE} on train"]
    a.bar(range(3), [n[k]["fresh_accuracy"] for k in RUNS], color=["#4477aa", "#cc6677", "#228833"])
    for i, k in enumerate(RUNS):
        a.text(i, n[k]["fresh_accuracy"] + 0.01, f"{n[k]['fresh_accuracy']:.3f}", ha="center", fontsize=8)
    a.set_xticks(range(3), labels, fontsize=8)
    a.set_ylim(0.4, 1.0)
    a.axhline(0.5, c="k", ls=":", lw=1)
    a.set_ylabel(f"accuracy on {N_FRESH} fresh rows")
    a.set_title(f"{N_SMALL} rows: noise features hurt, selection recovers", fontsize=9)
    cases = ("selected_on_all_rows", "selected_in_each_fold")
    x = np.arange(2)
    b.bar(x - 0.2, [n[c]["cv_accuracy"] for c in cases], 0.4, color="#ee7733", label=f"{FOLDS}-fold CV (reported)")
    b.bar(x + 0.2, [n[c]["fresh_accuracy_mean"] for c in cases], 0.4, color="#999999", label="fresh rows (true)")
    b.axhline(0.5, c="k", ls=":", lw=1, label="chance")
    b.set_xticks(x, [f"f_test k={K_LEAK} on all {N_LEAK} rows\n(wrong)", "f_test inside each fold\n(right)"],
                 fontsize=8)
    b.set_ylim(0.3, 1.0)
    b.set_title(f"{P_LEAK} noise features, random labels: selection bias", fontsize=9)
    b.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "feature_selection")


def conclude(ctx: LabContext):
    n = ctx.numbers
    inf, noisy, sel = (n[k] for k in RUNS)
    wrong, right = n["selected_on_all_rows"], n["selected_in_each_fold"]
    checks = {
        "noise features hurt (fresh accuracy ≥ 0.08 lower)": noisy["fresh_accuracy"] <= inf["fresh_accuracy"] - 0.08,
        "selection fitted on train recovers (≥ 0.08 above the noisy model, ≥ informative − 0.03)":
            sel["fresh_accuracy"] >= noisy["fresh_accuracy"] + 0.08
            and sel["fresh_accuracy"] >= inf["fresh_accuracy"] - 0.03,
        "selection on all rows reports an optimistic CV accuracy (≥ 0.65)": wrong["cv_accuracy"] >= 0.65,
        "whose true accuracy is chance (fresh rows: 0.5 ± 0.04)": abs(wrong["fresh_accuracy_mean"] - 0.5) <= 0.04,
        "the leak: reported − true ≥ 0.15": wrong["cv_accuracy"] - wrong["fresh_accuracy_mean"] >= 0.15,
        "selection inside each fold reports about the truth (CV within 0.1 of 0.5)": abs(right["cv_accuracy"] - 0.5) <= 0.1,
    }
    sentence = (f"On {N_SMALL} rows, {NOISE} noise features lower the true accuracy of a linear model from "
                f"{inf['fresh_accuracy']:.3f} to {noisy['fresh_accuracy']:.3f}, and f_test fitted on the training "
                f"rows (it kept {sel['informative_kept']} of the {INFORMATIVE} informative features) brings it back "
                f"to {sel['fresh_accuracy']:.3f}; on pure noise with random labels, selecting {K_LEAK} of {P_LEAK} "
                f"features on all rows gives a {FOLDS}-fold CV accuracy of {wrong['cv_accuracy']:.3f} for a true "
                f"accuracy of {wrong['fresh_accuracy_mean']:.3f}, while selecting inside each fold gives "
                f"{right['cv_accuracy']:.3f} (true {right['fresh_accuracy_mean']:.3f}).")
    return sentence, checks


LAB = Lab("feature-selection", "Feature selection: noise features, and the selection bias",
          "Noise features hurt a model trained on little data, and a selection step fitted on the training rows "
          "recovers it; a selection fitted on all the rows (test rows included) leaks: on pure noise it reports an "
          "accuracy far above the 50 % it really has.",
          (make_data, noise_then_selection, selection_bias, plot), conclude,
          intro="Every step that looks at the labels — feature selection included — is part of training: fitted on "
                "the training rows only, inside each fold of a cross-validation. Done once on all the data, it "
                "picks features that happen to fit the held-out rows too, and the estimate is biased.")
