"""Diagnosis: pure functions that look at a finished run and say what is wrong, with numbers.

Each check takes :class:`Facts` and returns a :class:`Finding` or ``None``. A finding explains
itself: ``evidence`` holds the numbers, ``action`` what to do next.

Examples
--------
>>> from methodo.diagnose import Facts, diagnose
>>> facts = Facts(task="classification", history=[
...     {"epoch": 1, "train_loss": 2.0, "val_loss": 2.0, "train_accuracy": 0.3, "val_accuracy": 0.3}])
>>> [f.id for f in diagnose(facts)]
['underfitting']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from methodo.findings import FINDINGS, SEVERITY_ORDER, Finding, certainty, fmt_interval, normal_sf, wilson

__all__ = ["FINDINGS", "SEVERITY_ORDER", "Finding", "Facts", "diagnose"]


@dataclass
class Facts:
    """What the checks may look at. Every field is optional; a check needing one absent returns None."""

    task: str
    history: list[dict] = field(default_factory=list)
    metrics: dict[str, dict] = field(default_factory=dict)  # split → metric → value
    baselines: dict[str, dict] = field(default_factory=dict)  # strategy → metric → value (test)
    test_pred: np.ndarray | None = None  # predicted class (or value) per test row (per pixel: segmentation)
    test_true: np.ndarray | None = None
    intervals: dict[str, list | None] = field(default_factory=dict)  # test metric → [low, high]
    undefined: dict[str, str] = field(default_factory=dict)  # test metric → why it has no value
    # out-of-sample rows (val + test) for label-error hunting: probabilities, given labels, row ids
    oos_proba: np.ndarray | None = None
    oos_true: np.ndarray | None = None
    oos_rows: np.ndarray | None = None
    # the label issues already searched (methodo.evaluate.label_issues.LabelIssues: the pipeline's, over
    # val + test or every row by cross-fitting); when None the check searches oos_proba itself
    label_issues: Any = None
    class_names: list[str] | None = None
    lr: float | None = None
    monitor: list[dict] = field(default_factory=list)  # per-epoch weight/gradient stats (train.monitor)
    skipped_batches: list[dict] = field(default_factory=list)  # batches the NaN guard skipped
    # a flexible scikit-learn model on the same table (evaluate.baselines.reference_model): noise or bias?
    reference: dict | None = None
    # a transfer run's summary.json `transfer` (strategy, what the backbone expects, scratch and probe results)
    transfer: dict | None = None
    n_rows: dict[str, int] = field(default_factory=dict)  # split → rows (the binomial intervals' n)
    # the standard error of the mean validation loss, from the per-row losses at the best epoch (None: unknown)
    val_loss_se: float | None = None

    @property
    def spec(self):
        """The task's :class:`~methodo.tasks.TaskSpec`: what the checks may assume about the predictions."""
        from methodo.tasks import task_spec

        return task_spec(self.task)


@FINDINGS.register("overfitting", check=True,
                    help="high variance: validation loss rises while training loss keeps falling")
def overfitting(f: Facts) -> Finding | None:
    h = f.history
    if len(h) < 3:
        return None
    val = [r["val_loss"] for r in h]
    best = int(np.argmin(val))
    last = h[-1]
    rise = (val[-1] - val[best]) / max(abs(val[best]), 1e-12)
    train_fell = last["train_loss"] < h[best]["train_loss"]
    gap = last["val_loss"] - last["train_loss"]
    if not (best < len(h) - 1 and rise > 0.10 and train_fell):
        return None
    se = f.val_loss_se
    if se is not None and se > 0:
        # The rise must be beyond the validation loss's own noise: a one-sided z-test of (last - best) against
        # the standard error of the mean loss at the best epoch (conservative: the two means are on the same
        # rows, so their difference varies less than one mean does).
        z = (val[-1] - val[best]) / se
        if z < OVERFIT_Z:
            return None
        sure = certainty("test", f"The validation loss rose {z:.1f} standard errors (SE {se:.3g}, per-row losses "
                         f"at the best epoch) above its best; one-sided z-test p = {normal_sf(z):.2g}, alarm at "
                         f"z ≥ {OVERFIT_Z}.", p_value=normal_sf(z), test="one-sided z-test of the validation-loss "
                         "rise against its standard error", z=round(z, 2), standard_error=round(se, 6))
    else:
        sure = certainty("threshold rule", f"Validation loss {100 * rise:.0f}% above its best (alarm above 10%); "
                         "no test: the per-row validation losses are not known for this task.")
    return Finding(
        "overfitting", "high", "The model overfits: validation loss rose while training loss fell",
        {"best_val_loss": round(val[best], 4), "best_epoch": h[best]["epoch"],
         "last_val_loss": round(val[-1], 4), "val_loss_rise_pct": round(100 * rise, 1),
         "train_loss_at_best": round(h[best]["train_loss"], 4), "last_train_loss": round(last["train_loss"], 4),
         "train_val_gap": round(gap, 4), "certainty": sure},
        "Keep the best-epoch weights (methodo does) and regularize: more data or augmentation, "
        "dropout, weight decay, a smaller model, or earlier stopping.")


