"""Lab `hpo`: grid, random and Bayesian (TPE) search on the same budget, over 5 sampler seeds, with methodo's
tuning pieces: the space language (:class:`methodo.tune.space.Space`, ``points`` for the grid) and the samplers
as ``methodo tune --sampler`` builds them (:data:`methodo.tune.samplers.SAMPLERS`: Optuna's grid, random, and
TPE multivariate with 10 random start-up trials), asked and told trial by trial.

Training a network per trial would make 3 samplers × 5 seeds × 40 trials take minutes, so the objectives are
cheap and their structure is known:

1. **Few hyperparameters matter** (Bergstra & Bengio 2012): six searched values, of which two change the score
   a lot (Branin's function, a standard test of optimizers) and four barely (a small quadratic). A grid of 3
   values per key has 729 points; 40 trials of it see 3 values of each key that matters. Random search sees
   40; TPE models where the good trials were and samples there.
2. **A real model**: RBF kernel ridge regression on a Friedman #1 table (closed form, a few milliseconds), its
   validation RMSE over the kernel width and the ridge (log scale, the two that matter), feature
   standardization and target centering (which barely do).

Measured: the best-so-far curves, and the trials each search needed to reach a given quality. On the first
objective TPE needs the fewest, random fewer than grid, and grid never gets there. On the real one single
searches vary widely with the seed: what a search method buys depends on the problem, and one search is one
draw."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

SAMPLERS_COMPARED = ("grid", "random", "tpe")
SEEDS, TRIALS = 5, 40
STARTUP = 10  # TPE's random start-up trials for 40 trials (methodo.tune.samplers.tpe)
TARGET_BRANIN = 2.0  # Branin's minimum is 0.398
WEAK = 0.1  # weight of the four keys that barely matter
SPACE_BRANIN = """\
x1: {float: [-5.0, 10.0], points: 3}
x2: {float: [0.0, 15.0], points: 3}
u1: {float: [0.0, 1.0], points: 3}
u2: {float: [0.0, 1.0], points: 3}
u3: {float: [0.0, 1.0], points: 3}
u4: {float: [0.0, 1.0], points: 3}
"""
SPACE_RIDGE = """\
gamma: {float: [1.0e-5, 100.0], log: true, points: 5}
alpha: {float: [1.0e-8, 100.0], log: true, points: 5}
standardize: {choice: [true, false]}
center: {choice: [true, false]}
"""
RIDGE_ROWS = 300  # half for fitting, half for validation
RIDGE_WITHIN = 0.05  # the quality to reach: within 5 % of the best validation RMSE any search found


def _branin(x1: float, x2: float) -> float:
    b, c, t = 5.1 / (4 * np.pi ** 2), 5 / np.pi, 1 / (8 * np.pi)
    return float((x2 - b * x1 ** 2 + c * x1 - 6) ** 2 + 10 * (1 - t) * np.cos(x1) + 10)


def _search(space_text: str, objective, sampler: str, seed: int) -> list[float]:
    """One study: ``TRIALS`` trials of ``sampler`` (methodo's build of it, seeded), each a config from the space
    scored by ``objective``; the values in trial order."""
    import optuna

    from methodo.tune.samplers import SAMPLERS
    from methodo.tune.space import Space
    from methodo.tune.study import warnings_off

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = Space.from_text(space_text, "lab hpo")
    values = []
    with warnings_off():  # TPE's multivariate options are "experimental" in Optuna
        study = optuna.create_study(direction="minimize", sampler=SAMPLERS.get(sampler)(
            space, seed=seed, trials=TRIALS, objectives=1))
        for _ in range(TRIALS):
            trial = study.ask()
            params, _ = space.suggest(trial, {})
            values.append(objective(params))
            study.tell(trial, values[-1])
    return values


def _summary(values: dict, target: float) -> dict:
    """Per sampler: the best-so-far curves, the trials to reach ``target`` (None: not within the budget) and
    their mean, counting a search that never got there as ``TRIALS + 1``."""
    out = {}
    for name, runs in values.items():
        curves = [np.minimum.accumulate(v).tolist() for v in runs]
        reach = [next((i + 1 for i, b in enumerate(c) if b <= target), None) for c in curves]
        out[name] = {"best_so_far": curves, "trials_to_target": reach,
                     "mean_trials_to_target": float(np.mean([r or TRIALS + 1 for r in reach])),
                     "reached": sum(r is not None for r in reach),
                     "final_best_mean": float(np.mean([c[-1] for c in curves])),
                     "first_trials": [v[:STARTUP] for v in runs]}
    return out


def _seeds(ctx: LabContext) -> list[int]:
    return [SEEDS * ctx.seed + s for s in range(SEEDS)]


@step
def few_keys_matter(ctx: LabContext):
    """**Search 1: six keys, two that matter.** The score is Branin's function of `x1 ∈ [−5, 10]` and
    `x2 ∈ [0, 15]` (minimum 0.398, reached at three points) plus `0.1 · Σ (uᵢ − cᵢ)²` over four keys
    `u1..u4 ∈ [0, 1]` (their best values `cᵢ` drawn with the lab's seed): those change the score by 0.4 at
    most. Each sampler runs 40 trials with 5 seeds; the quality to reach is a score ≤ 2.0. The grid (3 points
    per key: `points: 3`) visits 40 of its 729 points in a seeded random order."""
    c = np.random.default_rng(ctx.seed).uniform(size=4)

    def objective(p):
        return _branin(p["x1"], p["x2"]) + WEAK * sum((p[f"u{i + 1}"] - c[i]) ** 2 for i in range(4))

    values = {s: [_search(SPACE_BRANIN, objective, s, seed) for seed in _seeds(ctx)] for s in SAMPLERS_COMPARED}
    res = _summary(values, TARGET_BRANIN)
    return ctx.record(sampler_seeds=_seeds(ctx), trials=TRIALS, branin={"target": TARGET_BRANIN, **res})


@step
def kernel_ridge(ctx: LabContext):
    """**Search 2: a real model.** A Friedman #1 table (300 rows, 10 uniform features of which 5 carry the
    signal, noise σ = 1, seeded), half to fit and half to validate. The model: kernel ridge regression with an
    RBF kernel, `(K + αI)⁻¹ y`, in closed form. Searched: `gamma` (kernel width, log 1e-5 … 100) and `alpha`
    (ridge, log 1e-8 … 100), 5 grid points each, and two switches that barely matter here (`standardize` the
    features, already on one scale; `center` the target). The score: validation RMSE. The quality to reach:
    within 5 % of the best RMSE any of the 15 searches found."""
    rng = np.random.default_rng(ctx.seed)
    X = rng.uniform(size=(RIDGE_ROWS, 10))
    y = (10 * np.sin(np.pi * X[:, 0] * X[:, 1]) + 20 * (X[:, 2] - 0.5) ** 2 + 10 * X[:, 3] + 5 * X[:, 4]
         + rng.normal(size=RIDGE_ROWS))
    h = RIDGE_ROWS // 2
    Xt, yt, Xv, yv = X[:h], y[:h], X[h:], y[h:]

    def objective(p):
        mu, sd = (Xt.mean(0), Xt.std(0)) if p["standardize"] else (0.0, 1.0)
        A, B = (Xt - mu) / sd, (Xv - mu) / sd
        sq = lambda P, Q: np.maximum((P ** 2).sum(1)[:, None] + (Q ** 2).sum(1)[None, :] - 2 * P @ Q.T, 0)  # noqa: E731
        m = yt.mean() if p["center"] else 0.0
        coef = np.linalg.solve(np.exp(-p["gamma"] * sq(A, A)) + p["alpha"] * np.eye(h), yt - m)
        return float(np.sqrt(np.mean((np.exp(-p["gamma"] * sq(B, A)) @ coef + m - yv) ** 2)))

    values = {s: [_search(SPACE_RIDGE, objective, s, seed) for seed in _seeds(ctx)] for s in SAMPLERS_COMPARED}
    best = min(min(v) for runs in values.values() for v in runs)
    res = _summary(values, best * (1 + RIDGE_WITHIN))
    return ctx.record(kernel_ridge={"best_rmse": best, "target": best * (1 + RIDGE_WITHIN),
                                    "val_std_of_y": float(yv.std()), **res})


@step
def plot(ctx: LabContext):
    """**Figure.** Best-so-far score against trials, the median over the 5 seeds (line) and their range
    (band), with the quality to reach (dotted). Left: when two keys of six matter, the grid is stuck on its
    3 × 3 values of them; random search keeps finding new ones; TPE, after its 10 random start-up trials,
    samples where the good trials were. Right: on the kernel ridge search (zoomed near the best RMSE) the bands, the
    range over seeds, are wide: one search's luck weighs about as much as its method."""
    import matplotlib.pyplot as plt

    n = ctx.numbers
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8))
    colors = {"grid": "#cc3311", "random": "#4477aa", "tpe": "#228833"}
    trials = np.arange(1, TRIALS + 1)
    for ax, key, title in ((axes[0], "branin", "six keys, two matter (Branin + 4 weak keys)"),
                           (axes[1], "kernel_ridge", "kernel ridge on Friedman #1 (validation RMSE)")):
        for s in SAMPLERS_COMPARED:
            c = np.array(n[key][s]["best_so_far"])
            ax.plot(trials, np.median(c, axis=0), c=colors[s],
                    label=f"{s}: {n[key][s]['reached']}/{SEEDS} reach it, mean {n[key][s]['mean_trials_to_target']:.1f} "
                          "trials")
            ax.fill_between(trials, c.min(0), c.max(0), color=colors[s], alpha=0.15, lw=0)
        ax.axhline(n[key]["target"], c="k", ls=":", lw=1, label="quality to reach")
        ax.axvline(STARTUP + 0.5, c="0.6", ls="--", lw=0.8)
        ax.set_xlabel(f"trial (dashed: TPE's {STARTUP} random start-up trials end)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, title=f"never: counted {TRIALS + 1}", title_fontsize=7)
    axes[0].set_yscale("log")
    best = n["kernel_ridge"]["best_rmse"]
    axes[1].set_ylim(0.97 * best, 1.4 * best)
    axes[0].set_ylabel("best score so far (lower is better)")
    fig.tight_layout()
    ctx.figure(fig, "hpo")


def conclude(ctx: LabContext):
    n = ctx.numbers
    br, kr = n["branin"], n["kernel_ridge"]
    g, r, t = (br[s]["mean_trials_to_target"] for s in SAMPLERS_COMPARED)
    kg, krand, kt = (kr[s]["mean_trials_to_target"] for s in SAMPLERS_COMPARED)
    checks = {
        "two keys of six matter: TPE reaches the target in fewer trials than random on average (by ≥ 3)":
            t <= r - 3,
        "random in fewer than grid (by ≥ 3)": r <= g - 3,
        "the 3-point grid cannot reach it in 40 trials": br["grid"]["reached"] == 0,
        "TPE starts as random search (its first 10 trials are random's, seed for seed)":
            br["tpe"]["first_trials"] == br["random"]["first_trials"]
            and kr["tpe"]["first_trials"] == kr["random"]["first_trials"],
        "kernel ridge: the best model found has under half the RMSE of predicting the mean":
            kr["best_rmse"] < 0.5 * kr["val_std_of_y"],
    }
    order = sorted(SAMPLERS_COMPARED, key=lambda s: kr[s]["mean_trials_to_target"])
    counts = {s: [c or TRIALS + 1 for c in kr[s]["trials_to_target"]] for s in SAMPLERS_COMPARED}
    spread = float(np.mean([max(v) - min(v) for v in counts.values()]))  # between seeds, mean over samplers
    gap = max(kg, krand, kt) - min(kg, krand, kt)  # between the samplers' means
    sentence = (f"When two of six keys matter, TPE reaches a score ≤ {TARGET_BRANIN:g} in {t:.1f} trials on average "
                f"over {SEEDS} seeds, random search in {r:.1f} ({br['random']['reached']} of {SEEDS} within "
                f"{TRIALS} trials) and the grid never (counted {g:.0f}: its 3 values per key miss the good region); "
                f"on the kernel ridge search, reaching within {100 * RIDGE_WITHIN:.0f} % of the best validation RMSE "
                f"({kr['best_rmse']:.3f}) took {kt:.1f} (TPE), {krand:.1f} (random) and {kg:.1f} (grid) trials on "
                f"average ({' < '.join(order)}), per seed "
                + "; ".join(f"{s} {kr[s]['trials_to_target']}" for s in SAMPLERS_COMPARED)
                + f" (None: not within {TRIALS})"
                + (f": the seeds spread by {spread:.1f} trials on average, more than the {gap:.1f} between the "
                   "samplers' means." if spread >= gap else
                   f": the samplers' means differ by {gap:.1f} trials, the seeds spread by {spread:.1f}."))
    return sentence, checks


LAB = Lab("hpo", "Hyper-parameter search: grid, random, TPE on the same budget",
          "On the same budget of trials, when few of the searched keys matter, TPE reaches a given quality in "
          "fewer trials than random search, and random search in fewer than a grid (which cannot reach it); on a "
          "small real search (kernel ridge) single searches vary widely with the seed.",
          (few_keys_matter, kernel_ridge, plot), conclude,
          intro="A grid spends its budget on every combination, including those of keys that do not matter; "
                "random search tries a new value of every key at each trial; Bayesian optimization (TPE) "
                "models where the good trials were and samples there. Best-so-far curves over several seeds "
                "show what each buys, and how much is luck.")
