"""``report.html``: one self-contained page (images inlined as base64) built from a run dir.

It is rendered only from files in the run dir (``summary.json``, ``config.yaml``, ``figures/``),
so ``methodo report DIR`` can re-render it at any time.
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path

from methodo.errors import BadInput

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.finding{border-left:5px solid #999;padding:.4rem .8rem;margin:.6rem 0;background:#fafafa}
.critical{border-color:#b00020}.high{border-color:#e65100}.medium{border-color:#f9a825}.low,.info{border-color:#1565c0}
.status-failed{color:#b00020}.status-finished{color:#2e7d32}img{max-width:100%;height:auto}
pre{background:#f6f8fa;padding:.8rem;overflow:auto}.muted{color:#666}
"""

# figure file → section title, in display order
FIGURES = {
    "learning_curves.png": "Learning curves",
    "confusion_matrix.png": "Confusion matrix (test)",
    "roc.png": "ROC curves (test)",
    "pr.png": "Precision-recall curves (test)",
    "threshold.png": "Decision threshold (validation sweep)",
    "reliability.png": "Calibration: reliability diagram (test)",
    "label_errors.png": "Suspected label errors",
    "regression_fit.png": "Predictions (test)",
    "segmentation.png": "Test images, true masks and predicted masks",
    "perplexity.png": "Perplexity: in-domain vs out-of-domain",
    "lr_find.png": "LR range test",
    "weights.png": "Weight and gradient distributions",
    "explanations.png": "Explanations (test)",
    "feature_importance.png": "Feature importance (test)",
    "kfold.png": "Test metrics per fold (k-fold)",
    "augmentation.png": "Augmentation gallery (training images, original then augmented copies)",
    "embeddings_pca.png": "Test embeddings, penultimate layer (PCA)",
    "embeddings_tsne.png": "Test embeddings, penultimate layer (t-SNE)",
    "embeddings_umap.png": "Test embeddings, penultimate layer (UMAP)",
}
_SPLIT_LABEL = {"ood": "out-of-domain"}


def _fmt(v) -> str:
    if v is None:
        return '<span class="muted">undefined</span>'
    if isinstance(v, float):
        return f"{v:.4f}"
    return escape(str(v))


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _metric_table(summary: dict) -> str:
    """Metrics as rows; model splits, the test interval and each baseline as columns."""
    metrics = summary.get("metrics", {})
    test = metrics.get("test", {})
    if not test:
        return "<p>No test metrics (the run did not finish).</p>"
    base = summary.get("baselines", {})
    iv = summary.get("intervals", {}).get("test", {})
    why = summary.get("undefined", {}).get("test", {})
    splits = [s for s in ("train", "val", "test", "ood") if s in metrics]
    head = ("<tr><th>metric</th>" + "".join(f"<th>model ({_SPLIT_LABEL.get(s, s)})</th>" for s in splits)
            + "<th>test 95% interval</th>" + "".join(f"<th>baseline: {escape(b)}</th>" for b in base) + "</tr>")
    rows = []
    for n in test:
        i = iv.get(n)
        cell_iv = f"[{i[0]:.4f}, {i[1]:.4f}]" if i else '<span class="muted">—</span>'
        note = f' <span class="muted">({escape(why[n])})</span>' if n in why else ""
        rows.append(f"<tr><td>{escape(n)}{note}</td>" + "".join(f"<td>{_fmt(metrics[s].get(n))}</td>" for s in splits)
                    + f"<td>{cell_iv}</td>" + "".join(f"<td>{_fmt(v.get(n))}</td>" for v in base.values()) + "</tr>")
    table = f'<table id="metrics">{head}{"".join(rows)}</table>'
    th = summary.get("threshold")
    if th:
        keys = list(th["test"])
        trow = lambda label, d: f"<tr><td>{label}</td>" + "".join(f"<td>{_fmt(d.get(k))}</td>" for k in keys) + "</tr>"
        table += (f'<h3>Decision threshold: {th["value"]:.3f} ({escape(th["rule"])}: {escape(th["why"])})</h3>'
                  f'<table id="threshold"><tr><th></th>{"".join(f"<th>{escape(k)}</th>" for k in keys)}</tr>'
                  + trow("validation at chosen threshold", th["val"]) + trow("test at chosen threshold", th["test"])
                  + trow("test at 0.5", th["test_at_0.5"]) + "</table>")
    ref = summary.get("reference")
    if ref:
        table += (f'<p id="reference">Reference on the same features ({escape(ref["model"])}, for "noise or bias?"): '
                  f'{escape(ref["metric"])} train {_fmt(ref["train"])}, val {_fmt(ref["val"])} — beside the model\'s '
                  f'train {_fmt(metrics.get("train", {}).get(ref["metric"]))}, '
                  f'val {_fmt(metrics.get("val", {}).get(ref["metric"]))}.</p>')
    return table + _extra_table(summary)


