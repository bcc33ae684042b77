"""The findings of a search (stage ``tune``): the best trial's score is luck, or the best value is on the
space's edge. Registered in ``FINDINGS`` when :mod:`methodo.diagnose` is imported (``methodo list findings``)."""

from __future__ import annotations

import math

from methodo.findings import FINDINGS, Finding, certainty
from methodo.tune.space import Space
from methodo.tune.trial import Objective

EDGE = 0.05  # a value within 5% of the range (in log scale when the key is searched in log) is on its edge
OPTIMISM = 0.01  # the search's value beats its re-runs' mean by more than 1% (relative) and 2 std


def search_overfits_val(reeval: dict | None, objective) -> Finding | None:
    """The best trial's validation score was luck of its seed: its re-runs with other seeds score clearly
    lower (beyond their spread), or another top trial re-runs better."""
    if not reeval or not reeval.get("top"):
        return None
    top = [r for r in reeval["top"] if r.get("mean") is not None]
    if not top:
        return None
    best = top[0]
    sign = objective.sign
    gap = sign * (best["search"] - best["mean"])
    spread = best["std"] or 0.0
    rival = max(top, key=lambda r: sign * r["mean"])
    overfit = gap > 2 * spread and gap > OPTIMISM * max(abs(best["search"]), 1e-12)
    if not overfit and rival is best:
        return None
    ev = {"objective": objective.name, "best_trial": best["number"], "search_value": round(best["search"], 6),
          "rerun_mean": round(best["mean"], 6), "rerun_std": round(spread, 6), "optimism": round(gap, 6),
          "seeds": reeval["seeds"],
          "certainty": certainty("threshold rule", f"The best trial's search score is more than 2 standard deviations "
                                 f"of its {reeval['seeds']} re-runs (and {OPTIMISM:.0%}) above their mean, or another "
                                 "top trial's re-run mean is better: a rule on a few seeds, no formal test.")}
    if rival is not best:
        ev.update({"rerun_best_trial": rival["number"], "its_rerun_mean": round(rival["mean"], 6)})
    return Finding(
        "search_overfits_val", "high" if overfit and rival is not best else "medium",
        f"The search overfits the validation split: trial {best['number']} scored {best['search']:.4g} in the "
        f"search but {best['mean']:.4g} ± {spread:.2g} with {reeval['seeds']} other seeds"
        + (f"; trial {rival['number']} re-runs better" if rival is not best else ""),
        ev,
        "Trust the re-run means, not the search's best: pick the trial whose re-runs score best, use a larger "
        "validation split or k-fold (data.split.method=kfold), and report test metrics only once (--final-test).")


FINDINGS.register("search_overfits_val", search_overfits_val, check=False, stage="tune",
                  help="the best trial's validation score does not hold with other seeds (the search was lucky)",
                  example={"reeval": {"seeds": 3, "top": [
                      {"number": 4, "search": 0.97, "reruns": [0.93, 0.92, 0.935], "mean": 0.928, "std": 0.0076},
                      {"number": 2, "search": 0.96, "reruns": [0.95, 0.955, 0.95], "mean": 0.952, "std": 0.0029}]},
                      "objective": Objective("val_accuracy", "maximize")})


def space_edge(space, params: dict, *, n_complete: int) -> Finding | None:
    """The best trial's value of a numeric key is within 5% of an end of its range: the optimum may lie outside."""
    if n_complete < 3:
        return None
    hits = []
    for p in space.params:
        if p.kind == "choice" or p.key not in params:
            continue
        v, lo, hi = float(params[p.key]), float(p.low), float(p.high)
        if p.log:
            v, lo, hi = math.log(v), math.log(lo), math.log(hi)
        pos = (v - lo) / (hi - lo)
        if pos <= EDGE or pos >= 1 - EDGE:
            hits.append((p, params[p.key], "low" if pos <= EDGE else "high", round(pos, 3)))
    if not hits:
        return None
    p, v, side, pos = hits[0]
    bound = p.low if side == "low" else p.high
    return Finding(
        "space_edge", "medium",
        f"The best {p.key} ({v:.4g}) is at the {side} edge of its range [{p.low:g}, {p.high:g}]"
        + (f" (and {len(hits) - 1} more key(s))" if len(hits) > 1 else ""),
        {"key": p.key, "value": v, "range": [p.low, p.high], "edge": side, "position": pos,
         "keys_on_edge": {h[0].key: h[2] for h in hits},
         "certainty": certainty("threshold rule", f"The best value lies within {EDGE:.0%} of an end of the searched "
                                "range (on the log scale for log ranges): a rule, not a test.")},
        f"Widen the range of {p.key} {'below' if side == 'low' else 'above'} {bound:g} (if the config allows "
        "it) and continue the search: the best value may lie outside it.")


FINDINGS.register("space_edge", space_edge, check=False, stage="tune",
                  help="the best value of a searched key sits on the edge of its range (widen it)",
                  example={"space": Space.from_text("train.optimizer.lr: {float: [1.0e-4, 0.1], log: true}"),
                           "params": {"train.optimizer.lr": 0.098}, "n_complete": 10})
