"""After the search: the study's record (``tune.json``), ``trials.csv``, ``best.yaml``, the re-runs that
check it (``--reeval-top``, ``--final-test``, ``--hypergradient``), the findings and ``tune.html``."""

from __future__ import annotations

import copy
import math
import statistics
import sys
from typing import Any

from methodo.errors import RunFailed


def _trial_row(t, objectives) -> dict:
    retry_of = t.system_attrs.get("failed_trial")
    return {
        "number": t.number, "state": t.state.name,
        "values": ({o.name: v for o, v in zip(objectives, t.values)} if t.values else None),
        "params": dict(t.params), "epochs_run": t.user_attrs.get("epochs_run"),
        "best_epoch": t.user_attrs.get("best_epoch"),
        "duration_s": t.user_attrs.get("duration_s"), "overhead_s": t.user_attrs.get("overhead_s"),
        "error": t.user_attrs.get("error"), "retry_of": retry_of, "worker": t.user_attrs.get("worker"),
        "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
    }


def _best(study, objectives) -> tuple[Any, list]:
    """The best trial (by the first objective among the Pareto front when several) and the front."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not done:
        return None, []
    if len(objectives) == 1:
        return study.best_trial, [study.best_trial]
    front = sorted(study.best_trials, key=lambda t: t.number)
    o = objectives[0]
    return max(front, key=lambda t: o.sign * t.values[0]), front


def finish(ctx, study, rd, *, wall_s: float) -> dict:
    from methodo.config import dump_yaml
    from methodo.tune.study import _check_done, _validate, counted, redact

    trials = study.get_trials(deepcopy=False)
    objectives = ctx.objectives
    counts = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    counts["retried"] = len(trials) - len(counted(trials))
    durations = [t.user_attrs.get("duration_s") or 0.0 for t in trials]
    overheads = [t.user_attrs.get("overhead_s") or 0.0 for t in trials]
    record: dict[str, Any] = {
        "study": ctx.study_name, "storage": redact(ctx.storage_url), "sampler": ctx.opts.sampler,
        "pruner": ctx.opts.pruner, "objectives": [str(o) for o in objectives], "task": ctx.task,
        "budget": ctx.budget, "space": ctx.space_dict, "counts": counts, "trials_counted": len(counted(trials)),
        "epochs_total": int(sum(t.user_attrs.get("epochs_run") or 0 for t in trials)),
        "wall_s": round(wall_s, 3),
        "overhead": {"trial_s_median": round(statistics.median(durations), 4) if durations else None,
                     "overhead_s_median": round(statistics.median(overheads), 4) if overheads else None,
                     "fraction": round(sum(overheads) / sum(durations), 4) if sum(durations) else None},
        "test_split": "not used by the search: every trial is scored on the validation split only",
        "mlflow_parent_run_id": (ctx.mlflow or {}).get("parent_run_id"),
        "trials": [_trial_row(t, objectives) for t in trials],
        "best": None, "pareto": None, "reeval": None, "final_test": None, "hypergradient": None, "findings": [],
    }
    rd.write_csv("trials.csv", ["number", "state", *[o.name for o in objectives], "epochs_run", "duration_s",
                                "retry_of", *[f"param.{k}" for k in ctx.space_dict], "error"],
                 ([r["number"], r["state"], *[(r["values"] or {}).get(o.name, "") for o in objectives],
                   r["epochs_run"] or "", r["duration_s"] or "", "" if r["retry_of"] is None else r["retry_of"],
                   *[r["params"].get(k, "") for k in ctx.space_dict], r["error"] or ""] for r in record["trials"]))
    try:
        _check_done(study, ctx)
    except RunFailed:
        rd.write_json("tune.json", record)
        raise
    best, front = _best(study, objectives)
    space = ctx.space
    record["best"] = {"number": best.number, "values": {o.name: v for o, v in zip(objectives, best.values)},
                      "params": space.config_values(best.params), "val_metrics": best.user_attrs.get("val_metrics"),
                      "epochs_run": best.user_attrs.get("epochs_run"),
                      "mlflow_run_id": best.user_attrs.get("mlflow_run_id")}
    if len(objectives) > 1:
        record["pareto"] = [{"number": t.number, "values": {o.name: v for o, v in zip(objectives, t.values)}}
                            for t in front]
    best_cfg = _validate(copy.deepcopy(best.user_attrs["config"]), f"trial {best.number}")
    rd.write_text("best.yaml", f"# best trial {best.number} of study {ctx.study_name}: "
                  + ", ".join(f"{k}={v:.6g}" for k, v in record["best"]["values"].items()) + "\n"
                  + dump_yaml(best_cfg))
    if ctx.opts.reeval_top:
        record["reeval"] = reevaluate(ctx, study, ctx.opts.reeval_top, ctx.opts.reeval_seeds)
    if ctx.opts.hypergradient:
        record["hypergradient"] = hypergradient_run(ctx, best, ctx.opts.hypergradient)
    if ctx.opts.final_test:
        record["final_test"] = final_test(ctx, rd, best)
        record["test_split"] = "evaluated once, for the best config, after the search (--final-test)"
    from methodo.tune.findings import search_overfits_val, space_edge

    findings = [f for f in (search_overfits_val(record.get("reeval"), objectives[0]),
                            space_edge(space, best.params, n_complete=counts["COMPLETE"])) if f is not None]
    record["findings"] = [f.to_dict() for f in findings]
    rd.write_json("tune.json", record)
    from methodo.tune.report import render

    render(rd, record, study)
    return record


def _rerun(ctx, data: dict, what: str, *, keep_lrs: bool = False):
    from methodo.tune.study import _validate
    from methodo.tune.trial import run_trial

    cfg = _validate(data, what)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"progress": False})})
    return run_trial(cfg, ctx.objectives, keep_lrs=keep_lrs)


def reevaluate(ctx, study, k: int, seeds: int) -> dict:
    """The top ``k`` trials (first objective) trained again with ``seeds`` other seeds: is the best still best?"""
    o = ctx.objectives[0]
    done = sorted((t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"),
                  key=lambda t: -o.sign * t.values[0])[:k]
    rows = []
    for t in done:
        base_seed = int(t.user_attrs["config"].get("seed", 0) or 0)
        vals = []
        for s in range(1, seeds + 1):
            data = copy.deepcopy(t.user_attrs["config"])
            data["seed"] = base_seed + s
            out = _rerun(ctx, data, f"trial {t.number} seed {base_seed + s}")
            if out.values:
                vals.append(out.values[0])
        print(f"reeval: trial {t.number} {o.name} {t.values[0]:.4g} in the search, "
              + (f"{statistics.fmean(vals):.4g} over seeds {base_seed + 1}..{base_seed + seeds}" if vals else
                 "every re-run failed"), file=sys.stderr)
        rows.append({"number": t.number, "search": t.values[0], "reruns": vals,
                     "mean": statistics.fmean(vals) if vals else None,
                     "std": statistics.stdev(vals) if len(vals) > 1 else 0.0 if vals else None})
    return {"objective": str(o), "seeds": seeds, "top": rows}


def final_test(ctx, rd, best) -> dict:
    """``methodo run best.yaml`` into ``best/``: the test split, once; and the search's validation number again."""
    import methodo

    res = methodo.run(rd.file("best.yaml"), out=rd.path / "best")
    o = ctx.objectives[0]
    val = res.record.metrics.get("val", {})
    name = o.name[4:] if o.name.startswith("val_") else None
    again = val.get(name) if name else None
    out = {"run_dir": "best", "status": res.status, "val": val, "test": res.record.metrics.get("test", {}),
           "objective": o.name, "search_value": best.values[0], "run_value": again,
           "reproduced": again is not None and again == best.values[0]}
    print(f"final test: {o.name} {best.values[0]:.6g} in the search, {again if again is None else f'{again:.6g}'} "
          f"in best/ ({'reproduced exactly' if out['reproduced'] else 'NOT reproduced'}); test metrics once: "
          + ", ".join(f"{k}={v:.4f}" for k, v in list(out["test"].items())[:3] if v is not None), file=sys.stderr)
    return out


