"""``tune.html``: the study report, one self-contained page (plotly.js and every figure inlined).

Optuna's own plotly figures: optimization history, parameter importances (fANOVA), parallel
coordinates, slice and contour plots, the per-epoch curves that pruning read, the Pareto front when
multi-objective; plus the hypergradient LR trajectory (``--hypergradient``) and a table of every
trial with its state (PRUNED, FAIL and its error). The page is a Jinja2 template with autoescape on;
only the plotly divs (plotly's own output) are marked safe.
"""

from __future__ import annotations

import json


def _figures(study, record: dict) -> tuple[list, list]:
    """(title, plotly figure) to draw, and (title, why not) for those that cannot be drawn."""
    import optuna.visualization as vis
    from optuna.importance import FanovaImportanceEvaluator

    objectives = record["objectives"]
    names = [o.rsplit(":", 1)[0] for o in objectives]
    multi = len(names) > 1
    target = {"target": (lambda t: t.values[0]), "target_name": names[0]} if multi else {"target_name": names[0]}
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    params = sorted({p for t in done for p in t.params})
    plans = [("Optimization history" + (f" ({names[0]})" if multi else ""),
              lambda: vis.plot_optimization_history(study, **target))]
    if multi:
        plans.append(("Pareto front", lambda: vis.plot_pareto_front(study, target_names=names)))
    plans += [
        ("Parameter importances (fANOVA)",
         lambda: vis.plot_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0), **target)),
        ("Parallel coordinates", lambda: vis.plot_parallel_coordinate(study, **target)),
        ("Slice plots", lambda: vis.plot_slice(study, **target)),
    ]
    if len(params) >= 2:
        plans.append(("Contour plots", lambda: vis.plot_contour(study, params=params[:4], **target)))
    if not multi:
        plans.append(("Per-epoch validation score (what the pruner read; pruned trials stop early)",
                      lambda: vis.plot_intermediate_values(study)))
    figs, skipped = [], []
    for title, make in plans:
        if len(done) < 2 and title != plans[0][0]:
            skipped.append((title, f"{len(done)} completed trial(s); it needs 2 or more"))
            continue
        try:
            figs.append((title, make()))
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError, KeyError) as exc:
            skipped.append((title, " ".join(str(exc).split())[:200] or type(exc).__name__))
    hg = record.get("hypergradient")
    if hg and hg.get("trajectory"):
        figs.append(("Hypergradient LR trajectory vs the best LR of the search", _hypergradient_figure(hg)))
    return figs, skipped


def _hypergradient_figure(hg: dict):
    import plotly.graph_objects as go

    steps = [p[0] for p in hg["trajectory"]]
    fig = go.Figure(go.Scatter(x=steps, y=[p[1] for p in hg["trajectory"]], mode="lines",
                               name=f"hypergradient LR (β={hg['beta']})"))
    if isinstance(hg.get("best_lr"), (int, float)):
        fig.add_trace(go.Scatter(x=[steps[0], steps[-1]], y=[hg["best_lr"]] * 2, mode="lines",
                                 line={"dash": "dash"}, name="best LR of the search"))
    fig.update_layout(xaxis_title="optimizer step", yaxis_title="learning rate", yaxis_type="log",
                      title="Learning rate adapted online vs found by search")
    return fig


def _param(v) -> str:
    """A parameter cell: numbers to 4 significant digits, other values as text."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def render(rd, record: dict, study) -> object:
    """Write ``tune.html`` into the tune dir ``rd``; returns its path."""
    from methodo.report.html import _CSS, _environment

    try:
        from plotly.offline import get_plotlyjs

        figs, skipped = _figures(study, record)
        plotly_js = get_plotlyjs()
    except ImportError as exc:  # plotly missing: the tables only
        figs, skipped, plotly_js = [], [("Figures", f"plotly is not installed ({exc})")], ""
    from markupsafe import Markup

    divs = [(title, Markup(fig.to_html(full_html=False, include_plotlyjs=False,
                                       config={"displaylogo": False, "responsive": True})))
            for title, fig in figs]
    env = _environment()
    env.filters["param"] = _param
    import yaml

    space_text = yaml.safe_dump(record["space"], sort_keys=False, default_flow_style=None)
    html = env.get_template("tune.html.j2").render(
        r=json.loads(json.dumps(record, default=str)), figs=divs, skipped=skipped, css=_CSS,
        plotly_js=Markup(plotly_js), objective_names=[o.rsplit(":", 1)[0] for o in record["objectives"]],
        space_text=space_text)
    return rd.write_text("tune.html", html)
