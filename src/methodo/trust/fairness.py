"""Who the errors fall on: per-group metrics, disparity measures, proxies and label bias.

For each sensitive attribute (``data.sensitive``, or the dataset's own) and each split, the rows are
grouped by their value of the attribute and fairlearn's :class:`~fairlearn.metrics.MetricFrame` computes
the metrics of each group beside its size: accuracy, and for a binary task (the positive class is class
index 1, as for every binary metric of methodo) selection rate, true positive rate (recall), false
positive rate, precision and the calibration gap (mean predicted probability of the positive class minus
the observed positive rate). The disparity measures are fairlearn's: demographic parity difference and
ratio, equalized odds difference, equal opportunity difference (binary); the accuracy difference
(multi-class). Decisions are the model's own (the most probable class), as in the headline metrics.

Intervals: a percentile bootstrap of the split's rows (``evaluate.bootstrap`` resamples at
``evaluate.confidence``), computed from weighted counts: a resample is the number of times each row was
drawn, and every group metric is a ratio of count sums, so one matrix product gives all groups and all
metrics of a block of resamples. The point values are fairlearn's; ``tests/test_fairness.py`` checks that
the counts give the same numbers.

On the training rows two questions the metrics cannot answer: is a feature a **proxy** of the attribute
(one feature alone tells a group from the others, ROC AUC), and do the **labels** themselves differ by
group at equal features (a logistic regression on the features and the group: the mean change of the
predicted positive rate when only the group changes, with a bootstrap interval).
"""

from __future__ import annotations

from typing import Any

import numpy as np

BINARY_METRICS = ("accuracy", "selection_rate", "tpr", "fpr", "precision", "calibration_gap")
MULTICLASS_METRICS = ("accuracy",)
BINARY_DISPARITIES = ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
                      "equal_opportunity_difference")
MULTICLASS_DISPARITIES = ("accuracy_difference",)
# the measures held against fairness.bound by group_disparity (differences; the ratio is shown beside)
BOUNDED = ("demographic_parity_difference", "equalized_odds_difference", "equal_opportunity_difference",
           "accuracy_difference")
LABEL_BIAS_RESAMPLES = 200  # refits of the label-bias regression (at most; evaluate.bootstrap when fewer)
# Columns of the count matrix, per group: what every metric of a group is made of.
_COLS = ("n", "correct", "pos_pred", "pos_true", "tp", "fp", "neg_true", "p_sum")


