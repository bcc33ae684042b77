"""Lab `polar`: feature extraction beats capacity. Two concentric circles are not linearly separable in (x, y):
a linear model fails and needs a hidden layer; the polar features (r, θ) (methodo's `polar` feature function,
fitted on train only) make them separable by one linear layer with a handful of parameters.
The three models are trained by `methodo run` on the bundled `circles` dataset (the config of
``examples/circles_polar.yaml``)."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

MODELS = {  # name → (features, hidden layers): the same data, three ways
    "xy_linear": ([], []),
    "xy_hidden": ([], [16]),
    "polar_linear": ([{"function": {"fn": "polar", "columns": ["x", "y"]}}], []),
}
LABELS = {"xy_linear": "(x, y), linear", "xy_hidden": "(x, y), hidden layer of 16", "polar_linear": "(r, θ), linear"}


@step
def train_models(ctx: LabContext):
    """**Train three models with `methodo run`.** On `circles` (1000 points, 2 classes, a stratified split):
    a linear model (`mlp` with `hidden: []`) on (x, y); an `mlp` with one hidden layer of 16 ReLU units on
    (x, y); and the same linear model on the polar features, `data.features: [{function: {fn: polar, columns:
    [x, y]}}]`. Adam, learning rate 0.05, 30 epochs with early stopping on the validation loss."""
    out = {}
    grid = np.stack(np.meshgrid(np.linspace(-1.5, 1.5, 121), np.linspace(-1.5, 1.5, 121)), -1).reshape(-1, 2)
    for name, (features, hidden) in MODELS.items():
        res = ctx.run_pipeline(name, {
            "data": {"source": "circles", "split": {"method": "stratified", "val": 0.15, "test": 0.15},
                     "features": features},
            "model": {"name": "mlp", "hidden": hidden, "dropout": 0.0},
            "train": {"epochs": 30, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.05}},
            "evaluate": {"bootstrap": 0, "reference": False}})
        r = res.record
        out[name] = {"test_accuracy": r.metrics["test"]["accuracy"], "train_accuracy": r.metrics["train"]["accuracy"],
                     "parameters": r.model.parameters, "epochs_run": r.epochs_run}
        import methodo

        p = methodo.load(res.run_dir).predict_proba(grid.astype(np.float32))
        ctx.state.setdefault("regions", {})[name] = p[:, 1].reshape(121, 121)
        if "points" not in ctx.state:
            from methodo.data.sources import load_circles

            ds = load_circles(None)
            ctx.state["points"] = (ds.X, ds.y)
    return ctx.record(**out)


@step
def plot(ctx: LabContext):
    """**Figure.** Each model's decision regions in the (x, y) plane (the probability of `inner`), over the
    data. The linear model in (x, y) can only draw a straight line; the hidden layer bends it into a closed
    curve; in (r, θ) a straight line `r = constant` *is* a circle in (x, y)."""
    import matplotlib.pyplot as plt

    X, y = ctx.state["points"]
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.6))
    for ax, name in zip(axes, MODELS):
        ax.contourf(np.linspace(-1.5, 1.5, 121), np.linspace(-1.5, 1.5, 121), ctx.state["regions"][name],
                    levels=[0, 0.5, 1], colors=["#cfe0f3", "#f6d3c9"])
        ax.scatter(X[:, 0], X[:, 1], c=np.where(y == 1, "#c0392b", "#2c6fbb"), s=3)
        n = ctx.numbers[name]
        ax.set_title(f"{LABELS[name]}\ntest acc {n['test_accuracy']:.3f}, {n['parameters']} parameters", fontsize=9)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    ctx.figure(fig, "polar")


def conclude(ctx: LabContext):
    n = ctx.numbers
    lin, hid, pol = n["xy_linear"], n["xy_hidden"], n["polar_linear"]
    checks = {
        "linear on (x, y) fails (test accuracy < 0.75)": lin["test_accuracy"] < 0.75,
        "a hidden layer on (x, y) succeeds (≥ 0.9)": hid["test_accuracy"] >= 0.9,
        "linear on (r, θ) succeeds (≥ 0.9)": pol["test_accuracy"] >= 0.9,
        "(r, θ) needs fewer parameters than the hidden layer": pol["parameters"] < hid["parameters"],
    }
    sentence = (f"In (x, y) a linear model reaches test accuracy {lin['test_accuracy']:.3f} and needs a hidden layer "
                f"({hid['parameters']} parameters) to reach {hid['test_accuracy']:.3f}; with the polar features the "
                f"same linear model ({pol['parameters']} parameters) reaches {pol['test_accuracy']:.3f}.")
    return sentence, checks


LAB = Lab("polar", "Circles: a hidden layer, or the right features",
          "Two concentric circles need a hidden layer in (x, y); with the polar features (r, θ) one linear layer "
          "is enough, with far fewer parameters.",
          (train_models, plot), conclude,
          intro="The course's feature-extraction example: a good representation of the input can replace "
                "capacity. Here r alone separates the classes.")
