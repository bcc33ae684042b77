"""Lab `polyfit`: capacity against error. Polynomials of degree 1, 3, 5 and 10 fitted by least squares to
11 noisy points of a sine: the training error falls with every degree, the validation error falls, then
rises (underfitting on the left of the U, overfitting on the right). Errors are methodo's regression
metrics (``rmse``)."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

DEGREES = (1, 3, 5, 10)
N_TRAIN, N_VAL, NOISE = 11, 200, 0.3


def _truth(x):
    return np.sin(2 * np.pi * x)


@step
def make_data(ctx: LabContext):
    """**Data.** 11 training points of y = sin(2πx) + noise (σ = 0.3) on a jittered grid of [0, 1], and 200
    validation points drawn from the same process over the same range (no extrapolation: the lab is about
    capacity, not about predicting outside the data). The seed draws the jitter and the noise."""
    rng = np.random.default_rng(ctx.seed)
    x_train = np.sort((np.arange(N_TRAIN) + rng.uniform(0, 1, N_TRAIN)) / N_TRAIN)
    y_train = _truth(x_train) + rng.normal(0, NOISE, N_TRAIN)
    x_val = rng.uniform(x_train.min(), x_train.max(), N_VAL)
    y_val = _truth(x_val) + rng.normal(0, NOISE, N_VAL)
    ctx.state.update(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
    return ctx.record(n_train=N_TRAIN, n_val=N_VAL, noise_std=NOISE)


@step
def fit_degrees(ctx: LabContext):
    """**Fit each degree and measure.** A least-squares polynomial per degree (numpy's `Polynomial.fit`, on a
    scaled domain so degree 10 stays well conditioned); the root-mean-squared error on train and on
    validation is methodo's `rmse` metric (`methodo.evaluate.metrics.compute_metrics`)."""
    from numpy.polynomial import Polynomial

    from methodo.evaluate.metrics import compute_metrics

    s = ctx.state
    train, val, fits = [], [], {}
    for d in DEGREES:
        p = Polynomial.fit(s["x_train"], s["y_train"], d)
        fits[d] = p
        train.append(compute_metrics("regression", p(s["x_train"]).astype(np.float32),
                                     s["y_train"].astype(np.float32), names=["rmse"])["rmse"])
        val.append(compute_metrics("regression", p(s["x_val"]).astype(np.float32),
                                   s["y_val"].astype(np.float32), names=["rmse"])["rmse"])
    s["fits"] = fits
    best = DEGREES[int(np.argmin(val))]
    return ctx.record(degrees=list(DEGREES), train_rmse=train, val_rmse=val, best_degree=best)


@step
def plot(ctx: LabContext):
    """**Figure.** Left: the data and each polynomial (degree 10, with 11 coefficients, passes through all 11 training points and swings
    between them). Right: training and validation error against the degree — the U of the validation error."""
    import matplotlib.pyplot as plt

    s, n = ctx.state, ctx.numbers
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    grid = np.linspace(s["x_train"].min(), s["x_train"].max(), 300)
    a.scatter(s["x_val"], s["y_val"], s=6, c="0.75", label="validation")
    a.scatter(s["x_train"], s["y_train"], s=22, c="k", label="train", zorder=3)
    for d, p in s["fits"].items():
        a.plot(grid, p(grid), lw=1.4, label=f"degree {d}")
    a.set_ylim(-2, 2)
    a.set_title("fits")
    a.legend(fontsize=7, ncol=2)
    b.plot(n["degrees"], n["train_rmse"], "o-", label="train")
    b.plot(n["degrees"], n["val_rmse"], "s-", label="validation")
    b.set_yscale("log")
    b.set_xlabel("polynomial degree")
    b.set_ylabel("RMSE")
    b.set_title("error against capacity")
    b.legend()
    fig.tight_layout()
    ctx.figure(fig, "polyfit")


def conclude(ctx: LabContext):
    n = ctx.numbers
    tr, va = n["train_rmse"], n["val_rmse"]
    i = int(np.argmin(va))
    checks = {
        "train error falls with every degree": all(a > b for a, b in zip(tr, tr[1:])),
        "validation error is lowest at an intermediate degree": 0 < i < len(va) - 1,
        "validation error of degree 10 above its minimum": va[-1] > va[i],
    }
    sentence = (f"Training RMSE falls from {tr[0]:.3f} (degree 1) to {tr[-1]:.3f} (degree 10) while validation RMSE "
                f"goes {va[0]:.3f} → {va[i]:.3f} (degree {n['degrees'][i]}) → {va[-1]:.3f} (degree 10): "
                + ("a U, the best capacity is in between." if all(checks.values()) else "not the expected U."))
    return sentence, checks


LAB = Lab("polyfit", "Polynomial fit: underfitting and overfitting",
          "With more capacity (polynomial degree 1, 3, 5, 10) the training error falls monotonically while the "
          "validation error is U-shaped: too simple underfits, too flexible overfits.",
          (make_data, fit_degrees, plot), conclude,
          intro="The course's first picture of the bias/variance trade-off: fit the same noisy points with "
                "more and more flexible models and compare the error on the points used for fitting with "
                "the error on new points.")
