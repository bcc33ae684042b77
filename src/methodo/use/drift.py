"""Does new data look like the training data? Statistics saved at run time, and the drift findings.

``methodo run`` saves ``drift.json`` beside the model (stage 3): statistics of the **training split**
only, in the units the user's data comes in (before any feature step or scaling):

- tables: per numeric column, its range, mean and standard deviation over every training row, and a
  seeded sample of at most :data:`SAMPLE` values; per categorical column, its category counts;
- images: per image and channel, the mean and the standard deviation of its pixels (each a "feature"
  ``channel 0 mean``, ...), summarized the same way;
- the target: class counts, label counts (multilabel), or the values' summary and a sample (regression).

``methodo evaluate`` compares new labeled data with them through four findings, registered in
``FINDINGS`` with ``stage="drift"`` (pure functions of :class:`DriftFacts`):

- ``data_drift``: a two-sample test per feature — Kolmogorov-Smirnov for numbers (the new values
  against the saved training sample), chi-square for categories — with the Benjamini-Hochberg
  correction over the features (``scipy.stats.false_discovery_control``): a feature drifts when its
  adjusted p-value is below :data:`ALPHA`;
- ``label_shift``: class (or label) proportions against training, chi-square goodness of fit
  (KS on the values for regression);
- ``performance_drop``: a metric on the new data outside the run's own test interval, on the bad side;
- ``out_of_range_inputs``: values outside the range seen in training (the model extrapolates there), more
  often than data like the training split would be (a binomial test against 2/(n+1) per feature).

A run dir written before ``drift.json`` existed has no statistics: the checks then say that they
need a re-run, instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from methodo.findings import FINDINGS, Finding, certainty

SAMPLE = 1000  # training values kept per feature (a seeded sample) for the two-sample tests
ALPHA = 0.05  # significance level, after the Benjamini-Hochberg correction over the features
TOP = 5  # features shown in a finding's evidence
FORMAT = 1


def _r(v: float, nd: int = 6) -> float:
    return float(round(float(v), nd))


def _g(v: float) -> float:
    """A value as shown in evidence: 7 significant digits (float32's), not the float64 expansion."""
    return float(f"{float(v):.7g}")


def _summary(values: np.ndarray, rng_rows: np.ndarray) -> dict:
    """Range, mean and std over every finite value, and the values of the sampled rows (finite ones)."""
    v = values[np.isfinite(values)]
    if not len(v):
        return {"n": 0, "min": None, "max": None, "mean": None, "std": None, "sample": []}
    s = values[rng_rows]
    s = s[np.isfinite(s)]
    return {"n": int(len(v)), "min": float(v.min()), "max": float(v.max()), "mean": _r(v.mean(dtype=np.float64)),
            "std": _r(v.std(dtype=np.float64)), "sample": [float(np.float32(x)) for x in s]}


def image_features(X: np.ndarray) -> dict[str, np.ndarray]:
    """Per image and channel: the mean and the standard deviation of its pixels."""
    X = np.asarray(X, dtype=np.float32)
    flat = X.reshape(len(X), X.shape[1], -1)
    out = {}
    for c in range(X.shape[1]):
        out[f"channel {c} mean"] = flat[:, c].mean(1, dtype=np.float64)
        out[f"channel {c} std"] = flat[:, c].std(1, dtype=np.float64)
    return out


def reference_stats(ds, train_rows: np.ndarray, *, seed: int) -> dict:
    """``drift.json``: statistics of the training rows of ``ds`` (a :class:`~methodo.data.Dataset`)."""
    from methodo.evaluate.baselines import sample_rows
    from methodo.tasks import task_spec

    rows = np.asarray(train_rows)
    keep = sample_rows(len(rows), SAMPLE, seed=seed)
    out: dict[str, Any] = {"format": FORMAT, "kind": ds.kind, "task": ds.task, "n_train": int(len(rows)),
                           "sample_rows": int(len(keep)), "features": {}, "categorical": {}}
    if ds.kind == "tabular":
        X = np.asarray(ds.X[rows], dtype=np.float64)
        for j, name in enumerate(ds.feature_names):
            out["features"][name] = _summary(X[:, j], keep)
        for j, name in enumerate(ds.cat_names):
            col = ds.cat[rows, j]
            vals, counts = np.unique(np.where(np.equal(col, None), "(missing)", col).astype(str), return_counts=True)
            out["categorical"][name] = {str(v): int(c) for v, c in zip(vals, counts)}
    elif ds.kind == "image":
        for name, v in image_features(ds.X[rows]).items():
            out["features"][name] = _summary(v, keep)
    else:
        out["skipped"] = "drift statistics are computed for tables and images"
    y = ds.y[rows]
    spec = task_spec(ds.task)
    if spec.has_classes:
        counts = np.bincount(y, minlength=ds.n_classes)
        out["target"] = {"classes": {c: int(n) for c, n in zip(ds.class_names, counts)}}
    elif ds.task == "multilabel":
        out["target"] = {"labels": {c: int(n) for c, n in zip(ds.class_names, (y >= 0.5).sum(0))}, "n": int(len(y))}
    elif spec.standardize_target:
        v = np.asarray(y, dtype=np.float64)
        out["target"] = {**_summary(v, keep), "median": _r(np.median(v))}
    return out


def training_targets(ref: dict, task: str) -> np.ndarray | None:
    """A stand-in for the training labels with the same class prior, label frequencies, or mean and median:
    what the dummy baselines are fitted on (they read nothing else)."""
    t = (ref or {}).get("target") or {}
    if "classes" in t:
        return np.repeat(np.arange(len(t["classes"])), list(t["classes"].values())).astype(np.int64)
    if "labels" in t:
        n, counts = int(t["n"]), list(t["labels"].values())
        return (np.arange(n)[:, None] < np.asarray(counts)[None, :]).astype(np.float32)
    if "mean" in t and t.get("mean") is not None:
        m, d = float(t["mean"]), float(t["median"])
        return np.array([d, d, 3 * m - 2 * d], dtype=np.float64)  # median d, mean m
    return None


# --------------------------------------------------------------------------- the checks


@dataclass
class DriftFacts:
    """What the drift checks may look at. ``reference`` is the run's ``drift.json`` (None: an older run)."""

    task: str
    reference: dict | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)  # feature → new values (numbers)
    categorical: dict[str, np.ndarray] = field(default_factory=dict)  # column → new values (strings or None)
    y: np.ndarray | None = None  # new labels (class indices, 0/1 rows, values)
    class_names: list[str] | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)  # on the new data
    run_metrics: dict[str, float | None] = field(default_factory=dict)  # the run's own test metrics
    run_intervals: dict[str, list | None] = field(default_factory=dict)  # ... and their intervals
    alpha: float = ALPHA