# One-sided z at which a rise of the validation loss counts as overfitting (p ≈ 0.023).
OVERFIT_Z = 2.0


def _high_bias(f: Facts) -> tuple[str, float, float] | None:
    """``(metric, train, val)`` when the training score is poor and close to val (high bias, or noise)."""
    if not f.history:
        return None
    if f.spec.has_classes:
        last = f.history[-1]
        tr, va = last.get("train_accuracy", 1), last.get("val_accuracy", 1)
        return ("accuracy", tr, va) if 1 - tr >= 0.15 and (1 - va) - (1 - tr) < 0.05 else None
    if f.spec.standardize_target:
        tr, va = f.metrics.get("train", {}).get("r2"), f.metrics.get("val", {}).get("r2")
        if tr is not None and va is not None and tr < 0.6 and tr - va < 0.1:
            return "r2", tr, va
    return None


# The reference must beat the network on val by this much for the error to count as removable bias.
_REFERENCE_MARGIN = {"accuracy": 0.02, "r2": 0.03}


def _reference_no_better(f: Facts, metric: str, val: float) -> bool:
    ref = f.reference
    return bool(ref) and ref.get("metric") == metric and ref["val"] <= val + _REFERENCE_MARGIN[metric]


def _bias_certainty(f: Facts, metric: str, tr: float, va: float, noise: bool) -> dict:
    """Wilson intervals of the training and validation accuracy (binomial over their rows); R² is a rule."""
    ref = f.reference or {}
    n_tr, n_va = f.n_rows.get("train", 0), f.n_rows.get("val", 0)
    if metric != "accuracy" or not n_tr or not n_va:
        return certainty("threshold rule", f"Train {metric} {tr:.3g} (alarm below 0.6 R² or above 0.15 error, "
                         "close to val); no interval on R².")
    itr, iva = wilson(round(tr * n_tr), n_tr), wilson(round(va * n_va), n_va)
    said = (f"Training accuracy {tr:.3f}, Wilson 95% interval {fmt_interval(itr)} over {n_tr} rows; validation "
            f"{va:.3f} {fmt_interval(iva)} over {n_va} rows")
    if ref.get("metric") == metric:
        said += (f"; the reference's val accuracy {ref['val']:.3f} is "
                 + ("within 0.02 of the model's" if noise else "more than 0.02 above the model's"))
    return certainty("wilson interval", said + ".", interval=itr, level=0.95, train_interval=itr, val_interval=iva)


@FINDINGS.register("underfitting", check=True, help="high bias: training error is high and close to validation error")
def underfitting(f: Facts) -> Finding | None:
    hb = _high_bias(f)
    if hb is None:
        return None
    metric, tr, va = hb
    if _reference_no_better(f, metric, va):
        return None  # a flexible model does no better: noise, not bias (see noise_floor)
    ref = {} if not f.reference else {f"reference_val_{metric}": round(f.reference["val"], 4),
                                      "reference_model": f.reference["model"]}
    if metric == "accuracy":
        return Finding(
            "underfitting", "high", "The model underfits: it does not even fit the training data",
            {"train_error": round(1 - tr, 4), "val_error": round(1 - va, 4), "epochs": f.history[-1]["epoch"], **ref,
             "certainty": _bias_certainty(f, metric, tr, va, noise=False)},
            "Increase capacity (wider/deeper model), train longer, raise the learning rate "
            "(see `methodo lr-find`), or reduce regularization.")
    return Finding(
        "underfitting", "medium", "The model underfits: it explains little of the training target",
        {"train_r2": round(tr, 4), "val_r2": round(va, 4), **ref,
         "certainty": _bias_certainty(f, metric, tr, va, noise=False)},
        "Increase capacity, train longer, tune the learning rate, or add informative features.")