def hypergradient_run(ctx, best, beta: float) -> dict:
    """The best config trained once more from the base config's LR with hypergradient descent on the LR
    (``train.optimizer.hypergradient.beta``): where does its LR go, next to the best LR the search found?"""
    from methodo.tune.space import get_key, set_key

    data = copy.deepcopy(best.user_attrs["config"])
    start = get_key(ctx.base, "train.optimizer.lr")
    if isinstance(start, (int, float)) and not isinstance(start, bool):
        set_key(data, "train.optimizer.lr", start)
    set_key(data, "train.optimizer.hypergradient", {"beta": beta})
    set_key(data, "train.scheduler", {"name": "none"})
    from methodo.errors import ConfigError

    try:
        out = _rerun(ctx, data, "--hypergradient", keep_lrs=True)
    except ConfigError as exc:
        return {"beta": beta, "error": str(exc)}
    lrs = out.lrs
    stride = max(1, len(lrs) // 400)
    best_lr = get_key(best.user_attrs["config"], "train.optimizer.lr")
    return {"beta": beta, "start_lr": get_key(data, "train.optimizer.lr"), "state": out.state,
            "error": out.error, "value": out.values[0] if out.values else None,
            "search_value": best.values[0], "best_lr": best_lr,
            "final_lr": lrs[-1] if lrs else None, "steps": len(lrs),
            "trajectory": [[i + 1, lrs[i]] for i in range(0, len(lrs), stride)],
            "epochs_run": out.epochs_run}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