def _bh(pvalues: list[float]) -> np.ndarray:
    from scipy.stats import false_discovery_control

    p = np.clip(np.nan_to_num(np.asarray(pvalues, dtype=np.float64), nan=1.0), 0.0, 1.0)
    return false_discovery_control(p, method="bh") if len(p) else p


def feature_tests(f: DriftFacts) -> list[dict]:
    """One two-sample test per feature present in both: KS for numbers, chi-square for categories."""
    from scipy.stats import chi2_contingency, ks_2samp

    ref = f.reference or {}
    tests = []
    for name, new in f.features.items():
        r = (ref.get("features") or {}).get(name)
        new = np.asarray(new, dtype=np.float64)
        new = new[np.isfinite(new)]
        if not r or len(r.get("sample") or []) < 5 or len(new) < 5:
            continue
        res = ks_2samp(np.asarray(r["sample"], dtype=np.float64), new)
        tests.append({"feature": name, "test": "ks", "statistic": _r(res.statistic, 4), "p": float(res.pvalue),
                      "train_mean": r.get("mean"), "new_mean": _r(new.mean(), 6)})
    for name, new in f.categorical.items():
        counts = (ref.get("categorical") or {}).get(name)
        if not counts or len(new) < 5:
            continue
        vals = np.where(np.equal(new, None), "(missing)", new).astype(str)
        cats = sorted(set(counts) | set(vals.tolist()))
        seen, got = np.unique(vals, return_counts=True)
        new_counts = dict(zip(seen.tolist(), got.tolist()))
        table = np.array([[counts.get(c, 0) for c in cats], [new_counts.get(c, 0) for c in cats]], dtype=np.float64)
        table = table[:, table.sum(0) > 0]
        if table.shape[1] < 2:
            continue
        chi2, p, _, _ = chi2_contingency(table)
        unseen = sorted(set(vals.tolist()) - set(counts))
        tests.append({"feature": name, "test": "chi2", "statistic": _r(chi2, 4), "p": float(p),
                      "unseen_categories": unseen[:5]})
    adjusted = _bh([t["p"] for t in tests])
    for t, a in zip(tests, adjusted):
        t["p_adjusted"] = float(a)
    return tests


@FINDINGS.register("data_drift", stage="drift", check=False,
                   help="new inputs are distributed unlike the training split: a two-sample test per feature "
                        "(KS for numbers, chi-square for categories; per-channel image statistics), "
                        "Benjamini-Hochberg corrected")
