"""Lab `sampling`: how the way a held-out split is drawn changes its class proportions. A small imbalanced table
(300 rows, three classes at 60 / 30 / 10 %, each class a blob in its own region of the plane) is split 50
times, with 50 seeds drawn from the lab's seed, by three of methodo's split methods (``data.split.method``,
:func:`methodo.data.split.split_indices`): ``random`` (shuffle and cut), ``stratified`` (every split keeps the
class proportions, up to rounding) and ``cluster`` (KMeans clusters of the inputs, whole clusters per split:
the course's cluster sampling). The class-proportion error of a split is the largest gap, over the classes,
between a class's share in the split and its share in the whole set. Stratified sampling has the smallest
error (here none at all), random sampling a few points, and cluster sampling by far the largest: it keeps
groups of neighbouring rows together, and neighbouring rows share their class."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

SHARES = (0.6, 0.3, 0.1)
N, DRAWS, VAL, TEST = 300, 50, 0.2, 0.2
CLASSES = ("common", "middle", "rare")
CENTERS = np.array([[0.0, 0.0], [3.0, 0.0], [1.5, 2.6]])  # one blob per class, 3 standard deviations apart
METHODS = ("random", "stratified", "cluster")
COLORS = {"random": "#4477aa", "stratified": "#228833", "cluster": "#cc3311"}


@step
def make_data(ctx: LabContext):
    """**Data.** 300 rows with two features, three classes of 180, 90 and 30 rows (60 / 30 / 10 %): each class
    a Gaussian blob of unit spread around its own center, the centers 3 apart, so neighbouring rows mostly share
    their class, as in real data where similar inputs have similar labels. The seed draws the points, and the
    50 split seeds used below."""
    rng = np.random.default_rng(ctx.seed)
    counts = np.round(np.array(SHARES) * N).astype(int)
    y = np.repeat(np.arange(len(SHARES)), counts)
    X = CENTERS[y] + rng.normal(size=(N, 2))
    seeds = rng.integers(0, 2**31 - 1, DRAWS)
    ctx.state.update(X=X, y=y, seeds=seeds)
    return ctx.record(rows=N, classes=list(CLASSES), class_counts=counts.tolist(),
                      class_shares=[float(s) for s in SHARES], draws=DRAWS, val=VAL, test=TEST)


def _error(y_part: np.ndarray, shares: np.ndarray) -> float:
    """The largest gap between a class's share in ``y_part`` and in the whole set."""
    p = np.bincount(y_part, minlength=len(shares)) / len(y_part)
    return float(np.abs(p - shares).max())


@step
def split_many_times(ctx: LabContext):
    """**Split 50 times with each method.** `methodo.data.split.split_indices(y, method=..., val=0.2, test=0.2,
    seed=s, X=X)`, the function behind `data.split.method`, for each of the 50 seeds and each method: `random`,
    `stratified`, and `cluster` (8 KMeans clusters of the standardized inputs, methodo's default
    `data.split.clusters`; whole clusters go to test, then val, each up to its share of rows). For each split
    we measure the class-proportion error: max over classes of |share in the split − share in the whole set|,
    in the val and test splits, and how often the rare class is missing from the test split altogether."""
    import sklearn.cluster  # noqa: F401 - load its OpenMP runtime here, so the one-thread limit below covers it
    from threadpoolctl import threadpool_limits

    from methodo.data.split import split_indices

    X, y, seeds = ctx.state["X"], ctx.state["y"], ctx.state["seeds"]
    shares = np.bincount(y) / len(y)
    rare = len(SHARES) - 1
    out, rare_share = {}, {}
    with threadpool_limits(1):
        for method in METHODS:
            test_err, val_err, rare_in_test, test_rows = [], [], [], []
            for s in seeds:
                parts = split_indices(y, method=method, val=VAL, test=TEST, seed=int(s), X=X)
                test_err.append(_error(y[parts["test"]], shares))
                val_err.append(_error(y[parts["val"]], shares))
                rare_in_test.append(float(np.mean(y[parts["test"]] == rare)))
                test_rows.append(len(parts["test"]))
            te, ve = np.array(test_err), np.array(val_err)
            rare_share[method] = rare_in_test
            out[method] = {"test_error_mean": float(te.mean()), "test_error_max": float(te.max()),
                           "val_error_mean": float(ve.mean()), "val_error_max": float(ve.max()),
                           "test_rows_min": int(min(test_rows)), "test_rows_max": int(max(test_rows)),
                           "rare_share_in_test_min": float(min(rare_in_test)),
                           "rare_share_in_test_max": float(max(rare_in_test)),
                           "draws_without_rare_in_test": int(sum(r == 0 for r in rare_in_test))}
    ctx.state["rare_share"] = rare_share
    return ctx.record(**out)