@FINDINGS.register("noise_floor", check=True,
                    help="noise, not bias: training error is high, but a flexible reference model does no better")
def noise_floor(f: Facts) -> Finding | None:
    hb = _high_bias(f)
    if hb is None:
        return None
    metric, tr, va = hb
    if not _reference_no_better(f, metric, va):
        return None
    ref = f.reference
    return Finding(
        "noise_floor", "low",
        f"The error left looks like noise in the target, not bias: {ref['model']} does no better on val",
        {f"train_{metric}": round(tr, 4), f"val_{metric}": round(va, 4),
         f"reference_train_{metric}": round(ref["train"], 4), f"reference_val_{metric}": round(ref["val"], 4),
         "certainty": _bias_certainty(f, metric, tr, va, noise=True)},
        "More capacity or epochs will not lower this error (the reference fits train better yet generalizes "
        "no better); better features, cleaner labels or more rows might. Report this ceiling with the result.")


@FINDINGS.register("constant_predictions", check=True,
                    help="the model predicts (almost) the same output for every input")
def constant_predictions(f: Facts) -> Finding | None:
    if f.test_pred is None or f.test_true is None or len(f.test_pred) < 5:
        return None
    if f.spec.decided_classes:
        values, counts = np.unique(f.test_pred, return_counts=True)
        share = counts.max() / counts.sum()
        true_share = np.bincount(f.test_true).max() / len(f.test_true)
        unit = f.spec.count_unit or "rows"
        if share >= 0.98 and true_share < 0.95:
            return Finding(
                "constant_predictions", "critical",
                f"The model predicts class {int(values[counts.argmax()])} for {100 * share:.0f}% of test {unit}",
                {"predicted_share": round(float(share), 4), "true_share_of_largest_class": round(float(true_share), 4),
                 "distinct_predictions": int(len(values)),
                 "certainty": certainty("wilson interval", f"{int(counts.max())} of {int(counts.sum())} test {unit} "
                                        f"get one class: Wilson 95% interval "
                                        f"{fmt_interval(wilson(int(counts.max()), int(counts.sum())))} of the share.",
                                        interval=wilson(int(counts.max()), int(counts.sum())))},
                "The model ignores its input: check the learning rate (too high collapses, too low never "
                "leaves the prior), the labels' alignment with the inputs, and class balance.")
        return None
    spread, target = float(np.std(f.test_pred)), float(np.std(f.test_true))
    if target > 0 and spread < 0.01 * target:
        return Finding(
            "constant_predictions", "critical", "The model predicts nearly the same value for every input",
            {"prediction_std": round(spread, 6), "target_std": round(target, 6),
             "certainty": certainty("exact count", f"Prediction spread {spread:.3g} over all {len(f.test_pred)} test "
                                    "rows, under 1% of the target's (a threshold rule on every row, no sample).")},
            "Check the learning rate and the target scaling; the model ignores its input.")
    return None


@FINDINGS.register("not_better_than_baseline", check=True,
                    help="the model does not beat a dummy that ignores the input")
def not_better_than_baseline(f: Facts) -> Finding | None:
    test = f.metrics.get("test", {})
    if not test or not f.baselines:
        return None
    # the metric that says whether the input was used, and its direction
    key, better = f.spec.headline
    model = test.get(key)
    scored = {s: m.get(key) for s, m in f.baselines.items() if m.get(key) is not None}
    if model is None or not scored:
        return None
    best_name = max(scored, key=lambda s: better * scored[s])
    iv = f.intervals.get(key)
    if iv is not None:  # the model must beat the baseline beyond its own uncertainty
        worst_case = iv[0] if better > 0 else iv[1]
        beaten = better * (worst_case - scored[best_name]) > 0
    else:
        margin = 0.01 * (1 if better > 0 else max(abs(scored[best_name]), 1e-12))
        beaten = better * (model - scored[best_name]) > margin
    if not beaten:
        return Finding(
            "not_better_than_baseline", "critical",
            f"The model's test {key} ({model:.4g}) is no better than the '{best_name}' dummy ({scored[best_name]:.4g})",
            {"metric": key, "model": round(model, 6), "model_interval": iv, "baseline": best_name,
             "baseline_value": round(scored[best_name], 6),
             "certainty": (certainty("bootstrap interval", f"The dummy's {key} {scored[best_name]:.4g} is inside or "
                                     f"beyond the model's 95% percentile-bootstrap interval {fmt_interval(iv)}.",
                                     interval=iv) if iv is not None else
                           certainty("threshold rule", "No interval (evaluate.bootstrap=0): the model is within 1% "
                                     "of the dummy."))},
            "The model has learned nothing usable: check labels and features for signal, the learning "
            "rate, and whether the metric suits the class balance.")
    return None