def data_drift(f: DriftFacts) -> Finding | None:
    tests = feature_tests(f)
    drifted = sorted((t for t in tests if t["p_adjusted"] < f.alpha), key=lambda t: t["p_adjusted"])
    if not drifted:
        return None
    share = len(drifted) / len(tests)
    worst = max((t["statistic"] for t in drifted if t["test"] == "ks"), default=0.0)
    top = [{k: (round(v, 6) if isinstance(v, float) and k.startswith("p") else v) for k, v in t.items()}
           for t in drifted[:TOP]]
    return Finding(
        "data_drift", "high" if share >= 0.3 or worst >= 0.3 else "medium",
        f"{len(drifted)} of {len(tests)} features are distributed differently from the training split",
        {"drifted": len(drifted), "tested": len(tests), "alpha": f.alpha, "correction": "benjamini-hochberg",
         "train_sample": (f.reference or {}).get("sample_rows"), "top": top,
         "certainty": certainty("test", f"{len(drifted)} of {len(tests)} per-feature two-sample tests reject 'same "
                                "distribution as training' after the Benjamini-Hochberg correction.",
                                p_value=drifted[0]["p_adjusted"], test="two-sample KS / chi-square per feature",
                                correction="benjamini-hochberg")},
        "The model meets inputs unlike those it learned from: find out what changed (source, sensor, preprocessing, "
        "population); watch the metrics on the drifted part; retrain on data that includes the new conditions.")


@FINDINGS.register("label_shift", stage="drift", check=False,
                   help="the class (or label, or target value) proportions of the new data differ from training")
def label_shift(f: DriftFacts) -> Finding | None:
    from scipy.stats import chisquare, ks_2samp

    t = (f.reference or {}).get("target") or {}
    if f.y is None or len(f.y) < 5 or not t:
        return None
    y = np.asarray(f.y)
    if "classes" in t:
        train = np.asarray(list(t["classes"].values()), dtype=np.float64)
        new = np.bincount(y.astype(np.int64), minlength=len(train)).astype(np.float64)[:len(train)]
        p_train = train / train.sum()
        p = float(chisquare(new, p_train * new.sum()).pvalue) if (p_train > 0).all() else 0.0
        diff = new / new.sum() - p_train
        if p >= f.alpha or np.abs(diff).max() < 0.02:
            return None
        names = list(t["classes"])
        order = np.argsort(-np.abs(diff))[:TOP]
        return Finding(
            "label_shift", "high" if np.abs(diff).max() >= 0.15 else "medium",
            f"Class proportions moved: {names[order[0]]} is {100 * new[order[0]] / new.sum():.1f}% of the new rows, "
            f"{100 * p_train[order[0]]:.1f}% in training",
            {"test": "chi-square goodness of fit", "p": round(p, 6), "rows": int(new.sum()),
             "certainty": certainty("test", "A chi-square goodness-of-fit test rejects the training class "
                                    "proportions for the new rows.", p_value=p, test="chi-square goodness of fit"),
             "classes": {names[i]: {"train": round(float(p_train[i]), 4), "new": round(float(new[i] / new.sum()), 4)}
                         for i in order}},
            "Accuracy and the probabilities assume the training prior: report per-class and balanced metrics, "
            "re-choose the decision threshold, or recalibrate the prior on the new proportions (or retrain).")
    if "labels" in t:
        n_train = float(t["n"])
        p_train = np.asarray(list(t["labels"].values()), dtype=np.float64) / n_train
        p_new = (y >= 0.5).mean(0)
        diff = p_new - p_train
        i = int(np.argmax(np.abs(diff)))
        if abs(diff[i]) < 0.05:
            return None
        names = list(t["labels"])
        return Finding(
            "label_shift", "medium", f"Label {names[i]} is present in {100 * p_new[i]:.1f}% of the new rows, "
            f"{100 * p_train[i]:.1f}% in training",
            {"labels": {names[j]: {"train": round(float(p_train[j]), 4), "new": round(float(p_new[j]), 4)}
                        for j in np.argsort(-np.abs(diff))[:TOP]}, "rows": int(len(y)),
             "certainty": certainty("threshold rule", "A label's share moved by at least 5 points between training "
                                    "and the new rows (exact counts, no test).")},
            "Per-label thresholds and frequencies learned in training no longer hold: check per-label metrics and "
            "re-choose thresholds on data like the new one.")
    sample = t.get("sample") or []
    if len(sample) < 5:
        return None
    res = ks_2samp(np.asarray(sample, dtype=np.float64), y.astype(np.float64))
    if res.pvalue >= f.alpha:
        return None
    return Finding(
        "label_shift", "medium", f"The target values moved: mean {float(y.mean()):.4g} on the new rows, "
        f"{t['mean']:.4g} in training",
        {"test": "kolmogorov-smirnov", "statistic": round(float(res.statistic), 4), "p": round(float(res.pvalue), 6),
         "train_mean": t["mean"], "new_mean": round(float(y.mean()), 6), "train_std": t["std"],
         "new_std": round(float(y.std()), 6),
         "certainty": certainty("test", "A two-sample Kolmogorov-Smirnov test rejects the training target "
                                "distribution for the new rows.", p_value=float(res.pvalue),
                                test="two-sample kolmogorov-smirnov")},
        "The model was fitted to another range of targets: check the errors by target range and retrain on data "
        "covering the new values.")