def _extra_table(summary: dict) -> str:
    """Evaluation-only sets (out-of-domain text) beside the test split: model and baselines."""
    extra = summary.get("extra_baselines", {})
    if not extra:
        return ""
    metrics, base = summary["metrics"], summary.get("baselines", {})
    names = list(metrics.get("test", {}))
    head = "<tr><th>split</th><th>who</th>" + "".join(f"<th>{escape(n)}</th>" for n in names) + "</tr>"
    rows = []
    for split in ("test", *extra):
        label = escape(_SPLIT_LABEL.get(split, split))
        who = {"model": metrics.get(split, {}), **(base if split == "test" else extra[split])}
        for w, vals in who.items():
            rows.append(f"<tr><td>{label}</td><td>{escape(w)}</td>"
                        + "".join(f"<td>{_fmt(vals.get(n))}</td>" for n in names) + "</tr>")
    descr = summary.get("data", {}).get("extra", {})
    notes = "".join(f'<p class="muted">{escape(_SPLIT_LABEL.get(k, k))}: {escape(v.get("description", ""))}</p>'
                    for k, v in descr.items())
    return f'<h3>In-domain (test) vs out-of-domain</h3><table id="in-vs-out">{head}{"".join(rows)}</table>{notes}'


def _sample(summary: dict) -> str:
    s = summary.get("sample")
    if not s:
        return ""
    return (f'<h2>Sample (temperature {s["temperature"]})</h2><pre><span class="muted">{escape(s["prompt"])}</span>'
            f'<b>{escape(s["continuation"])}</b></pre>')


def _findings(summary: dict) -> str:
    items = summary.get("findings", [])
    if not items:
        return "<p>No problem found by the checks.</p>"
    out = []
    for f in items:
        ev = ", ".join(f"{escape(str(k))}={escape(str(v))}" for k, v in f.get("evidence", {}).items())
        out.append(
            f'<div class="finding {escape(f["severity"])}"><b>[{escape(f["severity"])}] {escape(f["title"])}</b>'
            f' <code>{escape(f["id"])}</code><br><span class="muted">evidence:</span> {ev}'
            f'<br><span class="muted">action:</span> {escape(f["action"])}</div>')
    return "".join(out)


def _data_table(summary: dict) -> str:
    data = summary.get("data", {})
    splits = data.get("splits", {})
    if not splits:
        return ""
    parts = [f"<p>{escape(data.get('description', ''))}</p>"]
    counts = {s: v.get("class_counts") for s, v in splits.items() if v.get("class_counts")}
    if counts:
        classes = list(next(iter(counts.values())))
        head = "".join(f"<th>{escape(c)}</th>" for c in classes)
        labels = {s: f"{s} (n={splits[s]['n']})" for s in counts}
        before = splits.get("train", {}).get("class_counts_before_balancing")
        if before is not None and before != counts.get("train"):
            labels["train"] = f"train after {escape(str(data.get('balance')))} (n={splits['train'].get('n_after_balancing')})"
            counts = {"train (before balancing)": before, **counts}
            labels["train (before balancing)"] = f"train before balancing (n={splits['train']['n']})"
        rows = "".join(
            f"<tr><td>{escape(labels[s])}</td>" + "".join(f"<td>{c[k]}</td>" for k in classes) + "</tr>"
            for s, c in counts.items())
        parts.append(f'<table id="class-counts"><tr><th>split</th>{head}</tr>{rows}</table>')
        if data.get("count_unit"):
            parts.append(f'<p class="muted">class counts are {escape(data["count_unit"])}</p>')
    else:
        parts.append("<p>" + ", ".join(f"{escape(s)}: n={v['n']}" for s, v in splits.items()) + "</p>")
    return "".join(parts)


def _kfold(summary: dict) -> str:
    kf = summary.get("kfold")
    if not kf or not kf.get("runs"):
        return ""
    mean, std = summary.get("metrics", {}), summary.get("metrics_std", {})
    names = [n for n in mean.get("test", {}) if n != "loss"]
    head = "".join(f"<th>{escape(n)}</th>" for n in names)
    fmt = (lambda m, s: '<span class="muted">undefined</span>' if m is None else f"{m:.4f} ± {s:.4f}")
    rows = [f"<tr><td>mean ± std ({split})</td>" + "".join(
        f"<td>{fmt(mean[split].get(n), std[split].get(n) or 0.0)}</td>" for n in names) + "</tr>"
        for split in ("train", "val", "test") if split in mean]
    rows += [f"<tr><td>fold {r['fold']} (test)</td>" + "".join(
        f"<td>{_fmt(r['metrics']['test'].get(n))}</td>" for n in names) + "</tr>" for r in kf["runs"]]
    return (f"<h2>K-fold cross-validation ({kf['folds']} folds)</h2><p>Each fold is the test split of one run "
            "(its run dir under <code>folds/</code>); std is the sample standard deviation over folds.</p>"
            f'<table id="kfold"><tr><th></th>{head}</tr>{"".join(rows)}</table>')