@FINDINGS.register("misleading_metric", check=True, help="accuracy looks good only because one class dominates")
def misleading_metric(f: Facts) -> Finding | None:
    test = f.metrics.get("test", {})
    if not f.spec.has_classes or f.test_true is None or "accuracy" not in test:
        return None
    counts = np.bincount(f.test_true)
    share = counts.max() / counts.sum()
    acc, bal = test.get("accuracy"), test.get("balanced_accuracy")
    if acc is None or bal is None or share < 0.8 or acc - bal < 0.1:
        return None
    minority = int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))
    pred = f.test_pred
    hits = int(((pred == minority) & (f.test_true == minority)).sum())
    recall = hits / max(int(counts[minority]), 1)
    riv = wilson(hits, int(counts[minority]))
    ev = {"accuracy": round(acc, 4), "balanced_accuracy": round(bal, 4), "majority_share": round(float(share), 4),
          "minority_class": (f.class_names or [str(minority)] * (minority + 1))[minority],
          "minority_recall": round(recall, 4),
          "certainty": certainty("wilson interval", f"Minority-class recall {hits}/{int(counts[minority])}, Wilson 95% "
                                 f"interval {fmt_interval(riv)}; the majority is {100 * share:.0f}% of all "
                                 f"{int(counts.sum())} test rows (counted).", interval=riv)}
    if "precision" in test:
        ev["precision"] = "undefined (" + f.undefined["precision"] + ")" if test["precision"] is None else round(test["precision"], 4)
    return Finding(
        "misleading_metric", "high",
        f"Accuracy {acc:.3f} misleads: {100 * share:.0f}% of test rows are one class, and always guessing it scores {share:.3f}",
        ev, "Watch balanced accuracy, the minority-class recall and precision, MCC or average precision instead; "
            "rebalance the training data (data.balance: class_weights) and choose the decision threshold on validation.")


@FINDINGS.register("no_signal", check=True,
                    help="predictions are unrelated to the labels (noise): test agreement is at chance level")
def no_signal(f: Facts) -> Finding | None:
    test = f.metrics.get("test", {})
    if f.test_pred is None or f.test_true is None or len(f.test_true) < 10 or not (
            f.spec.has_classes or f.spec.standardize_target):  # one class or one value per row
        return None
    if f.spec.has_classes:
        kappa = test.get("cohen_kappa")
        if kappa is None or len(np.unique(f.test_pred)) < 2 or kappa > 0.1:
            return None
        iv = f.intervals.get("cohen_kappa")
        if iv is not None and iv[0] > 0:
            return None
        train_acc = f.metrics.get("train", {}).get("accuracy")
        ev = {"test_cohen_kappa": round(kappa, 4), "kappa_interval": iv, "test_accuracy": test.get("accuracy"),
              "train_accuracy": train_acc,
              "certainty": (certainty("bootstrap interval", f"Cohen's kappa {kappa:.3f}, 95% percentile-bootstrap "
                                      f"interval {fmt_interval(iv)} reaches 0 (chance agreement).", interval=iv)
                            if iv is not None else certainty("threshold rule", f"Cohen's kappa {kappa:.3f} ≤ 0.1; no "
                                                             "interval (evaluate.bootstrap=0)."))}
        return Finding(
            "no_signal", "critical",
            "The model's test predictions agree with the labels no more than chance"
            + (f" (yet it fits {train_acc:.0%} of the training rows: it memorized noise)" if train_acc and train_acc > 0.8 else ""),
            ev, "Check that labels are aligned with inputs (a shuffled or mis-joined label column looks exactly like "
                "this) and that the features carry information about the target.")
    corr = float(np.corrcoef(f.test_pred, f.test_true)[0, 1]) if np.std(f.test_pred) > 0 else 0.0
    if abs(corr) < 0.1 and (test.get("r2") is None or test["r2"] < 0.02):
        n = len(f.test_true)
        zc = math.atanh(max(min(corr, 0.999999), -0.999999)) * math.sqrt(max(n - 3, 1))
        p = 2 * normal_sf(abs(zc))
        return Finding("no_signal", "critical", "Test predictions are uncorrelated with the target",
                       {"correlation": round(corr, 4), "test_r2": test.get("r2"),
                        "certainty": certainty("test", f"Correlation {corr:.3f} over {n} test rows: two-sided Fisher "
                                               f"z-test of zero correlation p = {p:.2g} (no evidence of signal).",
                                               p_value=p, test="Fisher z-test of zero correlation")},
                       "Check the target column and the features for signal.")
    return None


