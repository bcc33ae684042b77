"""Forecasting: windows of past values → the next ``horizon`` values of a target series.

The model outputs ``(n, horizon)`` values; it trains on the standardized target (MSE), the epoch score
is ``forecast_mae`` in target units. The metrics (``forecast_mae``, ``forecast_rmse``, ``mase``, ``smape``)
score a split against :func:`eval_targets`: the targets followed by the baselines' forecasts and the
MASE scale (the mean absolute error of the one-step naive forecast on the training rows), so every
metric, its bootstrap interval and the baselines come out of the same machinery as the other tasks.
The default split is ``time`` (past trains, future tests).
"""

from __future__ import annotations

import numpy as np

from methodo.tasks.base import TASKS, TaskSpec, no_strata


def _mse(out, y, class_weights=None, label_smoothing=0.0):
    import torch.nn.functional as F

    return F.mse_loss(out.float(), y[:, :out.shape[1]])


def _abs_error(out, y, y_std=1.0):
    h = out.shape[1]
    return (out - y[:, :h]).abs().sum().double() * y_std, y[:, :h].numel()  # target units, in float64


def _baselines(y_train, y_eval, n_classes, seed):
    from methodo.evaluate.baselines import forecasting_baselines

    return forecasting_baselines(y_eval)


def eval_targets(ds, rows, train_rows) -> np.ndarray:
    """``(n, 4·horizon + 1)`` float64: the targets, the ``last``, ``seasonal`` and ``moving_average``
    forecasts of each row, and the MASE scale (the same in every row, so a bootstrap resample keeps it):
    the mean |one-step naive error| over the training rows, ``|y[t] - y[t-1]|``."""
    from methodo.data.series import BASELINES

    m = ds.meta
    tr = np.asarray(train_rows)
    scale = float(np.mean(np.abs(ds.y[tr, 0].astype(np.float64) - m["baseline_last"][tr, 0])))
    cols = [ds.y[rows]] + [m[f"baseline_{b}"][rows] for b in BASELINES]
    return np.concatenate([c.astype(np.float64) for c in cols] + [np.full((len(rows), 1), scale)], axis=1)


def _write_outputs(o) -> None:
    """The forecast plot (history, truth and prediction of the test split) and the predictions files."""
    from methodo.report import plots

    ds, data = o.ds, o.data
    h = int(ds.meta["horizon"][0])
    window = int(ds.meta["window"][0])
    plots.forecast(ds.meta["history"], data.indices, o.preds["test"], window=window,
                   path=o.rd.figure("forecast.png"), title=ds.name)
    steps = [f"step{k + 1}" for k in range(h)]
    o.write_split_predictions(["row", "time", *[f"true_{s}" for s in steps], *[f"predicted_{s}" for s in steps]],
                              lambda s: ([int(r), str(ds.meta["time"][r]), *[f"{float(v):.6g}" for v in t[:h]],
                                          *[f"{float(v):.6g}" for v in p]]
                                         for r, t, p in zip(data.indices[s], data.raw_y[s], o.preds[s])))


SPEC = TaskSpec(
    name="forecasting", score="forecast_mae", higher_is_better=False, loss=_mse, batch_score=_abs_error,
    n_outputs=lambda ds: int(ds.y.shape[1]), strata=no_strata, to_scores=lambda out, y=None: out,
    baselines=_baselines, write_outputs=_write_outputs, standardize_target=True, headline=("mase", -1), decide=None,
    default_split="time", eval_targets=eval_targets,
    explain="explanations are drawn for classification and regression only (task: forecasting)",
    help="windows of past values → the next horizon values: MSE on the standardized target, epoch score MAE")
TASKS.register(SPEC.name, SPEC, help=SPEC.help)
