"""``report.html``: one self-contained page (images inlined as base64) built from a run dir.

The page is ``templates/report.html.j2`` rendered with Jinja2, autoescape on, from the validated run
record; this module only gathers the inputs (record, config text, figures) through the RunDir.

It is rendered only from files in the run dir (``summary.json``, ``config.yaml``, ``figures/``),
so ``methodo report DIR`` can re-render it at any time.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.finding{border-left:5px solid #999;padding:.4rem .8rem;margin:.6rem 0;background:#fafafa}
.critical{border-color:#b00020}.high{border-color:#e65100}.medium{border-color:#f9a825}.low,.info{border-color:#1565c0}
.status-failed{color:#b00020}.status-finished{color:#2e7d32}img{max-width:100%;height:auto}
pre{background:#f6f8fa;padding:.8rem;overflow:auto}.muted{color:#666}
img.suspect{width:64px;image-rendering:pixelated}
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
    "fairness.png": "Per-group metrics (test)",
    "robustness.png": "Robust accuracy against the attack budget (test)",
    "corruptions.png": "Accuracy under common corruptions (test)",
    "adversarial.png": "Adversarial examples that fool the model (test)",
    "regression_fit.png": "Predictions (test)",
    "forecast.png": "Forecast: history, truth and one-step-ahead predictions (test)",
    "segmentation.png": "Test images, true masks and predicted masks",
    "per_label.png": "Per-label precision, recall and F1 (test)",
    "perplexity.png": "Perplexity: in-domain vs out-of-domain",
    "diffusion_chain.png": "Reverse diffusion x_T → x_0 (generation)",
    "samples.png": "Samples beside real test images and the per-pixel Gaussian baseline",
    "lr_find.png": "LR range test",
    "weights.png": "Weight and gradient distributions",
    "explanations.png": "Explanations (test)",
    "feature_importance.png": "Feature importance (test)",
    "attention.png": "Attention: which tokens each prediction looked at (test)",
    "kfold.png": "Test metrics per fold (k-fold)",
    "augmentation.png": "Augmentation gallery (training images, original then augmented copies)",
    "embeddings_pca.png": "Test embeddings, penultimate layer (PCA)",
    "embeddings_tsne.png": "Test embeddings, penultimate layer (t-SNE)",
    "embeddings_umap.png": "Test embeddings, penultimate layer (UMAP)",
}
_SPLIT_LABEL = {"ood": "out-of-domain"}


_COLUMN_LABEL = {"f1": "F1", "iou": "IoU", "dice": "Dice"}


def _fmt(v):
    """A table cell: 4 decimals for a float, a muted "undefined" for None, the text otherwise (escaped later)."""
    from markupsafe import Markup

    if v is None:
        return Markup('<span class="muted">undefined</span>')
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _class_counts(record) -> dict | None:
    """Class counts per split (and the training split before balancing, when balancing changed it)."""
    data = record.data
    if data is None:
        return None
    counts = {s: v.class_counts for s, v in data.splits.items() if v.class_counts}
    if not counts:
        return None
    labels = {s: f"{s} (n={data.splits[s].n})" for s in counts}
    train = data.splits.get("train")
    before = train.class_counts_before_balancing if train else None
    if before is not None and before != counts.get("train"):
        labels["train"] = f"train after {data.balance} (n={train.n_after_balancing})"
        counts = {"train (before balancing)": before, **counts}
        labels["train (before balancing)"] = f"train before balancing (n={train.n})"
    return {"classes": list(next(iter(counts.values()))), "rows": [(labels[s], c) for s, c in counts.items()]}


def _timings(record) -> dict | None:
    """"Where the time went": each stage's seconds and share of the total (``record.timings``)."""
    stages = dict(record.timings or {})
    if not stages:
        return None
    total = stages.pop("total", sum(stages.values()))
    rows = [(k, v, f"{100 * v / total:.1f}%" if total > 0 else "") for k, v in stages.items()]
    return {"rows": rows, "total": total, "stages": list(stages)}


def _suspects(record, rd) -> dict | None:
    """The label-issue table: the suspects named by the ``label_errors`` finding, with their feature values
    (tables: ``inputs``) or their pictures (images: ``figures/suspect_RANK.png``, inlined)."""
    f = next((f for f in record.findings if f.id == "label_errors"), None)
    top = f.evidence.get("top") if f else None
    if not isinstance(top, list) or not top or not all(isinstance(s, dict) for s in top):
        return None  # nothing to show, or a summary edited by hand: the finding's evidence line says it all
    top = [{**s, "inputs": s["inputs"] if isinstance(s.get("inputs"), dict) else {}} for s in top]
    columns = []
    for s in top:
        for k in s["inputs"]:
            if k not in columns:
                columns.append(k)
    images = {}
    for s in top:
        name = f"figures/suspect_{s.get('rank')}.png"
        if isinstance(s.get("rank"), int) and rd.has(name):
            images[s["rank"]] = base64.b64encode(rd.read_bytes(name)).decode("ascii")
    return {"rows": top, "columns": columns, "images": images, "file": f.evidence.get("file"),
            "count": f.evidence.get("suspects")}


def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=False, keep_trailing_newline=True)
    env.filters["fmt"] = _fmt
    return env


def render_report(run_dir: str | Path) -> Path:
    """(Re-)write ``run_dir/report.html`` from the run's files; returns its path.

    Everything read goes through :class:`~methodo.rundir.RunDir` (no path or link leads outside the run
    dir) and ``summary.json`` is validated as a :class:`~methodo.record.RunRecord` first: a damaged or
    tampered summary is bad input naming the wrong key, never rendered. The page is a Jinja2 template
    with autoescaping on, so no value from the run dir reaches the HTML unescaped.
    """
    from methodo.rundir import RunDir

    rd = RunDir.open(run_dir, needs="summary")
    record = rd.read_record()
    config = rd.read_text("config.yaml") if rd.has("config.yaml") else ""
    figures = []
    for name, title in FIGURES.items():
        path = rd.file(f"figures/{name}")  # a link leading outside the run dir is refused here
        if path.is_symlink() or path.exists():  # ... and any other link or non-file by read_bytes
            figures.append((title, base64.b64encode(rd.read_bytes(f"figures/{name}")).decode("ascii")))
    if rd.figures.is_dir():  # generation: the sample grids written during training, in epoch order
        for path in sorted(rd.figures.glob("samples_epoch_*.png")):
            epoch = path.stem.rsplit("_", 1)[-1].lstrip("0") or "0"
            figures.append((f"Samples after epoch {epoch} (the same noise each time)",
                            base64.b64encode(rd.read_bytes(f"figures/{path.name}")).decode("ascii")))
    html = _environment().get_template("report.html.j2").render(
        r=record, config=config, figures=figures, css=_CSS, class_counts=_class_counts(record),
        suspects=_suspects(record, rd),
        timings=_timings(record), split_order=("train", "val", "test", "ood"), split_label=_SPLIT_LABEL,
        column_label=_COLUMN_LABEL)
    return rd.write_text("report.html", html)
