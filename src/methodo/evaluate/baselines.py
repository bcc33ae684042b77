"""Dummy baselines, fitted on the training split, evaluated with the same metrics as the model.

A metric means little alone: 0.99 accuracy is nothing when 99% of rows are one class.

Examples
--------
>>> import numpy as np
>>> from methodo.evaluate.baselines import baseline_metrics
>>> res = baseline_metrics("classification", np.array([0, 0, 0, 1]), np.array([0, 0, 1]), 2, seed=0)
>>> round(res["most_frequent"]["accuracy"], 3)
0.667
"""

from __future__ import annotations

import numpy as np

from methodo.evaluate.metrics import compute_metrics

CLASSIFICATION = ("most_frequent", "stratified", "uniform")
REGRESSION = ("mean", "median")


def baseline_metrics(task: str, y_train: np.ndarray, y_eval: np.ndarray, n_classes: int,
                     *, seed: int) -> dict[str, dict[str, float | None]]:
    """Metrics of each dummy strategy on ``y_eval`` (most frequent/stratified/uniform, or mean/median)."""
    from sklearn.dummy import DummyClassifier, DummyRegressor

    X_tr, X_ev = np.zeros((len(y_train), 1)), np.zeros((len(y_eval), 1))
    out = {}
    if task == "classification":
        for strategy in CLASSIFICATION:
            # "most_frequent" predicts the majority class; its probabilities are the class prior
            fitted = "prior" if strategy == "most_frequent" else strategy
            dummy = DummyClassifier(strategy=fitted, random_state=seed).fit(X_tr, y_train)
            if strategy == "most_frequent":
                proba = np.zeros((len(y_eval), n_classes), dtype=np.float32)
                proba[:, dummy.classes_] = dummy.predict_proba(X_ev)
            else:  # random guesses (by the prior, or uniform), scored as hard predictions
                proba = np.eye(n_classes, dtype=np.float32)[dummy.predict(X_ev)]
            out[strategy] = compute_metrics(task, proba, y_eval, n_classes)
    else:
        for strategy in REGRESSION:
            dummy = DummyRegressor(strategy=strategy).fit(X_tr, y_train)
            out[strategy] = compute_metrics(task, dummy.predict(X_ev).astype(np.float32), y_eval)
    return out
