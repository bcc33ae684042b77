"""Hyper-parameter search with Optuna (``methodo tune``): the space language over methodo's config
(:mod:`~methodo.tune.space`), the samplers and pruners by name (:mod:`~methodo.tune.samplers`), one trial
(:mod:`~methodo.tune.trial`: validation split only), the study, its workers and storage
(:mod:`~methodo.tune.study`), MLflow parent/child runs (:mod:`~methodo.tune.track`), what is written after
(:mod:`~methodo.tune.results`), the findings and the study report (``tune.html``).

Light on import: optuna, torch and mlflow are imported by the functions that use them.
"""

from __future__ import annotations


def tune(*args, **kwargs):
    """:func:`methodo.tune.study.tune` (imported on first call)."""
    from methodo.tune.study import tune as _tune

    return _tune(*args, **kwargs)
