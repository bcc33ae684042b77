"""Optuna's samplers and pruners by name (``methodo tune --sampler/--pruner``); optuna is imported when one is built.

Each sampler entry is ``build(space, *, seed, trials, objectives) -> optuna sampler``; its metadata
says whether it handles several objectives (``multi_objective``). Each pruner entry is
``build(*, epochs) -> optuna pruner`` (``epochs``: the most epochs a trial runs, Hyperband's budget).
``hyperband:N`` is Hyperband whose first rung is at epoch N (its ``min_resource``; plain ``hyperband``: 1),
for trainings whose first epoch ranks configs badly (rungs 3-9-27 instead of 1-3-9-27 for 27 epochs).

Examples
--------
>>> from methodo.tune.samplers import SAMPLERS, PRUNERS
>>> SAMPLERS.names()
['cmaes', 'gp', 'grid', 'nsga2', 'qmc', 'random', 'tpe']
>>> PRUNERS.names()
['halving', 'hyperband', 'median', 'none']
"""

from __future__ import annotations

from methodo.errors import ConfigError
from methodo.registry import Registry

SAMPLERS = Registry("sampler")
PRUNERS = Registry("pruner")


@SAMPLERS.register("grid", help="grid search: every combination of the space's values (floats need step or points)",
                   multi_objective=True)
def grid(space, *, seed: int, trials: int, objectives: int):
    import optuna

    class Grid(optuna.samplers.GridSampler):
        """Optuna's grid sampler, minus its ``study.stop()`` once the grid is covered: methodo's worker loop
        stops at the study's budget, which ``methodo tune`` caps at the grid's size."""

        def after_trial(self, study, trial, state, values) -> None:
            return None

    return Grid(space.grid(), seed=seed)


@SAMPLERS.register("random", help="random search: each value drawn independently (Bergstra & Bengio 2012)",
                   multi_objective=True)
def random(space, *, seed: int, trials: int, objectives: int):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@SAMPLERS.register("tpe", help="Bayesian: tree-structured Parzen estimator, multivariate, conditional spaces "
                   "(Optuna's default)", multi_objective=True)
def tpe(space, *, seed: int, trials: int, objectives: int):
    import optuna

    # multivariate + group: joint densities over the keys that are searched together (conditional spaces);
    # constant_liar: workers running at once do not all propose the same point.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                      n_startup_trials=min(10, max(3, trials // 4)))


@SAMPLERS.register("gp", help="Bayesian: Gaussian-process regression with expected improvement",
                   multi_objective=True)
def gp(space, *, seed: int, trials: int, objectives: int):
    import optuna

    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=min(10, max(3, trials // 4)),
                                     warn_independent_sampling=False)


@SAMPLERS.register("cmaes", help="evolutionary: CMA-ES over the numeric keys (choices drawn at random)",
                   multi_objective=False)
def cmaes(space, *, seed: int, trials: int, objectives: int):
    import optuna

    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False,
                                        n_startup_trials=min(5, max(1, trials // 5)))


@SAMPLERS.register("nsga2", help="evolutionary: NSGA-II genetic algorithm, made for several objectives",
                   multi_objective=True)
def nsga2(space, *, seed: int, trials: int, objectives: int):
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=min(50, max(4, trials // 3)))


@SAMPLERS.register("qmc", help="quasi-random: a scrambled Sobol sequence (covers the space more evenly than random)",
                   multi_objective=True)
def qmc(space, *, seed: int, trials: int, objectives: int):
    import optuna

    return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False,
                                      warn_asynchronous_seeding=False)


@PRUNERS.register("median", help="stop a trial whose epoch score is worse than the median of earlier trials' "
                  "at that epoch (after 5 trials)")
def median(*, epochs: int):
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)


@PRUNERS.register("halving", help="asynchronous successive halving: keep the best 1/3 at epochs 1, 3, 9, ...")
def halving(*, epochs: int):
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)


@PRUNERS.register("hyperband", help="Hyperband: successive halving in several brackets up to train.epochs "
                  "(Li et al. 2018)")
def hyperband(*, epochs: int):
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)


def _hyperband_from(rest: str):
    """``hyperband:N``: Hyperband with its first rung at epoch N (min_resource N, rungs N, 3N, 9N, ...)."""
    if not rest.isdigit() or int(rest) < 1:
        raise ConfigError(f"unknown pruner 'hyperband:{rest}'; hyperband:N takes N, the first rung's epoch, "
                          "a whole number >= 1 (e.g. hyperband:3)")
    first = int(rest)

    def build(*, epochs: int):
        import optuna

        if first > max(epochs, 1):
            raise ConfigError(f"--pruner hyperband:{first}: the first rung (epoch {first}) is past train.epochs="
                              f"{epochs}; choose N between 1 and {epochs}")
        return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=max(epochs, 1), reduction_factor=3)

    return build


PRUNERS.register_prefix("hyperband", _hyperband_from, help="hyperband:N: Hyperband whose first rung is at epoch N "
                        "(min_resource N; plain hyperband: 1)")


@PRUNERS.register("none", help="no pruning: every trial runs all its epochs (or until early stopping)")
def none(*, epochs: int):
    import optuna

    return optuna.pruners.NopPruner()