@FINDINGS.register("lr_too_high", check=True,
                    help="training loss oscillates or climbs from epoch to epoch: the learning rate is too high")
def lr_too_high(f: Facts) -> Finding | None:
    tr = [r["train_loss"] for r in f.history]
    if len(tr) < 4:
        return None
    ups = sum(b > a * 1.02 for a, b in zip(tr, tr[1:]))
    climbing = tr[-1] > 1.2 * min(tr)
    if (ups / (len(tr) - 1) >= 0.4 and climbing) or tr[-1] > 1.5 * tr[0]:
        from scipy.stats import binomtest

        p = binomtest(ups, len(tr) - 1, 0.5, alternative="greater").pvalue
        sure = certainty("test", f"{ups} of {len(tr) - 1} epoch-to-epoch changes of the training loss were rises "
                         f"(> 2%): one-sided sign test against a loss that falls as often as it rises, p = {p:.2g}; "
                         f"last loss {tr[-1] / min(tr):.2f}× the lowest.", p_value=p,
                         test="one-sided sign test (binomial, 0.5) on the epoch-to-epoch changes")
        return Finding(
            "lr_too_high", "high", "Training loss oscillates or climbs instead of settling",
            {"epochs_with_rising_train_loss": ups, "epochs": len(tr), "first_train_loss": round(tr[0], 4),
             "min_train_loss": round(min(tr), 4), "last_train_loss": round(tr[-1], 4), "lr": f.lr, "certainty": sure},
            "Lower the learning rate (3-10×; `methodo lr-find` suggests one), add warm-up, or clip gradients.")
    return None


@FINDINGS.register("lr_too_low", check=True, help="training loss barely moves: the learning rate is too low")
def lr_too_low(f: Facts) -> Finding | None:
    tr = [r["train_loss"] for r in f.history]
    if len(tr) < 5:
        return None
    drop = (tr[0] - tr[-1]) / max(abs(tr[0]), 1e-12)
    acc = f.history[-1].get("train_accuracy")
    if drop < 0.05 and (acc is None or acc < 0.9):
        return Finding(
            "lr_too_low", "high", f"Training loss moved only {100 * drop:.1f}% in {len(tr)} epochs",
            {"first_train_loss": round(tr[0], 4), "last_train_loss": round(tr[-1], 4),
             "relative_drop_pct": round(100 * drop, 2), "lr": f.lr,
             "certainty": certainty("threshold rule", f"The training loss (every training row, each epoch) fell "
                                    f"{100 * drop:.1f}% in {len(tr)} epochs (alarm under 5%, with training accuracy "
                                    "under 0.9): a rule of thumb, no sampling model.")},
            "Raise the learning rate (try 10×, or `methodo lr-find`), or check that gradients reach the weights.")
    return None


@FINDINGS.register("label_errors", check=True,
                    help="rows whose given label looks wrong: confident learning (cleanlab) over out-of-sample "
                         "probabilities; every suspect in label_issues.csv")
