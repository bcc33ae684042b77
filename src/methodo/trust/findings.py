"""The trust findings: pure functions of what the fairness and robustness stages measured.

Registered in the one ``FINDINGS`` registry with ``stage="fairness"`` (:class:`FairnessFacts`: the run's
``summary.json`` → ``fairness``) or ``stage="robustness"`` (:class:`RobustnessFacts`: ``robustness``), so
``methodo list findings`` shows them beside the others and ``tests/test_contracts.py`` runs each on standard
facts. Each says how sure it is in ``evidence["certainty"]`` (``method`` and a ``statement``; the interval
when there is one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from methodo.findings import FINDINGS, Finding, certainty


@dataclass
class FairnessFacts:
    """``fairness``: the per-group metrics and disparities of each attribute and split (:mod:`methodo.trust.fairness`)."""

    fairness: dict | None = None

    def attributes(self) -> dict[str, dict]:
        return (self.fairness or {}).get("attributes", {}) or {}

    def get(self, key: str, default):
        return (self.fairness or {}).get(key, default)


@dataclass
class RobustnessFacts:
    """``robustness``: accuracy under attack and corruption (:mod:`methodo.trust.robustness`)."""

    robustness: dict | None = None
    thresholds: dict = field(default_factory=dict)  # collapse, small_eps, corruption_points, confidence

    def get(self, key: str, default):
        return (self.robustness or {}).get(key, default)

    def limit(self, key: str, default: float) -> float:
        return float(self.thresholds.get(key, (self.robustness or {}).get("thresholds", {}).get(key, default)))


# --------------------------------------------------------------------------- fairness

# the per-group metric behind each disparity measure: which groups it is about
_BEHIND = {"demographic_parity_difference": "selection_rate", "equal_opportunity_difference": "tpr",
           "accuracy_difference": "accuracy"}
_BOUNDED = ("demographic_parity_difference", "equalized_odds_difference", "equal_opportunity_difference",
            "accuracy_difference")


def _extremes(groups: dict, metric: str) -> tuple[tuple[str, float], tuple[str, float]] | None:
    vals = {g: m.get(metric) for g, m in groups.items() if m.get(metric) is not None}
    if len(vals) < 2:
        return None
    hi, lo = max(vals, key=vals.get), min(vals, key=vals.get)
    return (hi, vals[hi]), (lo, vals[lo])


@FINDINGS.register("group_disparity", stage="fairness", check=False,
                   help="a disparity measure between groups of a sensitive attribute (demographic parity, equalized "
                        "odds, equal opportunity, accuracy) is beyond fairness.bound on the test split")
def group_disparity(f: FairnessFacts) -> Finding | None:
    bound = float(f.get("bound", 0.1))
    worst = None
    for attr, a in f.attributes().items():
        test = a.get("splits", {}).get("test") or {}
        for k in _BOUNDED:
            v = (test.get("disparity") or {}).get(k)
            if v is not None and v > bound and (worst is None or v > worst[2]):
                worst = (attr, k, v, test)
    if worst is None:
        return None
    attr, measure, value, test = worst
    iv = (test.get("disparity_intervals") or {}).get(measure)
    groups = test.get("groups", {})
    metric = _BEHIND.get(measure)
    if metric is None:  # equalized odds: the larger of the TPR and FPR gaps
        gaps = {m: (e[0][1] - e[1][1]) for m in ("tpr", "fpr") if (e := _extremes(groups, m))}
        metric = max(gaps, key=gaps.get) if gaps else "accuracy"
    ext = _extremes(groups, metric)
    excludes_zero = bool(iv and iv[0] > 0)
    level = f.get("level", 0.95)
    evidence: dict[str, Any] = {"attribute": attr, "measure": measure, "value": value, "bound": bound,
                                "interval": iv, "interval_excludes_zero": excludes_zero}
    if ext:
        (hg, hv), (lg, lv) = ext
        evidence.update({"metric": metric, "highest_group": hg, "highest": hv, "lowest_group": lg, "lowest": lv,
                         "n": {hg: groups[hg].get("n"), lg: groups[lg].get("n")}})
    ratio = (test.get("disparity") or {}).get("demographic_parity_ratio")
    if ratio is not None:
        evidence["demographic_parity_ratio"] = ratio
    evidence["certainty"] = certainty(
        "bootstrap interval" if iv else "threshold rule", (f"The {100 * level:g}% interval of the gap between the groups furthest apart is "
                               f"[{iv[0]:.3g}, {iv[1]:.3g}]: " + ("it excludes zero, the gap is not chance."
                                                                  if excludes_zero else "it includes zero, the gap "
                                                                  "may be chance at this test size."))
        if iv else f"No interval (evaluate.bootstrap=0): {value:.3g} against the bound {bound:g}.",
        interval=iv, level=level if iv else None)
    severity = "high" if excludes_zero and value > 2 * bound else "medium" if excludes_zero else "low"
    who = f" ({metric} {ext[0][0]} {ext[0][1]:.2f} vs {ext[1][0]} {ext[1][1]:.2f})" if ext else ""
    return Finding(
        "group_disparity", severity,
        f"The model treats the {attr} groups differently: {measure.replace('_', ' ')} {value:.3f} > {bound:g}{who}",
        evidence,
        "Look at who is hurt and why: proxies of the attribute (proxy_feature), labels that encode past decisions "
        "(label_bias), groups too small to learn (group_underrepresented). Compare mitigations side by side "
        "(fairness.mitigation: [reweighing, threshold_optimizer, exponentiated_gradient, penalty]) and choose "
        "the criterion that fits the decision (demographic parity vs equalized odds: fairness.constraint).")


@FINDINGS.register("group_underrepresented", stage="fairness", check=False,
                   help="a group of a sensitive attribute has too few test rows for its metrics to mean anything")
def group_underrepresented(f: FairnessFacts) -> Finding | None:
    need = int(f.get("min_group", 30))
    small = []
    for attr, a in f.attributes().items():
        splits = a.get("splits", {})
        for g, m in (splits.get("test") or {}).get("groups", {}).items():
            if m.get("n", 0) < need:
                iv = ((splits.get("test") or {}).get("intervals") or {}).get(g, {}).get("accuracy")
                small.append({"attribute": attr, "group": g, "n_test": m.get("n"),
                              "n_train": (splits.get("train") or {}).get("groups", {}).get(g, {}).get("n", 0),
                              "test_accuracy": m.get("accuracy"), "accuracy_interval": iv})
    if not small:
        return None
    first = min(small, key=lambda s: s["n_test"])
    return Finding(
        "group_underrepresented", "medium",
        f"{len(small)} group(s) too small to judge: {first['attribute']}={first['group']} has {first['n_test']} test "
        f"rows (fewer than {need})",
        {"groups": small[:10], "min_group": need,
         "certainty": certainty("exact count", f"Counted on every test row: {first['n_test']} of group "
                                f"{first['group']}; its accuracy interval is "
                                + (f"[{first['accuracy_interval'][0]:.2f}, {first['accuracy_interval'][1]:.2f}]."
                                   if first["accuracy_interval"] else "undefined."))},
        "Collect more rows of the group, or merge it with a neighbouring one; until then treat its metrics as "
        "unknown, not as fine. A group split (data.split.method: group) or a larger test fraction gives it more "
        "test rows.")


@FINDINGS.register("proxy_feature", stage="fairness", check=False,
                   help="a feature predicts a sensitive attribute on its own: leaving the attribute out is not "
                        "enough, the model can learn it through the proxy")
def proxy_feature(f: FairnessFacts) -> Finding | None:
    need = float(f.get("proxy_auc", 0.75))
    hits = [(attr, p) for attr, a in f.attributes().items() for p in a.get("proxies") or [] if p["auc"] >= need]
    if not hits:
        return None
    attr, p = max(hits, key=lambda h: h[1]["auc"])
    as_feature = bool(f.get("sensitive_as_feature", False))
    return Finding(
        "proxy_feature", "medium" if not as_feature else "low",
        f"Feature {p['feature']} is a proxy of {attr}: alone it tells group {p['group']} from the others with ROC AUC "
        f"{p['auc']:.2f}",
        {"attribute": attr, "feature": p["feature"], "group": p["group"], "auc": p["auc"], "min_auc": need,
         "mean_in_group": p["rate_in_group"], "mean_elsewhere": p["rate_elsewhere"],
         "others": [h[1]["feature"] for h in hits if h[1] is not p][:5], "sensitive_as_feature": as_feature,
         "certainty": certainty("measured", f"ROC AUC of the feature's value as a score of membership in "
                                f"{p['group']}, on every training row.")},
        f"Removing {attr} from the features (data.sensitive_as_feature: false) does not remove it from the data: "
        f"the model can learn it from {p['feature']}. Check whether {p['feature']} is needed for the task; "
        "drop or transform it, and measure the disparity again (group_disparity), or mitigate "
        "(fairness.mitigation).")


@FINDINGS.register("label_bias", stage="fairness", check=False,
                   help="hint: the training labels differ by group at equal features (past decisions may encode "
                        "the bias the model then learns)")
def label_bias(f: FairnessFacts) -> Finding | None:
    need = float(f.get("label_gap", 0.05))
    worst = None
    for attr, a in f.attributes().items():
        lb = a.get("label_bias")
        for g, gap in ((lb or {}).get("gap") or {}).items():
            iv = (lb.get("interval") or {}).get(g)
            if abs(gap) > need and iv and (iv[0] > 0 or iv[1] < 0) and (worst is None or abs(gap) > abs(worst[2])):
                worst = (attr, g, gap, iv, lb)
    if worst is None:
        return None
    attr, g, gap, iv, lb = worst
    ref = lb["reference_group"]
    return Finding(
        "label_bias", "medium",
        f"The training labels favour {attr}={ref} over {g} at equal features: {abs(gap):.1%} fewer positives for {g}",
        {"attribute": attr, "group": g, "reference_group": ref, "gap": gap, "interval": iv, "min_gap": need,
         "rates_at_equal_features": lb.get("rates_at_equal_features"),
         "observed_positive_rate": lb.get("observed_positive_rate"), "rows": lb.get("rows"),
         "certainty": certainty("bootstrap interval", f"Linear probability model of the label on the features and "
                                f"{attr}, refitted on {lb.get('resamples')} resamples of the {lb.get('rows')} "
                                f"training rows: the {100 * lb.get('level', 0.95):g}% interval "
                                f"[{iv[0]:.3f}, {iv[1]:.3f}] excludes zero.", interval=iv, level=lb.get("level"))},
        "A hint, not a proof (a feature the table lacks could explain it): find out how the labels were made. A "
        "model fitted to these labels learns the gap; reweighing (fairness.mitigation: [reweighing]) makes group "
        "and label independent in training, and better labels remove it at the source.")


# --------------------------------------------------------------------------- robustness


@FINDINGS.register("not_robust", stage="robustness", check=False,
                   help="adversarial accuracy collapses at a small L∞ budget (FGSM / PGD)")
def not_robust(f: RobustnessFacts) -> Finding | None:
    clean = f.get("clean_accuracy", None)
    if not clean:
        return None
    collapse, small = f.limit("collapse", 0.5), f.limit("small_eps", 8 / 255)
    worst = None
    for attack, rows in (f.get("attacks", {}) or {}).items():
        for r in rows:
            if "eps" in r and r["eps"] <= small + 1e-12 and r["accuracy"] < collapse * clean:
                if worst is None or (r["eps"], r["accuracy"]) < (worst[1]["eps"], worst[1]["accuracy"]):
                    worst = (attack, r)
    if worst is None:
        return None
    attack, r = worst
    n = f.get("images", None)
    return Finding(
        "not_robust", "high" if r["accuracy"] < 0.2 * clean else "medium",
        f"Accuracy collapses under attack: {attack.upper()} at eps {r['eps']:.3g} ({r['eps'] * 255:.1f}/255) leaves "
        f"{r['accuracy']:.1%} of the clean {clean:.1%}",
        {"attack": attack, "eps": r["eps"], "robust_accuracy": r["accuracy"], "clean_accuracy": clean,
         "collapse_below": collapse, "small_eps": small, "images": n,
         "certainty": certainty("exact count", f"Every one of the {n} attacked test images counted (a seeded "
                                "sample when the test split is larger).", interval=r.get("interval"))},
        "Train with adversarial examples (train.adversarial: {attack: pgd, eps: ..., ratio: 0.5}) and measure again; "
        "augmentation (data.augment: noise, small shifts) helps against corruptions, less against attacks. Inputs "
        "an adversary controls need a robust model.")


@FINDINGS.register("corruption_sensitive", stage="robustness", check=False,
                   help="a common corruption (noise, blur, brightness, contrast, JPEG, pixelation) at a low severity "
                        "costs more accuracy than evaluate.robustness.corruption_points")
def corruption_sensitive(f: RobustnessFacts) -> Finding | None:
    clean = f.get("clean_accuracy", None)
    corr = f.get("corruptions", None)
    if not clean or not corr:
        return None
    points = f.limit("corruption_points", 0.1)
    worst = None
    for name, accs in (corr.get("accuracy") or {}).items():
        for sev in (1, 2):
            if len(accs) >= sev and clean - accs[sev - 1] > points and (worst is None or clean - accs[sev - 1] > worst[2]):
                worst = (name, sev, clean - accs[sev - 1], accs)
    if worst is None:
        return None
    name, sev, drop, accs = worst
    return Finding(
        "corruption_sensitive", "medium",
        f"{name.replace('_', ' ')} at severity {sev} costs {100 * drop:.0f} points of accuracy ({clean:.1%} → "
        f"{accs[sev - 1]:.1%})",
        {"corruption": name, "severity": sev, "accuracy": accs[sev - 1], "clean_accuracy": clean,
         "drop": round(drop, 4), "by_severity": accs, "max_drop": points, "mce": corr.get("mce"),
         "certainty": certainty("exact count", f"Every one of the {f.get('images', None)} corrupted test images "
                                "counted.")},
        f"Augment the training images with what the model will meet (data.augment: e.g. noise, blur, "
        f"brightness/contrast jitter) and measure again; check the test images are like the ones in use.")


@FINDINGS.register("overconfident_under_attack", stage="robustness", check=False,
                   help="the model is highly confident of its fooled predictions on adversarial inputs")
def overconfident_under_attack(f: RobustnessFacts) -> Finding | None:
    need = f.limit("confidence", 0.9)
    worst = None
    for attack, rows in (f.get("attacks", {}) or {}).items():
        for r in rows:
            c = r.get("fooled_confidence")
            if c is not None and r.get("fooled", 0) >= 5 and c >= need and (worst is None or c > worst[1]["fooled_confidence"]):
                worst = (attack, r)
    if worst is None:
        return None
    attack, r = worst
    budget = f"eps {r['eps']:.3g}" if "eps" in r else f"{r['pixels']} pixel(s)"
    return Finding(
        "overconfident_under_attack", "medium",
        f"Fooled with confidence: under {attack.upper()} ({budget}) the wrong predictions have a mean confidence of "
        f"{r['fooled_confidence']:.1%}",
        {"attack": attack, **({"eps": r["eps"]} if "eps" in r else {"pixels": r["pixels"]}),
         "fooled": r["fooled"], "fooled_confidence": r["fooled_confidence"], "min_confidence": need,
         "clean_confidence": f.get("clean_confidence", None),
         "certainty": certainty("measured", f"Mean top-class probability over the {r['fooled']} fooled images.")},
        "The confidence cannot be trusted as a guard against manipulated inputs. Adversarial training "
        "(train.adversarial) and calibration (temperature scaling) reduce it; an input-side check (detection of "
        "out-of-distribution inputs) is needed where an adversary controls the inputs.")


def trust_findings(fairness: dict | None, robustness: dict | None) -> list[Finding]:
    """Every registered fairness and robustness check over the run's measurements."""
    facts = {"fairness": FairnessFacts(fairness), "robustness": RobustnessFacts(robustness)}
    out = []
    for e in FINDINGS.entries():
        st = e.meta.get("stage")
        if st in facts and (found := e.obj(facts[st])) is not None:
            out.append(found)
    return out