def _data_info(summary: dict) -> str:
    data = summary.get("data", {})
    parts = []
    if data.get("class_weights"):
        parts.append("class weights in the loss: " + ", ".join(f"{escape(str(k))}={v:.3g}"
                                                             for k, v in data["class_weights"].items()))
    feats = data.get("features")
    if feats and (feats.get("steps") or feats.get("names")):
        parts.append(f"feature steps {escape(str(feats.get('steps') or []))} → {feats.get('n')} features: "
                     + escape(", ".join(feats.get("names", [])[:30])) + (" …" if feats.get("n", 0) > 30 else ""))
    if data.get("augment"):
        parts.append(f"training-only augmentation: {escape(str(data['augment']))}")
    return "".join(f'<p class="muted">{p}</p>' for p in parts)


def _per_class(summary: dict) -> str:
    rows = summary.get("tables", {}).get("test", {}).get("per_class")
    if not rows:
        return ""
    keys = [k for k in rows[0] if k != "class"]  # precision/recall/f1/support, or iou/dice/pixels
    label = {"f1": "F1", "iou": "IoU", "dice": "Dice"}
    head = "".join(f"<th>{escape(label.get(k, k.replace('_', ' ')))}</th>" for k in keys)
    body = "".join(f"<tr><td>{escape(r['class'])}</td>" + "".join(f"<td>{_fmt(r[k])}</td>" for k in keys) + "</tr>"
                   for r in rows)
    return f'<h2>Per class (test)</h2><table id="per-class"><tr><th>class</th>{head}</tr>{body}</table>'


def _training(summary: dict) -> str:
    """LR finder, free ensembles beside the best model, and the NaN guard's skipped batches."""
    parts = []
    lf = summary.get("lr_find")
    if lf:
        sugg = ", ".join(f"{escape(k)} {v:.3g}" for k, v in lf.get("suggestions", {}).items())
        parts.append(f'<p id="lr-find">LR range test: suggested LR <b>{lf["suggested_lr"]:.3g}</b> '
                     f'({escape(str(lf.get("suggestion")))}; {sugg})'
                     + (f', used for {escape(", ".join(lf["applied_to"]))}' if lf.get("applied_to") else "") + ".</p>")
    ens = summary.get("ensembles") or {}
    test = summary.get("metrics", {}).get("test", {})
    if ens and test:
        names = [k for k in test if k != "loss"]
        head = "".join(f"<th>{escape(n)}</th>" for n in names)
        rows = [f"<tr><td>best single model (epoch {summary.get('best_epoch')})</td>"
                + "".join(f"<td>{_fmt(test.get(n))}</td>" for n in names) + "</tr>"]
        for name, e in ens.items():
            label = (f"snapshot ensemble ({e['members']} members, epochs {', '.join(map(str, e.get('epochs', [])))})"
                     if name == "snapshot" else f"SWA ({e.get('epochs_averaged')} epochs averaged)")
            rows.append(f"<tr><td>{escape(label)}</td>"
                        + "".join(f"<td>{_fmt(e['metrics']['test'].get(n))}</td>" for n in names) + "</tr>")
        parts.append(f'<table id="ensembles"><tr><th>test</th>{head}</tr>{"".join(rows)}</table>')
    tr = summary.get("training") or {}
    if tr.get("skipped_batches"):
        parts.append(f"<p>NaN guard: {len(tr['skipped_batches'])} batch(es) skipped.</p>")
    if tr.get("grad_norm"):
        g = tr["grad_norm"]
        clip = f", clipped to {g['clipped_to']:g}" if g.get("clipped_to") else ""
        parts.append(f"<p>Gradient norm before clipping: median {g['median']:.3g}, max {g['max']:.3g}{clip}.</p>")
    return "<h2>Training</h2>" + "".join(parts) if parts else ""


def render_report(run_dir: str | Path) -> Path:
    """(Re-)write ``run_dir/report.html`` from the run's files; returns its path."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise BadInput(f"{run_dir}: not a run dir (no summary.json)")
    try:
        summary = json.loads(summary_path.read_text())
    except json.JSONDecodeError as exc:
        raise BadInput(f"{summary_path}: not valid JSON ({exc})") from None
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else ""
    status = summary.get("status", "unknown")
    figs = []
    for name, title in FIGURES.items():
        p = run_dir / "figures" / name
        if p.is_file():
            figs.append(f"<h2>{escape(title)}</h2>{_img(p, title)}")
    meta = (f"task {escape(str(summary.get('task')))} · dataset {escape(str(summary.get('dataset')))} · "
            f"seed {summary.get('seed')} · epochs run {summary.get('epochs_run')} (best {summary.get('best_epoch')}) · "
            f"{summary.get('duration_s', 0):.1f} s · MLflow run {escape(str(summary.get('mlflow_run_id')))}")
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>methodo report: {escape(summary.get('name', ''))}</title>
<style>{_CSS}</style></head><body>
<h1>{escape(summary.get('name', 'run'))} <span class="status-{escape(status)}">({escape(status)})</span></h1>
<p class="muted">{meta}</p>
<h2>Findings</h2>{_findings(summary)}
<h2>Metrics</h2>{_metric_table(summary)}
{_kfold(summary)}
<h2>Data</h2>{_data_table(summary)}{_data_info(summary)}
{_training(summary)}
{''.join(figs)}
{_per_class(summary)}
{_sample(summary)}
<h2>Config</h2><pre>{escape(config)}</pre>
</body></html>
"""
    out = run_dir / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out