def label_errors(f: Facts) -> Finding | None:
    from methodo.evaluate import label_issues as li
    from methodo.rundir import LAYOUT

    found = f.label_issues
    if found is None:
        kind = f.spec.label_issues
        if kind is None or f.oos_proba is None or f.oos_true is None or len(f.oos_true) < li.MIN_ROWS:
            return None
        found = li.find_label_issues(f.oos_proba, f.oos_true, rows=f.oos_rows, class_names=f.class_names,
                                     multilabel=kind == "multilabel")
    if not found.count or not _judges_labels(f):
        return None
    share = found.count / max(found.n, 1)
    iv = wilson(found.count, found.n)
    if iv[0] < LABEL_SHARE:  # not sure that at least 1% of the labels are suspect: a few hard rows, not a problem
        return None
    sure = certainty("wilson interval", f"{found.count} of {found.n} searched labels are suspects (cleanlab's "
                     f"confident learning): Wilson 95% interval {fmt_interval(iv)} of the share, above "
                     f"{LABEL_SHARE:.0%} (the alarm). Each row is a suspect to inspect, not a proven error.", interval=iv)
    searched = ("validation/test rows" if found.method == "val_test"
                else f"rows (every row, {found.folds}-fold cross-fitted)")
    return Finding(
        "label_errors", "medium" if share >= 0.01 else "low",
        f"{found.count} of {found.n} {searched} look mislabeled (confident learning: the model is confident "
        "they are another class)",
        {"suspects": found.count, "share": round(float(share), 4), "searched": found.n, "method": found.method,
         "file": LAYOUT["label_issues"], "top": found.rows[:li.TOP], "certainty": sure},
        f"Inspect the rows of {LAYOUT['label_issues']} (most suspect first; figure label_errors.png shows the top ones); "
        "fix wrong labels or remove ambiguous inputs, then retrain. `methodo data label-issues CONFIG` checks "
        "every row and can write a cleaned copy of a CSV (--fix drop|relabel --out CLEAN.csv).")


def _judges_labels(f: Facts) -> bool:
    """Confident learning reads the model's probabilities as evidence against a label, so it needs a model
    that learned something: out of sample, the model must agree with the given labels more often than
    always answering the most frequent class does (the lower end of the Wilson 95% interval of its
    agreement above the majority share). A broken model (shuffled target, far too high or low an LR,
    underfitting) disagrees with many right labels; its suspects say nothing about the labels."""
    proba, true = f.oos_proba, f.oos_true
    if proba is None or true is None or np.ndim(true) != 1 or np.ndim(proba) != 2 or not len(true):
        return True  # nothing to judge the model by (multi-label, a searched set without probabilities)
    true = np.asarray(true)
    agree = int(np.count_nonzero(np.argmax(proba, axis=1) == true))
    majority = np.bincount(true.astype(np.int64)).max() / len(true)
    return wilson(agree, len(true))[0] > majority


# The finding speaks when the Wilson 95% interval of the suspects' share lies above this: any model finds
# a few hard or ambiguous rows in clean data (0.3% of digits, 1% of breast_cancer's val/test), which are
# no reason to alarm; label_issues.csv lists every suspect either way.
LABEL_SHARE = 0.01


@FINDINGS.register("miscalibrated", check=True,
                    help="predicted probabilities do not match observed frequencies (high ECE)")
def miscalibrated(f: Facts) -> Finding | None:
    e = f.metrics.get("test", {}).get("ece")
    if e is None or e < 0.1:
        return None
    iv = f.intervals.get("ece")
    if iv is not None and iv[0] < 0.05:
        return None
    return Finding(
        "miscalibrated", "medium", f"Probabilities are miscalibrated: expected calibration error {e:.3f}",
        {"ece": round(e, 4), "ece_interval": iv,
         "certainty": (certainty("bootstrap interval", f"ECE {e:.3f}, 95% percentile-bootstrap interval "
                                 f"{fmt_interval(iv)} (alarm when ECE ≥ 0.1 and the interval stays above 0.05).",
                                 interval=iv) if iv is not None else
                       certainty("threshold rule", f"ECE {e:.3f} ≥ 0.1; no interval (evaluate.bootstrap=0)."))},
        "Do not read the probabilities as confidences as they are: calibrate on validation (temperature scaling), "
        "or train with label smoothing; see the reliability diagram.")


def diagnose(facts: Facts) -> list[Finding]:
    """Run every registered check; findings ordered by severity."""
    found = [f for e in FINDINGS.entries() if e.meta.get("check") and (f := e.obj(facts)) is not None]
    return sorted(found, key=lambda x: SEVERITY_ORDER.get(x.severity, 9))


