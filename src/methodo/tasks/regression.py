"""Regression: one number per row. MSE on the standardized target, epoch score MAE in target units."""

from __future__ import annotations

from methodo.tasks.base import TASKS, TaskSpec


def _mse(out, y, class_weights=None, label_smoothing=0.0):
    import torch.nn.functional as F

    return F.mse_loss(out.squeeze(-1).float(), y)


def _abs_error(out, y, y_std=1.0):
    return (out.squeeze(-1) - y).abs().sum().double() * y_std, y.numel()  # target units, in float64


def _squeeze(out, y=None):
    return out.squeeze(-1)


def _quintiles(y):  # a continuous target: stratify by its quintiles
    import numpy as np

    return np.digitize(y, np.quantile(y, [0.2, 0.4, 0.6, 0.8]))


def _baselines(y_train, y_eval, n_classes, seed):
    from methodo.evaluate.baselines import regression_baselines

    return regression_baselines(y_train, y_eval)


def _write_outputs(o) -> None:
    """Predicted against true values, and the predictions files (val, test)."""
    from methodo.report import plots

    pred, y = o.preds["test"], o.data.raw_y["test"]
    plots.regression_fit(pred, y, o.rd.figure("regression_fit.png"))
    o.write_split_predictions(["row", "true", "predicted"], lambda s: (
        [int(r), f"{float(t):.6g}", f"{float(p):.6g}"]
        for r, t, p in zip(o.data.indices[s], o.data.raw_y[s], o.preds[s])))


SPEC = TaskSpec(
    name="regression", score="mae", higher_is_better=False, loss=_mse, batch_score=_abs_error,
    n_outputs=lambda ds: 1, strata=_quintiles, to_scores=_squeeze, baselines=_baselines, write_outputs=_write_outputs,
    standardize_target=True, reference=True,
    help="one number per row: mean squared error on the standardized target, epoch score MAE")
TASKS.register(SPEC.name, SPEC, help=SPEC.help)