def decisions(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(predicted class, P(positive class) or None)`` from a split's class probabilities."""
    scores = np.asarray(scores)
    pred = scores.argmax(1)
    return pred, (scores[:, 1].astype(np.float64) if scores.shape[1] == 2 else None)


# --------------------------------------------------------------------------- point values (fairlearn)


def _safe(fn):
    """A metric that is undefined (no row to divide by) as NaN instead of a warning and 0."""
    def metric(y_true, y_pred, **kw):
        try:
            return fn(np.asarray(y_true), np.asarray(y_pred), **kw)
        except ZeroDivisionError:
            return float("nan")
    return metric


def _precision(y, p):
    return (y[p == 1] == 1).mean() if (p == 1).any() else float("nan")


def _tpr(y, p):
    return (p[y == 1] == 1).mean() if (y == 1).any() else float("nan")


def _fpr(y, p):
    return (p[y == 0] == 1).mean() if (y == 0).any() else float("nan")


def _calibration_gap(y, p, *, p_pos):
    return float(np.mean(p_pos) - np.mean(y == 1)) if len(y) else float("nan")


def metric_frame(y: np.ndarray, pred: np.ndarray, p_pos: np.ndarray | None, groups: np.ndarray, name: str):
    """fairlearn's :class:`~fairlearn.metrics.MetricFrame` of the split: the metrics of each group and overall."""
    import pandas as pd
    from fairlearn.metrics import MetricFrame, count, selection_rate
    from sklearn.metrics import accuracy_score

    metrics: dict[str, Any] = {"n": count, "accuracy": accuracy_score}
    params = None
    if p_pos is not None:
        metrics.update({"selection_rate": selection_rate, "tpr": _safe(_tpr), "fpr": _safe(_fpr),
                        "precision": _safe(_precision), "calibration_gap": _calibration_gap})
        params = {"calibration_gap": {"p_pos": p_pos}}
    return MetricFrame(metrics=metrics, y_true=np.asarray(y), y_pred=np.asarray(pred),
                       sensitive_features=pd.Series(np.asarray(groups, dtype=object), name=name), sample_params=params)


def disparities(mf, *, binary: bool) -> dict[str, float | None]:
    """The disparity measures of one split from its :class:`~fairlearn.metrics.MetricFrame` (``None`` where
    undefined): the same numbers as fairlearn's ``demographic_parity_difference`` / ``_ratio``,
    ``equalized_odds_difference`` and ``equal_opportunity_difference``, without one more frame each."""
    import warnings

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        diff, ratio = mf.difference(method="between_groups"), mf.ratio(method="between_groups")
    if not binary:
        return {"accuracy_difference": _num(diff["accuracy"])}
    return {"demographic_parity_difference": _num(diff["selection_rate"]),
            "demographic_parity_ratio": _num(ratio["selection_rate"]),
            "equalized_odds_difference": _num(max(diff["tpr"], diff["fpr"])),
            "equal_opportunity_difference": _num(diff["tpr"])}


def _num(v) -> float | None:
    v = float(v)
    return round(v, 6) if np.isfinite(v) else None


# --------------------------------------------------------------------------- bootstrap by counts


def count_matrix(y: np.ndarray, pred: np.ndarray, p_pos: np.ndarray | None, codes: np.ndarray, n_groups: int
                 ) -> np.ndarray:
    """``(rows, groups × 8)``: each row's contribution to each group's counts (:data:`_COLS`)."""
    n = len(y)
    per = np.zeros((n, len(_COLS)), dtype=np.float64)
    per[:, 0] = 1
    per[:, 1] = pred == y
    per[:, 2] = pred == 1
    per[:, 3] = y == 1
    per[:, 4] = (pred == 1) & (y == 1)
    per[:, 5] = (pred == 1) & (y == 0)
    per[:, 6] = y == 0
    per[:, 7] = 0.0 if p_pos is None else p_pos
    M = np.zeros((n, n_groups * len(_COLS)), dtype=np.float64)
    for g in range(n_groups):
        m = codes == g
        M[m, g * len(_COLS):(g + 1) * len(_COLS)] = per[m]
    return M


def from_counts(C: np.ndarray, n_groups: int, *, binary: bool) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Group metrics ``(B, groups)`` and disparities ``(B,)`` from summed counts ``(B, groups × 8)`` (NaN where
    a ratio has nothing to divide by, or a disparity has fewer than 2 groups present)."""
    C = C.reshape(len(C), n_groups, len(_COLS))
    n, correct, pos_pred, pos_true, tp, fp, neg_true, p_sum = (C[:, :, i] for i in range(len(_COLS)))
    with np.errstate(divide="ignore", invalid="ignore"):
        div = lambda a, b: np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)  # noqa: E731
        m = {"accuracy": div(correct, n)}
        if binary:
            m.update(selection_rate=div(pos_pred, n), tpr=div(tp, pos_true), fpr=div(fp, neg_true),
                     precision=div(tp, pos_pred), calibration_gap=div(p_sum - pos_true, n))
    present = n > 0

    def spread(v):
        v = np.where(present, v, np.nan)
        ok = (~np.isnan(v)).sum(1) >= 2
        with np.errstate(all="ignore"):
            hi, lo = np.nanmax(np.where(ok[:, None], v, 0), 1), np.nanmin(np.where(ok[:, None], v, 0), 1)
        return np.where(ok, hi - lo, np.nan), np.where(ok & (hi > 0), lo / np.where(hi > 0, hi, 1), np.nan)

    d: dict[str, np.ndarray] = {}
    if binary:
        d["demographic_parity_difference"], d["demographic_parity_ratio"] = spread(m["selection_rate"])
        tpr_d, fpr_d = spread(m["tpr"])[0], spread(m["fpr"])[0]
        d["equalized_odds_difference"] = np.fmax(tpr_d, fpr_d)
        d["equal_opportunity_difference"] = tpr_d
    else:
        d["accuracy_difference"] = spread(m["accuracy"])[0]
    return m, d


def _pairs(m: dict[str, np.ndarray], *, binary: bool) -> dict[str, tuple[str, int, int]]:
    """For each disparity measure, the per-group metric behind it and the two groups furthest apart on it
    (``(metric, highest, lowest)``, from the point values ``m``, shape ``(1, groups)``)."""
    def far(metric):
        v = m[metric][0]
        if np.isnan(v).all():
            return None
        return metric, int(np.nanargmax(v)), int(np.nanargmin(v))

    if not binary:
        return {"accuracy_difference": far("accuracy")}
    tpr, fpr = far("tpr"), far("fpr")
    gap = lambda t: -1.0 if t is None else m[t[0]][0][t[1]] - m[t[0]][0][t[2]]  # noqa: E731
    return {"demographic_parity_difference": far("selection_rate"), "demographic_parity_ratio": far("selection_rate"),
            "equalized_odds_difference": tpr if gap(tpr) >= gap(fpr) else fpr, "equal_opportunity_difference": tpr}


def bootstrap(y, pred, p_pos, codes, n_groups: int, *, binary: bool, n_boot: int, seed: int, level: float,
              block_values: int = 4_000_000):
    """``(group intervals {metric: [[lo, hi] or None per group]}, disparity intervals {measure: [lo, hi]})``:
    the percentile bootstrap of the rows (``n_boot`` resamples, the seed's generator), a block of resamples
    at a time (at most ``block_values`` counts in memory).

    A disparity's interval is that of the *signed* gap between the two groups furthest apart on all the rows
    (the ratio: lowest over highest): the bootstrap of ``max − min`` over groups is biased away from zero
    (a resample's largest gap is never negative), so its interval would exclude zero even for equal groups."""
    n = len(y)
    M = count_matrix(y, pred, p_pos, codes, n_groups)
    m0, _ = from_counts(M.sum(0, keepdims=True), n_groups, binary=binary)
    pairs = _pairs(m0, binary=binary)
    rng = np.random.default_rng(seed)
    block = max(1, block_values // max(n, 1))
    gm: dict[str, list] = {}
    dm: dict[str, list] = {k: [] for k in pairs}
    done = 0
    while done < n_boot:
        b = min(block, n_boot - done)
        W = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(b)]).astype(np.float64)
        m, _ = from_counts(W @ M, n_groups, binary=binary)
        for k, v in m.items():
            gm.setdefault(k, []).append(v)
        for k, pair in pairs.items():
            if pair is None:
                continue
            metric, hi, lo = pair
            with np.errstate(divide="ignore", invalid="ignore"):
                dm[k].append(m[metric][:, lo] / m[metric][:, hi] if k.endswith("ratio")
                             else m[metric][:, hi] - m[metric][:, lo])
        done += b
    alpha = (1 - level) / 2

    def interval(v: np.ndarray):
        v = v[np.isfinite(v)]
        if len(v) < 0.5 * n_boot:
            return None
        return [round(float(np.quantile(v, alpha)), 6), round(float(np.quantile(v, 1 - alpha)), 6)]

    groups = {k: [interval(np.concatenate(v)[:, g]) for g in range(n_groups)] for k, v in gm.items()}
    return groups, {k: (interval(np.concatenate(v)) if v else None) for k, v in dm.items()}


# --------------------------------------------------------------------------- one split, one attribute


def split_fairness(y, scores, groups, name: str, *, n_boot: int, seed: int, level: float, min_group: int = 1
                   ) -> dict:
    """The per-group metrics (with ``n`` and intervals), overall values and disparities (with intervals) of
    one split under one sensitive attribute.

    The disparities compare the groups of at least ``min_group`` rows (``disparity_groups``; the others are
    listed in ``too_small``: a gap measured on 5 rows says nothing, ``group_underrepresented`` reports them),
    or every group when fewer than two are that large."""
    y = np.asarray(y).astype(np.int64)
    pred, p_pos = decisions(scores)
    binary = p_pos is not None
    groups = np.asarray(groups, dtype=object).astype(str)
    names, codes = np.unique(groups, return_inverse=True)
    mf = metric_frame(y, pred, p_pos, groups, name)
    by = mf.by_group
    out_groups = {}
    for g in names:
        row = by.loc[g]
        out_groups[str(g)] = {k: (int(row[k]) if k == "n" else _num(row[k])) for k in by.columns}
    overall = {k: (int(v) if k == "n" else _num(v)) for k, v in mf.overall.items()}
    big = [str(g) for g in names if out_groups[str(g)]["n"] >= min_group]
    if len(big) < 2:
        big = [str(g) for g in names]
    rows = np.isin(groups, big)
    d = disparities(mf if rows.all() else metric_frame(y[rows], pred[rows], None if p_pos is None else p_pos[rows],
                                                       groups[rows], name), binary=binary)
    res = {"groups": out_groups, "overall": overall, "disparity": d, "disparity_groups": big,
           "too_small": [str(g) for g in names if str(g) not in big]}
    if n_boot > 0:
        giv, _ = bootstrap(y, pred, p_pos, codes, len(names), binary=binary, n_boot=n_boot, seed=seed, level=level)
        res["intervals"] = {str(g): {k: v[i] for k, v in giv.items()} for i, g in enumerate(names)}
        bnames, bcodes = np.unique(groups[rows], return_inverse=True)
        _, div = bootstrap(y[rows], pred[rows], None if p_pos is None else p_pos[rows], bcodes, len(bnames),
                           binary=binary, n_boot=n_boot, seed=seed + 1, level=level)
        res["disparity_intervals"] = div
    return res


# --------------------------------------------------------------------------- training rows: proxies, labels


def _excluded(feature: str, attr: str) -> bool:
    """The sensitive column itself as a feature (with data.sensitive_as_feature), one-hot columns included."""
    return feature == attr or feature.startswith((f"{attr}_", f"{attr}=", f"{attr}__"))


def proxies(X: np.ndarray, feature_names: list[str], groups: np.ndarray, attr: str, *, top: int = 5,
            min_rows: int = 10) -> list[dict]:
    """Features that tell a group from the others on their own: for each group (of at least ``min_rows``
    rows) and each feature, the ROC AUC of the feature's value as a score of membership, folded to ≥ 0.5
    (a feature that ranks the group low predicts it as well). The best ``top``, highest first."""
    from sklearn.metrics import roc_auc_score

    X = np.asarray(X, dtype=np.float64)
    groups = np.asarray(groups).astype(str)
    found = []
    for g in np.unique(groups):
        member = groups == g
        if member.sum() < min_rows or (~member).sum() < min_rows:
            continue
        for j, f in enumerate(feature_names):
            if _excluded(f, attr) or np.ptp(X[:, j]) == 0:
                continue
            auc = roc_auc_score(member, X[:, j])
            found.append({"feature": f, "group": str(g), "auc": round(float(max(auc, 1 - auc)), 4),
                          "direction": "higher" if auc >= 0.5 else "lower",
                          "rate_in_group": round(float(X[member, j].mean()), 4),
                          "rate_elsewhere": round(float(X[~member, j].mean()), 4)})
    best: dict[str, dict] = {}
    for p in sorted(found, key=lambda p: -p["auc"]):
        best.setdefault(p["feature"], p)  # each feature once, at the group it predicts best
    return list(best.values())[:top]


def label_bias(X: np.ndarray, y: np.ndarray, groups: np.ndarray, attr: str, feature_names: list[str], *,
               seed: int, n_boot: int = 200, level: float = 0.95, min_rows: int = 10) -> dict | None:
    """Do the training labels differ by group at equal features? A linear probability model (least squares
    of the binary label on the features and one indicator per group): a group's coefficient is the change of
    the positive rate when only the group changes, features held equal. Each group against the reference
    group (the highest adjusted rate), with a bootstrap interval (``n_boot`` refits, one ``lstsq`` each).
    ``None`` for fewer than 2 groups of ``min_rows`` rows."""
    y = np.asarray(y).astype(np.float64)
    groups = np.asarray(groups).astype(str)
    keep_cols = [j for j, f in enumerate(feature_names) if not _excluded(f, attr)]
    X = np.asarray(X, dtype=np.float64)[:, keep_cols]
    names, counts = np.unique(groups, return_counts=True)
    big = [str(g) for g, c in zip(names, counts) if c >= min_rows]
    if len(big) < 2 or len(np.unique(y)) < 2:
        return None
    rows = np.isin(groups, big)
    X, y, groups = X[rows], y[rows], groups[rows]
    X = X[:, np.ptp(X, 0) > 0]
    X = (X - X.mean(0)) / X.std(0)
    D = np.hstack([X, (groups[:, None] == np.array(big)[None, :]).astype(np.float64)])  # no intercept: one per group

    def effects(idx):
        beta = np.linalg.lstsq(D[idx], y[idx], rcond=None)[0]
        return beta[X.shape[1]:] + X[idx].mean(0) @ beta[:X.shape[1]]  # each group's rate at the mean features

    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # small solves: BLAS threads only add contention
        rates = dict(zip(big, effects(np.arange(len(y)))))
        ref = max(rates, key=rates.get)
        r = big.index(ref)
        rng = np.random.default_rng(seed)
        boot = []
        for _ in range(n_boot):
            idx = rng.integers(0, len(y), len(y))
            if all((groups[idx] == g).any() for g in big):
                e = effects(idx)
                boot.append(e - e[r])
    boot = np.asarray(boot)
    alpha = (1 - level) / 2
    out = {"model": "linear probability model (least squares on the features and the group)",
           "reference_group": ref, "rates_at_equal_features": {g: round(float(v), 4) for g, v in rates.items()},
           "gap": {}, "interval": {}, "rows": int(len(y)), "resamples": n_boot, "level": level,
           "observed_positive_rate": {g: round(float(y[groups == g].mean()), 4) for g in big}}
    for i, g in enumerate(big):
        if g == ref:
            continue
        out["gap"][g] = round(float(rates[g] - rates[ref]), 4)
        out["interval"][g] = ([round(float(np.quantile(boot[:, i], alpha)), 4),
                               round(float(np.quantile(boot[:, i], 1 - alpha)), 4)]
                              if len(boot) >= 0.5 * n_boot else None)
    return out


# --------------------------------------------------------------------------- the pipeline's stage


def sensitive_groups(ds, indices: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """attribute → split → the group of each row of the split."""
    return {attr: {s: np.asarray(v)[rows] for s, rows in indices.items()} for attr, v in (ds.sensitive or {}).items()}


def evaluate_fairness(prep, preds: dict, *, seed: int, n_boot: int, level: float, fcfg) -> dict:
    """``summary.json`` → ``fairness``: for each attribute, each split's per-group metrics and disparities (with
    intervals), its proxies and label bias on the training rows; the thresholds the findings use."""
    ds, data = prep.ds, prep.data
    splits = [s for s in ("train", "val", "test") if s in data.indices]
    binary = ds.n_classes == 2
    out: dict[str, Any] = {
        "positive_class": ds.class_names[1] if binary else None,
        "decision": "the most probable class (as the headline metrics)",
        "sensitive_as_feature": bool(getattr(prep.cfg.data, "sensitive_as_feature", False)),
        "bound": fcfg.bound, "min_group": fcfg.min_group, "proxy_auc": fcfg.proxy_auc, "label_gap": fcfg.label_gap,
        "level": level, "resamples": n_boot, "attributes": {},
    }
    Xtr = None
    if ds.kind == "tabular":  # the training rows in feature units (after the feature steps, before scaling)
        pre = data.preprocessor
        Xtr = data.inputs("train").numpy().astype(np.float64)
        if pre.mean is not None:
            Xtr = Xtr * pre.std + pre.mean
    for k, (attr, by_split) in enumerate(sensitive_groups(ds, data.indices).items()):
        a: dict[str, Any] = {"splits": {}}
        for i, s in enumerate(splits):
            a["splits"][s] = split_fairness(data.raw_y[s], preds[s], by_split[s], attr, min_group=fcfg.min_group,
                                            n_boot=n_boot if s != "train" else 0, seed=seed + 101 * k + i, level=level)
        if Xtr is not None:
            a["proxies"] = proxies(Xtr, data.feature_names, by_split["train"], attr)
            if binary:
                a["label_bias"] = label_bias(Xtr, data.raw_y["train"], by_split["train"], attr, data.feature_names,
                                             seed=seed + 7, n_boot=min(n_boot, LABEL_BIAS_RESAMPLES) or 50,
                                             level=level)
        out["attributes"][attr] = a
    return out


def tracked_metrics(fairness: dict) -> dict[str, float]:
    """MLflow metrics: each attribute's test disparities and per-group test accuracy."""
    out = {}
    for attr, a in fairness.get("attributes", {}).items():
        test = a["splits"].get("test", {})
        for k, v in test.get("disparity", {}).items():
            if v is not None:
                out[f"fairness_{attr}_{k}"] = v
        for g, m in test.get("groups", {}).items():
            for k in ("accuracy", "selection_rate"):
                if m.get(k) is not None:
                    out[f"fairness_{attr}_{g}_{k}"] = m[k]
    import re

    return {re.sub(r"[^A-Za-z0-9_\-./ ]", "_", k): v for k, v in out.items()}
