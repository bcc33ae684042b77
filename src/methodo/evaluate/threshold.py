"""Binary decision threshold: sweep it on validation, choose it by a named rule, apply it to test.

The default 0.5 is rarely the right operating point for an imbalanced problem. The sweep is done
on the validation split only; the chosen threshold is then applied once to the test split.

Examples
--------
>>> import numpy as np
>>> from methodo.evaluate.threshold import sweep, choose
>>> p = np.array([0.1, 0.3, 0.35, 0.8, 0.9]); y = np.array([0, 0, 1, 1, 1])
>>> t, _ = choose(sweep(p, y), "max_f1")
>>> 0.3 < t <= 0.35
True
"""

from __future__ import annotations

import numpy as np

RULES = {
    "max_f1": "the threshold with the highest F1 on validation",
    "youden": "the threshold maximizing Youden's J = recall + specificity − 1",
    "target_recall": "the highest threshold whose validation recall reaches the target",
    "target_precision": "the lowest threshold whose validation precision reaches the target",
    "fixed": "a fixed threshold",
}


def _div(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def sweep(p_pos: np.ndarray, y: np.ndarray, thresholds: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Precision, recall, F1, specificity and Youden's J at each threshold (predict 1 when p ≥ t).

    Counts come from the sorted scores of each class (``searchsorted``), as scikit-learn's
    ``_binary_clf_curve`` does it: O((n + T) log n) time and O(n + T) memory for n rows and T
    thresholds — never a thresholds × rows matrix (a million validation rows stay a few MB).
    """
    p_pos, y = np.asarray(p_pos, float), np.asarray(y).astype(bool)
    if thresholds is None:
        thresholds = np.unique(np.concatenate([np.linspace(0.005, 0.995, 199), p_pos]))
    thresholds = np.asarray(thresholds, float)
    pos, neg = np.sort(p_pos[y]), np.sort(p_pos[~y])
    # rows of each class predicted positive (p >= t): all of them minus those below t
    tp = (len(pos) - np.searchsorted(pos, thresholds, side="left")).astype(float)
    fp = (len(neg) - np.searchsorted(neg, thresholds, side="left")).astype(float)
    fn = len(pos) - tp
    tn = len(neg) - fp
    precision, recall = _div(tp, tp + fp), _div(tp, tp + fn)
    specificity = _div(tn, tn + fp)
    f1 = _div(2 * tp, 2 * tp + fp + fn)
    return {"threshold": thresholds, "precision": precision, "recall": recall, "f1": f1,
            "specificity": specificity, "youden": recall + specificity - 1}


def choose(sw: dict[str, np.ndarray], rule: str, value: float | None = None) -> tuple[float, str]:
    """``(threshold, why)`` by ``rule`` (see :data:`RULES`)."""
    t = sw["threshold"]
    if rule == "fixed":
        return float(value), f"fixed at {value}"
    if rule in ("max_f1", "youden"):
        score = np.nan_to_num(sw["f1" if rule == "max_f1" else "youden"], nan=-np.inf)
        i = int(np.argmax(score))
        return float(t[i]), f"{'F1' if rule == 'max_f1' else 'Youden J'} {score[i]:.4f} on validation"
    key = "recall" if rule == "target_recall" else "precision"
    ok = np.nan_to_num(sw[key], nan=-1) >= value
    if not ok.any():
        i = int(np.nanargmax(sw[key]))
        return float(t[i]), f"no threshold reaches {key} {value} on validation; best {sw[key][i]:.4f}"
    i = int(np.flatnonzero(ok).max() if key == "recall" else np.flatnonzero(ok).min())
    return float(t[i]), f"{key} {sw[key][i]:.4f} ≥ {value} on validation"


def at_threshold(p_pos: np.ndarray, y: np.ndarray, t: float) -> dict[str, float | None]:
    """Binary metrics of the decision ``p ≥ t``; ``None`` where undefined."""
    sw = sweep(p_pos, y, np.array([t]))
    pred = np.asarray(p_pos) >= t
    out = {k: (None if np.isnan(sw[k][0]) else float(sw[k][0])) for k in ("precision", "recall", "f1", "specificity")}
    out["accuracy"] = float((pred == np.asarray(y).astype(bool)).mean())
    r, s = out["recall"], out["specificity"]
    out["balanced_accuracy"] = None if r is None or s is None else (r + s) / 2
    return out
