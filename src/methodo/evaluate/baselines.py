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
SEGMENTATION = ("most_frequent", "stratified")  # most_frequent: every pixel background, when it dominates
LANGUAGE_MODELING = ("unigram", "uniform")


def baseline_metrics(task: str, y_train: np.ndarray, y_eval: np.ndarray, n_classes: int,
                     *, seed: int) -> dict[str, dict[str, float | None]]:
    """Metrics of each dummy strategy of the task on ``y_eval`` (``TaskSpec.baselines``): most
    frequent/stratified/uniform class, mean/median value, most frequent/stratified pixel class, or
    unigram/uniform next token."""
    from methodo.tasks import task_spec

    return task_spec(task).baselines(y_train, y_eval, n_classes, seed)


def classification_baselines(y_train, y_eval, n_classes: int, *, seed: int) -> dict[str, dict]:
    """The most frequent class (its probabilities are the class prior), and random guesses by the prior
    (stratified) or uniform, scored as hard predictions."""
    from sklearn.dummy import DummyClassifier

    X_tr, X_ev = np.zeros((len(y_train), 1)), np.zeros((len(y_eval), 1))
    out = {}
    for strategy in CLASSIFICATION:
        fitted = "prior" if strategy == "most_frequent" else strategy
        dummy = DummyClassifier(strategy=fitted, random_state=seed).fit(X_tr, y_train)
        if strategy == "most_frequent":
            proba = np.zeros((len(y_eval), n_classes), dtype=np.float32)
            proba[:, dummy.classes_] = dummy.predict_proba(X_ev)
        else:
            proba = np.eye(n_classes, dtype=np.float32)[dummy.predict(X_ev)]
        out[strategy] = compute_metrics("classification", proba, y_eval, n_classes)
    return out


def regression_baselines(y_train, y_eval) -> dict[str, dict]:
    """The training mean and median, predicted for every row."""
    from sklearn.dummy import DummyRegressor

    X_tr, X_ev = np.zeros((len(y_train), 1)), np.zeros((len(y_eval), 1))
    return {strategy: compute_metrics("regression", DummyRegressor(strategy=strategy).fit(X_tr, y_train)
                                      .predict(X_ev).astype(np.float32), y_eval)
            for strategy in REGRESSION}


def segmentation_baselines(y_train, y_eval, n_classes: int, seed: int) -> dict[str, dict]:
    """Pixel dummies fitted on the training masks: the class prior at every pixel (its argmax, the
    most frequent class, everywhere), or a random class per pixel drawn from that prior."""
    prior = np.bincount(np.asarray(y_train).ravel(), minlength=n_classes) / np.asarray(y_train).size
    n, h, w = np.asarray(y_eval).shape
    out = {}
    proba = np.broadcast_to(prior.astype(np.float32)[None, :, None, None], (n, n_classes, h, w))
    out["most_frequent"] = compute_metrics("segmentation", np.ascontiguousarray(proba), y_eval, n_classes)
    draw = np.random.default_rng(seed).choice(n_classes, size=(n, h, w), p=prior)
    onehot = np.moveaxis(np.eye(n_classes, dtype=np.float32)[draw], -1, 1)
    out["stratified"] = compute_metrics("segmentation", onehot, y_eval, n_classes)
    return out


def language_baselines(y_train, y_eval, vocab_size: int) -> dict[str, dict]:
    """Next-token dummies: training-token frequencies with add-one smoothing (unigram), or 1/V."""
    y_eval = np.asarray(y_eval)
    return {
        "unigram": compute_metrics("language_modeling", unigram_logprob(y_train, y_eval, vocab_size), y_eval,
                                   vocab_size),
        "uniform": compute_metrics("language_modeling", np.full(y_eval.shape, -np.log(vocab_size)), y_eval,
                                   vocab_size),
    }


def unigram_logprob(y_train, y_eval, vocab_size: int) -> np.ndarray:
    """Log probability of each ``y_eval`` token under the add-one-smoothed unigram of ``y_train``."""
    counts = np.bincount(np.asarray(y_train).ravel(), minlength=vocab_size).astype(np.float64)
    return np.log((counts + 1) / (counts.sum() + vocab_size))[np.asarray(y_eval)]


def sample_rows(n: int, cap: int, *, seed: int, strata=None) -> np.ndarray:
    """Indices, in row order, of a seeded sample of at most ``cap`` of ``n`` rows (all of them when
    ``n <= cap``), stratified by ``strata`` when every stratum can be split, else uniform.

    >>> sample_rows(5, 10, seed=0).tolist(), len(sample_rows(1000, 10, seed=0, strata=np.arange(1000) % 2))
    ([0, 1, 2, 3, 4], 10)
    """
    if n <= cap:
        return np.arange(n)
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    try:
        keep = train_test_split(idx, train_size=cap, random_state=seed, stratify=strata)[0]
    except ValueError:  # a stratum too small to be split in proportion
        keep = train_test_split(idx, train_size=cap, random_state=seed)[0]
    return np.sort(keep)