def non_finite_loss(epoch: int, step: int, value: float, lr: float, limit: float | None = None,
                    tensor: str = "loss") -> Finding:
    """The finding for a run stopped by a NaN/inf or exploding loss, or a non-finite gradient or
    weight (made by the pipeline, not a check). ``tensor`` names what was non-finite."""
    if limit is not None:
        title = f"Training diverged: the loss exploded to {value:.4g} (limit {limit:.4g})"
    elif tensor == "loss":
        title = f"Training diverged: the loss became {value}"
    else:
        title = f"Training diverged: the {tensor} became non-finite ({value})"
    evidence = {"epoch": epoch, "step": step, "tensor": tensor, "value": str(value), "lr": lr,
                "certainty": certainty("measured", f"The {tensor} was {value} at epoch {epoch}, step {step}: "
                                       "observed, not estimated.")}
    if tensor == "loss":
        evidence["loss"] = str(value)
    if limit is not None:
        evidence["limit"] = limit
    return Finding(
        "non_finite_loss", "critical", f"{title} at epoch {epoch}, step {step}",
        evidence,
        "Lower the learning rate (try `methodo lr-find`), clip gradients (train.clip.norm), and check the "
        "inputs for NaN/inf; train.nan_guard.policy=skip drops rare bad batches instead of stopping.")


def _measured(what: str, rule: str) -> dict:
    return certainty("measured", f"The {what}, measured on the model at the end of the epoch (alarm when {rule}): "
                     "a direct measurement, not an estimate from a sample.")


def _last_with_grads(monitor: list[dict]) -> dict | None:
    rows = [r for r in monitor if any("g_rms" in v for v in r["layers"].values())]
    return rows[-1] if rows else None


@FINDINGS.register("exploding_gradients", check=True, help="gradient norms grew by orders of magnitude, or are huge")
def exploding_gradients(f: Facts) -> Finding | None:
    rows = [r for r in f.monitor if any("g_rms" in v for v in r["layers"].values())]
    if len(rows) < 1:
        return None
    first, last = rows[0], rows[-1]
    worst = None
    for name, st in last["layers"].items():
        g0 = first["layers"].get(name, {}).get("g_rms")
        g = st.get("g_rms")
        if g is None:
            continue
        growth = g / g0 if g0 else float("inf")
        if g > 1e2 or (len(rows) > 1 and growth > 1e3):
            if worst is None or g > worst[1]:
                worst = (name, g, growth)
    if worst is None:
        return None
    name, g, growth = worst
    return Finding(
        "exploding_gradients", "high", f"Exploding gradients in {name}: gradient RMS {g:.3g}",
        {"layer": name, "grad_rms_last": round(g, 6), "growth_since_first_epoch": round(growth, 2),
         "epoch": last["epoch"], "certainty": _measured("gradient RMS", "> 100 or grown > 1000×")},
        "Lower the learning rate, clip gradients (train.clip.norm=1.0), add normalization layers, or check "
        "the input scaling.")


@FINDINGS.register("vanishing_gradients", check=True,
                    help="a layer's gradients are orders of magnitude smaller than the others'")
def vanishing_gradients(f: Facts) -> Finding | None:
    last = _last_with_grads(f.monitor)
    if last is None:
        return None
    g = {n: st["g_rms"] for n, st in last["layers"].items() if "g_rms" in st}
    if len(g) < 2:
        return None
    top = max(g.values())
    name = min(g, key=g.get)
    if top > 0 and g[name] < 1e-5 * top:
        return Finding(
            "vanishing_gradients", "high", f"Vanishing gradients in {name}: {g[name]:.3g} vs {top:.3g} elsewhere",
            {"layer": name, "grad_rms": g[name], "largest_layer_grad_rms": top,
             "ratio": g[name] / top, "epoch": last["epoch"],
             "certainty": _measured("gradient RMS per layer", "< 1e-5 × the largest layer's")},
            "Use ReLU-family activations, residual connections or normalization layers, and a He/Xavier "
            "initialization; check that the layer is connected to the loss.")
    return None


def _weight_growth(f: Facts) -> dict[str, float]:
    """Per layer, weight RMS at the last monitored epoch over its RMS at the first."""
    if len(f.monitor) < 2:
        return {}
    first, last = f.monitor[0]["layers"], f.monitor[-1]["layers"]
    return {n: st["w_rms"] / first[n]["w_rms"] for n, st in last.items() if n in first and first[n]["w_rms"] > 0}


@FINDINGS.register("exploding_weights", check=True,
                    help="a layer's weights grew by more than 10× since initialization")
def exploding_weights(f: Facts) -> Finding | None:
    growth = _weight_growth(f)
    if not growth:
        return None
    first, last = f.monitor[0], f.monitor[-1]
    name = max(growth, key=growth.get)
    if growth[name] > 10:
        return Finding(
            "exploding_weights", "high", f"Exploding weights in {name}: RMS grew {growth[name]:.1f}× since initialization",
            {"layer": name, "growth": round(growth[name], 2), "w_rms_first": first["layers"][name]["w_rms"],
             "w_rms_last": last["layers"][name]["w_rms"], "epoch": last["epoch"],
             "certainty": _measured("weight RMS", "grown > 10×")},
            "Add weight decay (train.optimizer.weight_decay or train.regularization.decoupled_wd), a max-norm "
            "constraint (train.regularization.max_norm), or lower the learning rate.")
    return None