@FINDINGS.register("performance_drop", stage="drift", check=False,
                   help="a metric on the new data falls outside the run's own test interval, on the bad side")
def performance_drop(f: DriftFacts) -> Finding | None:
    from methodo.evaluate.metrics import METRICS

    dropped = {}
    for name, new in f.metrics.items():
        iv = f.run_intervals.get(name)
        if new is None or not iv or name not in METRICS:
            continue
        higher = METRICS.entry(name).meta.get("higher_is_better", True)
        if (higher and new < iv[0]) or (not higher and new > iv[1]):
            dropped[name] = {"new": round(float(new), 6), "run_test": f.run_metrics.get(name),
                             "run_test_interval": [round(float(v), 6) for v in iv]}
    if not dropped:
        return None
    from methodo.tasks import task_spec

    key = task_spec(f.task).headline[0]
    first = key if key in dropped else next(iter(dropped))
    d = dropped[first]
    return Finding(
        "performance_drop", "high" if key in dropped else "medium",
        f"{first} on the new data ({d['new']:.4g}) is outside the run's test interval "
        f"[{d['run_test_interval'][0]:.4g}, {d['run_test_interval'][1]:.4g}]",
        {"metrics": dropped, "dropped": len(dropped),
         "certainty": certainty("bootstrap interval", f"{first} on the new data lies outside the bootstrap interval "
                                "of the run's own test score.", interval=d["run_test_interval"])},
        "The model does worse here than its test split promised: look at the drift findings for the cause; "
        "do not ship it on this data before retraining or fine-tuning on data like it.")


@FINDINGS.register("out_of_range_inputs", stage="drift", check=False,
                   help="new inputs hold values outside the range seen in training: the model extrapolates there")
def out_of_range_inputs(f: DriftFacts) -> Finding | None:
    ref = (f.reference or {}).get("features") or {}
    per, any_row, n = {}, None, 0
    for name, new in f.features.items():
        r = ref.get(name)
        if not r or r.get("min") is None:
            continue
        v = np.asarray(new, dtype=np.float64)
        n = len(v)
        with np.errstate(invalid="ignore"):
            out = (v < r["min"]) | (v > r["max"])
        if out.any():
            per[name] = {"rows": int(out.sum()), "train_range": [_g(r["min"]), _g(r["max"])],
                         "new_range": [_g(np.nanmin(v)), _g(np.nanmax(v))]}
        any_row = out if any_row is None else any_row | out
    if not per:
        return None
    from scipy.stats import binomtest

    rows = int(any_row.sum())
    share = rows / max(n, 1)
    # Even data like the training split falls outside the range of n training values with probability
    # 2 / (n + 1) per feature: only more out-of-range rows than that is evidence of new territory.
    n_train = int((f.reference or {}).get("n_train") or 0)
    expected = min(1.0, 2 * len(f.features) / (n_train + 1)) if n_train else 0.0
    p = float(binomtest(rows, n, expected, alternative="greater").pvalue) if 0 < expected < 1 else 0.0
    if p >= f.alpha:
        return None
    top = dict(sorted(per.items(), key=lambda kv: -kv[1]["rows"])[:TOP])
    return Finding(
        "out_of_range_inputs", "medium" if share >= 0.01 else "low",
        f"{rows} of {n} new rows ({100 * share:.1f}%) hold values outside the training range "
        f"({len(per)} feature{'s' * (len(per) > 1)}); data like the training split would give about {100 * expected:.1f}%",
        {"rows": rows, "share": round(share, 4), "expected_share": round(expected, 4), "p": round(p, 6),
         "features": len(per), "top": top,
         "certainty": certainty("test", "A one-sided binomial test: more out-of-range rows than data like the "
                                "training split gives (2/(n+1) per feature).", p_value=p,
                                test="binomial, one-sided")},
        "Predictions there are extrapolations the model never learned: treat them with caution, check those rows "
        "for unit or entry errors, and collect training data covering the new range.")


DRIFT_CHECKS = ("data_drift", "label_shift", "performance_drop", "out_of_range_inputs")


def check_drift(facts: DriftFacts) -> list[Finding]:
    """Every drift finding on ``facts``, most severe first."""
    from methodo.findings import SEVERITY_ORDER

    found = [x for e in FINDINGS.entries() if e.meta.get("stage") == "drift" and (x := e.obj(facts)) is not None]
    return sorted(found, key=lambda x: SEVERITY_ORDER.get(x.severity, 9))