def reference_model(task: str, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray,
                    y_val: np.ndarray, *, seed: int, max_rows: int = 50_000) -> dict | None:
    """A flexible off-the-shelf model (scikit-learn's histogram gradient boosting) fitted on the same
    training features: the course's "noise or bias?" question for tables.

    When the network's training error is high, this says which it is: if a model this flexible does no
    better on val, the error left is noise in the target (irreducible); if it does clearly better, the
    network has bias to remove. Returns ``{"model", "metric", "train", "val"}`` (accuracy for
    classification, R² for regression) and the rows used (``train_rows`` of ``train_rows_total``,
    ``val_rows`` of ``val_rows_total``), or ``None`` for inputs that are not a feature table.

    Bounded work: it is fitted on a seeded sample of at most ``max_rows`` training rows, stratified by
    the task's strata (class, target quintile), and scored on at most ``max_rows`` val rows (a sample
    can only make the reference weaker, so a capped reference leans towards "noise").

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 3)); y = X[:, 0] + rng.normal(scale=3.0, size=400)
    >>> ref = reference_model("regression", X[:300], y[:300], X[300:], y[300:], seed=0)
    >>> ref["metric"], ref["val"] < 0.3
    ('r2', True)
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import accuracy_score, r2_score

    from methodo.tasks import task_spec

    spec = task_spec(task)
    if not spec.reference or X_train.ndim != 2 or len(y_train) < 20 or len(y_val) < 5:
        return None
    rows = {"train_rows_total": len(y_train), "val_rows_total": len(y_val)}
    X_train, y_train = _sample(X_train, y_train, max_rows, seed=seed, strata=spec.strata)
    X_val, y_val = _sample(X_val, y_val, max_rows, seed=seed, strata=spec.strata)
    rows.update(train_rows=len(y_train), val_rows=len(y_val))
    # early stopping on an inner 10 % of train keeps the reference from memorizing a small table
    opts = dict(max_iter=200, early_stopping=True, validation_fraction=0.1, n_iter_no_change=10, random_state=seed)
    if spec.has_classes:
        if len(np.unique(y_train)) < 2:
            return None
        model = HistGradientBoostingClassifier(**opts).fit(X_train, y_train)
        score, metric = accuracy_score, "accuracy"
    else:
        model = HistGradientBoostingRegressor(**opts).fit(X_train, y_train)
        score, metric = r2_score, "r2"
    return {"model": type(model).__name__, "metric": metric, "train": float(score(y_train, model.predict(X_train))),
            "val": float(score(y_val, model.predict(X_val))), **rows}


def _sample(X, y, cap: int, *, seed: int, strata):
    """``X, y`` themselves up to ``cap`` rows, else a seeded stratified sample of ``cap`` rows."""
    if len(y) <= cap:
        return X, y
    keep = sample_rows(len(y), cap, seed=seed, strata=strata(y))
    return X[keep], y[keep]


def multilabel_baselines(y_train, y_eval, n_labels: int, *, seed: int) -> dict[str, dict]:
    """Each label from its training frequency alone: its frequency as the probability of every row
    (``most_frequent``: a label present in most training rows is always predicted), or drawn at random
    with that frequency (``stratified``)."""
    freq = np.asarray(y_train, dtype=np.float64).mean(0).astype(np.float32)
    n = len(y_eval)
    prior = np.broadcast_to(freq, (n, n_labels)).copy()
    drawn = (np.random.default_rng(seed).random((n, n_labels)) < freq).astype(np.float32)
    return {"most_frequent": compute_metrics("multilabel", prior, y_eval, n_labels),
            "stratified": compute_metrics("multilabel", drawn, y_eval, n_labels)}


def forecasting_baselines(y_eval) -> dict[str, dict]:
    """The forecasts each window makes from its own past, scored like the model: ``last`` (the last value,
    repeated), ``seasonal`` (the value one period before each step), ``moving_average`` (the mean of
    the last ``ma`` values). ``y_eval`` is the split's evaluation targets
    (:func:`methodo.tasks.forecasting.eval_targets`); with the targets alone there is nothing to score."""
    from methodo.data.series import BASELINES

    y = np.asarray(y_eval, dtype=np.float64)
    h = (y.shape[1] - 1) // (len(BASELINES) + 1) if y.ndim == 2 else 0
    if y.ndim != 2 or y.shape[1] != (len(BASELINES) + 1) * h + 1 or h < 1:
        return {}
    return {b: compute_metrics("forecasting", y[:, (i + 1) * h:(i + 2) * h], y)
            for i, b in enumerate(BASELINES)}