@FINDINGS.register("vanishing_weights", check=True, help="a layer's weights shrank to under 1% of their initial size")
def vanishing_weights(f: Facts) -> Finding | None:
    ratio = _weight_growth(f)
    if not ratio:
        return None
    first, last = f.monitor[0], f.monitor[-1]
    name = min(ratio, key=ratio.get)
    if ratio[name] < 0.01:
        return Finding(
            "vanishing_weights", "high", f"Vanishing weights in {name}: RMS fell to {100 * ratio[name]:.2g}% of its initial value",
            {"layer": name, "ratio": ratio[name], "w_rms_first": first["layers"][name]["w_rms"],
             "w_rms_last": last["layers"][name]["w_rms"], "epoch": last["epoch"],
             "certainty": _measured("weight RMS", "shrunk under 1%")},
            "Weight decay or an L1/L2 penalty is too strong for this learning rate: lower it.")
    return None


@FINDINGS.register("dead_relu", check=True, help="many ReLU units output 0 for every probed validation input")
def dead_relu(f: Facts) -> Finding | None:
    if not f.monitor or not f.monitor[-1].get("dead_relu"):
        return None
    dead = f.monitor[-1]["dead_relu"]
    name = max(dead, key=dead.get)
    if dead[name] >= 0.5:
        return Finding(
            "dead_relu", "high" if dead[name] >= 0.9 else "medium",
            f"Dead ReLU units: {100 * dead[name]:.0f}% of the units of {name} never activate",
            {"layer": name, "dead_fraction": dead[name], "epoch": f.monitor[-1]["epoch"],
             "all_layers": {k: round(v, 3) for k, v in dead.items()},
             "certainty": certainty("measured", "A unit counts as dead when it outputs 0 for every probed validation "
                                    "input (train.monitor.probe_rows of them): measured on those inputs, so a unit "
                                    "that fires only on rarer inputs would be missed, not invented.")},
            "Lower the learning rate, use LeakyReLU/GELU, check the initialization and the input scaling, "
            "or reduce a large negative bias.")
    return None


@FINDINGS.register("skipped_batches", check=True,
                    help="the NaN guard skipped batches with a non-finite loss or gradient")
def skipped_batches(f: Facts) -> Finding | None:
    if not f.skipped_batches:
        return None
    first = f.skipped_batches[0]
    tensors = sorted({s["tensor"] for s in f.skipped_batches})
    return Finding(
        "skipped_batches", "medium", f"{len(f.skipped_batches)} batch(es) skipped: non-finite {', '.join(tensors)}",
        {"skipped": len(f.skipped_batches), "first_epoch": first["epoch"], "first_step": first["step"],
         "tensors": tensors, "certainty": certainty("exact count", "Every skipped batch is counted.")},
        "Find the rows that produce them (NaN/inf inputs, log of 0, division by 0) or lower the learning rate; "
        "skipping hides the cause.")


FINDINGS.register("non_finite_loss", non_finite_loss, help="the loss became NaN or infinite; training stopped",
                  check=False, example={"epoch": 3, "step": 7, "value": float("nan"), "lr": 0.1})

# The data checks (stage "data": run by `methodo data inspect` and at the start of `methodo run`) live
# with the data stage; importing them registers them here, so one registry lists every finding.
from methodo.data import audit as _data_audit  # noqa: E402
from methodo.transfer import checks as _transfer_checks  # noqa: E402  (domain_mismatch, pretrained_not_helping, ...)
# The drift checks (stage "drift": run by `methodo evaluate` on new data) live with the use of a trained model.
from methodo.use import drift as _drift  # noqa: E402

del _data_audit, _transfer_checks, _drift

# The search's findings (stage "tune": `methodo tune`) live with the tuner; importing them registers them.
from methodo.tune import findings as _tune_findings  # noqa: E402

del _tune_findings

# The trust checks (stages "fairness" and "robustness": run on what those stages measured) live with them.
from methodo.trust import findings as _trust_findings  # noqa: E402

del _trust_findings