@step
def plot(ctx: LabContext):
    """**Figure.** Left: the data, with the test rows of one cluster split ringed: whole regions of the plane,
    so whole chunks of one class. Right: the share of the rare class in the test split, for each of the 50
    draws and each method, against its share in the whole set (10 %)."""
    import matplotlib.pyplot as plt

    from methodo.data.split import split_indices

    n = ctx.numbers
    X, y = ctx.state["X"], ctx.state["y"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.9))
    colors = np.array(["#bbbbbb", "#66ccee", "#aa3377"])
    a.scatter(X[:, 0], X[:, 1], c=colors[y], s=10)
    test = split_indices(y, method="cluster", val=VAL, test=TEST, seed=int(ctx.state["seeds"][0]), X=X)["test"]
    a.scatter(X[test, 0], X[test, 1], facecolors="none", edgecolors="k", s=40, lw=0.8, label="test rows (cluster)")
    for k, name in enumerate(CLASSES):
        a.scatter([], [], c=colors[k], s=10, label=f"{name} ({100 * SHARES[k]:.0f} %)")
    a.set_title("one cluster split (seed of draw 1)", fontsize=9)
    a.legend(fontsize=7, loc="upper left")
    rng = np.random.default_rng(0)  # horizontal jitter of the dots only
    for i, method in enumerate(METHODS):
        v = 100 * np.array(ctx.state["rare_share"][method])
        b.scatter(i + rng.uniform(-0.15, 0.15, len(v)), v, s=12, alpha=0.7, c=COLORS[method])
    b.axhline(100 * SHARES[-1], c="k", ls="--", lw=1, label="share in the whole set")
    b.set_xticks(range(len(METHODS)), [f"{m}\nmean error {100 * n[m]['test_error_mean']:.1f} pts" for m in METHODS],
                 fontsize=8)
    b.set_ylabel("rare class in the test split (%)")
    b.set_title(f"{DRAWS} draws per method", fontsize=9)
    b.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "sampling")


def conclude(ctx: LabContext):
    n = ctx.numbers
    r, s, c = (n[m] for m in METHODS)
    checks = {
        "stratified has the smallest test class-proportion error (mean ≤ 0.5 × random's)":
            s["test_error_mean"] <= 0.5 * r["test_error_mean"],
        "stratified stays within rounding on every draw (max test error ≤ 2 / test rows)":
            s["test_error_max"] <= 2 / s["test_rows_min"],
        "cluster has the largest test class-proportion error (mean ≥ 2 × random's)":
            c["test_error_mean"] >= 2 * r["test_error_mean"],
        "the same order on the val split": s["val_error_mean"] < r["val_error_mean"] < c["val_error_mean"],
    }
    sentence = (f"Over {DRAWS} draws of a 20 % test split of {N} rows (classes 60/30/10 %), the mean class-proportion "
                f"error is {100 * s['test_error_mean']:.1f} points for stratified sampling (at most "
                f"{100 * s['test_error_max']:.1f}), {100 * r['test_error_mean']:.1f} for random sampling (at most "
                f"{100 * r['test_error_max']:.1f}) and {100 * c['test_error_mean']:.1f} for cluster sampling (at most "
                f"{100 * c['test_error_max']:.1f}; the rare class missing from test in {c['draws_without_rare_in_test']} "
                f"of {DRAWS} draws, vs {r['draws_without_rare_in_test']} for random).")
    return sentence, checks


LAB = Lab("sampling", "Sampling: random, stratified, cluster",
          "Drawing a held-out split at random shifts its class proportions by a few points; stratified sampling "
          "keeps them (up to rounding); cluster sampling, which keeps groups of similar rows together, shifts them "
          "the most.",
          (make_data, split_many_times, plot), conclude,
          intro="A validation or test split should look like the data the model will meet. The course's three "
                "ways of drawing one, measured on the class proportions of a small imbalanced set: random, "
                "stratified (per class), and cluster sampling (whole groups: the way to test on unseen regions).")
