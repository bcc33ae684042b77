"""Mitigations, compared side by side with the model on the test split (``fairness.mitigation``).

Each row of the comparison is a way to make the decisions, scored on the same test rows: accuracy and the
disparity measures of the attribute (the first of ``data.sensitive``), each with its bootstrap interval.

- ``reweighing`` (Kamiran & Calders): the training rows are drawn with weights ``P(group) P(label) /
  P(group, label)``, which make group and label independent in what the model sees; the loop's weighted
  sampler (the balancing stage's ``sample_weights``) draws them. The same config is retrained.
- ``threshold_optimizer``: fairlearn's :class:`~fairlearn.postprocessing.ThresholdOptimizer` over the
  model's own scores: thresholds per group chosen on the validation split under ``fairness.constraint``,
  applied to the test split (randomized between two thresholds where the constraint needs it; seeded).
- ``exponentiated_gradient``: fairlearn's reductions (:class:`~fairlearn.reductions.ExponentiatedGradient`)
  over a logistic regression on the same (prepared) features, tables only, shown beside the unconstrained
  logistic regression: the reductions need an estimator that takes sample weights, which the network's
  loop is not.
- ``penalty``: the same config retrained with a disparity term in the loss, through the loop's extra-loss
  seam: ``fairness.penalty`` × the gap of the mean positive score between the groups of each batch
  (demographic parity), or within each label (equalized odds). The group travels as one more input column
  that the model never sees (a wrapper drops it), so the loop is unchanged. Tables only.

Retrained models start from the run's seed; the global RNG states are restored after, so nothing that
runs later in the pipeline moves.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import numpy as np

from methodo.trust.fairness import split_fairness

MEASURES = {"demographic_parity": ["demographic_parity_difference", "demographic_parity_ratio",
                                   "equalized_odds_difference"],
            "equalized_odds": ["equalized_odds_difference", "equal_opportunity_difference",
                               "demographic_parity_difference"]}


@contextlib.contextmanager
def _rng_kept():
    import random

    import torch

    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


def _one_hot(pred: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(pred), n_classes))
    out[np.arange(len(pred)), pred] = 1.0
    return out


def _row(name: str, how: str, y, scores, groups, attr: str, *, seed: int, n_boot: int, level: float,
         min_group: int, measures: list[str]) -> dict:
    """One line of the comparison: test accuracy and disparities with intervals."""
    f = split_fairness(y, scores, groups, attr, n_boot=n_boot, seed=seed, level=level, min_group=min_group)
    correct = (np.asarray(scores).argmax(1) == np.asarray(y)).astype(np.float64)
    iv = None
    if n_boot:
        rng = np.random.default_rng(seed)
        acc = [correct[rng.integers(0, len(correct), len(correct))].mean() for _ in range(n_boot)]
        a = (1 - level) / 2
        iv = [round(float(np.quantile(acc, a)), 6), round(float(np.quantile(acc, 1 - a)), 6)]
    return {"name": name, "how": how, "accuracy": round(float(correct.mean()), 6), "accuracy_interval": iv,
            "disparity": {k: f["disparity"].get(k) for k in measures},
            "disparity_intervals": {k: (f.get("disparity_intervals") or {}).get(k) for k in measures},
            "selection_rate": {g: m.get("selection_rate") for g, m in f["groups"].items()}}


def _retrain(prep, data, *, extra_loss=None, wrap=None):
    """The run's model, built and trained again on ``data`` (no checkpoints, no progress), RNG states kept;
    returns the trained model (``wrap(model)`` when given: the module that takes ``data``'s inputs)."""
    from methodo.models import build_model
    from methodo.seed import seed_everything
    from methodo.train.loop import fit

    cfg, ds = prep.cfg, prep.ds
    with _rng_kept():
        seed_everything(cfg.seed)
        model = build_model(cfg.model.name, input_shape=prep.data.input_shape, n_outputs=prep.data.n_outputs,
                            kind=ds.kind, task=ds.task, **cfg.model.options)
        if wrap is not None:
            model = wrap(model)
        fit(model, data, cfg.train.model_copy(update={"progress": False}), seed=cfg.seed,
            class_weights=data.class_weights, extra_loss=extra_loss)
    return model


def _scores(prep, model, X) -> np.ndarray:
    from methodo.evaluate import predict

    return predict(model, X, task=prep.ds.task, batch_size=prep.cfg.train.eval_batch_size)


def reweighing_weights(y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Kamiran & Calders' weights ``P(g) P(y) / P(g, y)`` per row (1 where group and label are independent)."""
    y, groups = np.asarray(y), np.asarray(groups).astype(str)
    w = np.empty(len(y), dtype=np.float64)
    for g in np.unique(groups):
        for c in np.unique(y):
            m = (groups == g) & (y == c)
            if m.any():
                w[m] = (groups == g).mean() * (y == c).mean() / m.mean()
    return w


class _DropLast:
    """Wraps a model that takes the features; its input carries one more column (the group), dropped here."""

    @staticmethod
    def wrap(model):
        import torch

        class DropLast(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner(x[:, :-1])

        return DropLast(model)


def disparity_penalty(weight: float, constraint: str):
    """``extra_loss(model, out, xb, yb)``: ``weight`` × the largest gap of the mean positive score (softmax of
    class 1) between the groups of the batch (the last input column holds each row's group code); for
    ``equalized_odds`` the gap is taken within each label and the larger one used."""
    import torch

    def gap(p, g):
        means = [p[g == k].mean() for k in torch.unique(g)]
        return torch.stack(means).max() - torch.stack(means).min() if len(means) > 1 else p.sum() * 0

    def extra_loss(model, out, xb, yb):
        p = torch.softmax(out.float(), 1)[:, 1]
        g = xb[:, -1]
        if constraint == "equalized_odds":
            parts = [gap(p[yb == c], g[yb == c]) for c in (0, 1) if (yb == c).sum() > 1]
            return weight * torch.stack(parts).max() if parts else p.sum() * 0
        return weight * gap(p, g)

    return extra_loss


def _scores_estimator():
    """A prefit scikit-learn estimator whose input is the model's score: ThresholdOptimizer's view of the
    network (its thresholds are on P(positive))."""
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Scores(ClassifierMixin, BaseEstimator):
        def fit(self, X, y, **kw):  # pragma: no cover - prefit
            return self

        def __sklearn_is_fitted__(self):
            return True

        def predict_proba(self, X):
            p = np.asarray(X, dtype=np.float64)[:, 0]
            return np.stack([1 - p, p], axis=1)

        def predict(self, X):
            return (np.asarray(X)[:, 0] >= 0.5).astype(int)

    return Scores()


def mitigate(prep, preds: dict, fairness: dict) -> dict[str, Any]:
    """The comparison ``summary.json`` → ``fairness.mitigation``: ``{attribute, constraint, measures, rows,
    skipped}``, the model first."""
    import torch

    cfg, ds, data = prep.cfg, prep.ds, prep.data
    fc = cfg.fairness
    attr = next(iter(ds.sensitive))
    groups = {s: np.asarray(ds.sensitive[attr])[rows].astype(str) for s, rows in data.indices.items()}
    y = {s: np.asarray(data.raw_y[s]) for s in data.indices}
    measures = MEASURES[fc.constraint]
    kw = dict(seed=cfg.seed + 17, n_boot=cfg.evaluate.bootstrap, level=cfg.evaluate.confidence, min_group=fc.min_group,
              measures=measures)
    rows = [_row("model", "the run's model", y["test"], preds["test"], groups["test"], attr, **kw)]
    skipped: dict[str, str] = {}
    binary = ds.n_classes == 2
    for name in fc.mitigation:
        if name != "reweighing" and not binary:
            skipped[name] = "binary classification only"
            continue
        if name == "reweighing":
            if data.train_inputs is not None:
                skipped[name] = f"data.balance={cfg.data.balance} resamples the training rows; reweighing weighs the real ones"
                continue
            w = reweighing_weights(y["train"], groups["train"])
            if data.sample_weights is not None:  # weighted_sampler: both weights
                w = w * data.sample_weights.numpy()
            rw = dataclasses.replace(data, sample_weights=torch.as_tensor(w / w.sum(), dtype=torch.float64))
            model = _retrain(prep, rw)
            rows.append(_row("reweighing", "retrained on rows drawn with weights P(g)P(y)/P(g,y)", y["test"],
                             _scores(prep, model, data.inputs("test")), groups["test"], attr, **kw))
        elif name == "threshold_optimizer":
            from fairlearn.postprocessing import ThresholdOptimizer

            to = ThresholdOptimizer(estimator=_scores_estimator(), constraints=fc.constraint, objective="accuracy_score",
                                    prefit=True, predict_method="predict_proba")
            unseen = sorted(set(groups["test"]) - set(groups["val"]))
            if unseen:
                skipped[name] = f"group(s) {unseen} of the test split are absent from validation"
                continue
            to.fit(preds["val"][:, 1:2], y["val"], sensitive_features=groups["val"])
            pred = np.asarray(to.predict(preds["test"][:, 1:2], sensitive_features=groups["test"],
                                         random_state=cfg.seed)).astype(int)
            rows.append(_row("threshold_optimizer", f"fairlearn ThresholdOptimizer ({fc.constraint}): thresholds "
                             "per group chosen on val", y["test"], _one_hot(pred, 2), groups["test"], attr, **kw))
        elif name == "exponentiated_gradient":
            from fairlearn.reductions import DemographicParity, EqualizedOdds, ExponentiatedGradient
            from sklearn.linear_model import LogisticRegression

            Xtr, Xte = data.inputs("train").numpy(), data.inputs("test").numpy()
            lr = LogisticRegression(max_iter=1000).fit(Xtr, y["train"])
            rows.append(_row("logistic_regression", "unconstrained, the reductions' estimator", y["test"],
                             lr.predict_proba(Xte), groups["test"], attr, **kw))
            cons = DemographicParity() if fc.constraint == "demographic_parity" else EqualizedOdds()
            eg = ExponentiatedGradient(LogisticRegression(max_iter=1000), constraints=cons)
            with _rng_kept():
                np.random.seed(cfg.seed)
                eg.fit(Xtr, y["train"], sensitive_features=groups["train"])
                pred = np.asarray(eg.predict(Xte, random_state=cfg.seed)).astype(int)
            rows.append(_row("exponentiated_gradient", f"fairlearn ExponentiatedGradient ({fc.constraint}) over the "
                             "logistic regression", y["test"], _one_hot(pred, 2), groups["test"], attr, **kw))
        elif name == "penalty":
            codes = {g: i for i, g in enumerate(sorted(set(groups["train"]) | set(groups["val"]) | set(groups["test"])))}

            def with_group(X, s):
                g = torch.as_tensor([codes[v] for v in groups[s]], dtype=X.dtype).unsqueeze(1)
                return torch.cat([X, g], 1)

            tensors = {s: (with_group(data.inputs(s) if s == "train" else data.tensors[s][0], s), data.tensors[s][1])
                       for s in ("train", "val", "test")}
            if data.train_inputs is not None:  # resampled: the loop's rows are not the real ones
                skipped[name] = f"data.balance={cfg.data.balance} resamples the training rows"
                continue
            pd_ = dataclasses.replace(data, tensors={**data.tensors, **tensors})
            model = _retrain(prep, pd_, extra_loss=disparity_penalty(fc.penalty, fc.constraint), wrap=_DropLast.wrap)
            rows.append(_row("penalty", f"retrained with {fc.penalty:g} × the batch's {fc.constraint.replace('_', ' ')} "
                             "gap in the loss", y["test"], _scores(prep, model, tensors["test"][0]), groups["test"], attr,
                             **kw))
    return {"attribute": attr, "constraint": fc.constraint, "measures": measures, "rows": rows, "skipped": skipped}
