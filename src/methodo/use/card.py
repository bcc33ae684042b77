"""``MODEL_CARD.md``: every run's model card, in the Hugging Face model-card layout.

YAML metadata first (``library_name``, ``tags``, ``datasets``, ``metrics`` and a ``model-index`` with the
test results, as the Hub reads them), then the sections of the Hugging Face template: model details,
intended use (and how to use it: ``methodo predict``, ``methodo.load``), training data and splits with
class counts, training procedure, evaluation results with their intervals beside the dummy baselines,
the findings as known limitations, the config and the versions. Written from the validated run record
and the resolved config when the run closes; ``methodo export`` copies it next to the model.

Examples
--------
>>> from methodo.record import RunRecord
>>> from methodo.use.card import model_card
>>> card = model_card(RunRecord(name="demo", task="classification", dataset="iris", seed=0), "name: demo\\n")
>>> card.splitlines()[0], "## Intended use" in card
('---', True)
"""

from __future__ import annotations

from typing import Any

import yaml

_HF_TASK = {"classification": "classification", "regression": "regression", "multilabel": "multi-label-classification",
            "segmentation": "image-segmentation", "language_modeling": "text-generation"}


def _fmt(v: Any) -> str:
    if v is None:
        return "undefined"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _hf_task(record) -> str:
    kind = record.data.kind if record.data else ""
    base = _HF_TASK.get(record.task or "", record.task or "")
    if record.task in ("classification", "regression"):
        return f"{'image' if kind == 'image' else 'tabular'}-{base}"
    return base


def model_card(record, config_text: str, *, inputs: dict | None = None) -> str:
    """The card's Markdown text for a run record (``summary.json``) and its resolved config."""
    test = (record.metrics or {}).get("test", {})
    iv = (record.intervals or {}).get("test", {})
    meta = {
        "library_name": "pytorch",
        "tags": ["methodo", "pytorch", *(x for x in (record.task, record.data.kind if record.data else None) if x)],
        "datasets": [record.dataset],
        "metrics": [m for m, v in test.items() if v is not None],
        "model-index": [{"name": record.name, "results": [{
            "task": {"type": _hf_task(record)},
            "dataset": {"name": record.dataset, "type": record.dataset, "split": "test"},
            "metrics": [{"type": m, "value": round(float(v), 6), "name": f"test {m}"} for m, v in test.items()
                        if v is not None]}]}] if test else [],
    }
    out = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
           f"# Model card: {record.name}", ""]
    status = "" if record.status == "finished" else f" **The run did not finish (status {record.status}" + (
        f": {record.failure}" if record.failure else "") + "): do not use this model.**"
    out += [f"A {record.task or 'model'} model trained by methodo (a deep-learning methodology toolkit for PyTorch) "
            f"on `{record.dataset}`.{status}", ""]

    out += ["## Model details", ""]
    if record.model:
        out.append(f"- **Architecture:** `{record.model.name}`, {record.model.parameters:,} parameters (PyTorch)")
    out += [f"- **Task:** {record.task}", f"- **Seed:** {record.seed} (same config, seed and machine give the same "
            "numbers)", f"- **Epochs run:** {record.epochs_run} (best epoch {record.best_epoch}, whose weights are "
            "the model)", f"- **Trained with:** " + ", ".join(f"{k} {v}" for k, v in record.versions.items())]
    if record.git_commit:
        out.append(f"- **Code commit:** `{record.git_commit}`")
    if record.mlflow_run_id:
        out.append(f"- **MLflow run:** `{record.mlflow_run_id}`")
    out.append("")

    out += ["## Intended use", ""]
    desc = record.data.description if record.data else record.dataset
    what = {"classification": "predicts one class per input", "regression": "predicts one number per input",
            "multilabel": "predicts which labels apply to each input", "segmentation": "predicts a class per pixel",
            "language_modeling": "predicts the next character"}.get(record.task or "", "predicts")
    out += [f"The model {what}, for inputs like those it was trained on ({desc}).", ""]
    if inputs and inputs.get("kind") == "tabular":
        cols = inputs.get("columns", []) + inputs.get("categorical", [])
        out += [f"Inputs: a table with the columns {', '.join(f'`{c}`' for c in cols[:30])}"
                + (" …" if len(cols) > 30 else "") + ", preprocessed exactly as in training.", ""]
    elif inputs and inputs.get("kind") == "image":
        out += [f"Inputs: {'grayscale' if inputs.get('channels') == 1 else 'RGB'} images of "
                f"{'×'.join(map(str, inputs.get('image_size') or []))} pixels, preprocessed exactly as in training.", ""]
    out += ["How to use it, with the run's own preprocessing:", "", "```text",
            "methodo predict RUN_DIR new.csv --out predictions.csv   # or an image folder",
            "methodo evaluate RUN_DIR labeled.csv                     # metrics, intervals, drift checks", "```",
            "", "```python", "import methodo", "model = methodo.load(\"RUN_DIR\")", "model.predict(X)", "```", "",
            "Out of scope: inputs unlike the training data (run `methodo evaluate` on labeled new data: its drift "
            "checks say when the data moved), and any decision about people without checking the model's "
            "behaviour on every group they belong to.", ""]

    out += ["## Training data", ""]
    if record.data:
        d = record.data
        out += [d.description, "", f"Split: {', '.join(f'{s} {v.n}' for s, v in d.splits.items())} "
                f"({d.count_unit or 'rows'}); transforms fitted on the training split only.", ""]
        classes = d.classes or []
        if classes and any(v.class_counts for v in d.splits.values()) and len(classes) <= 30:
            out += ["| split | " + " | ".join(_fmt(c) for c in classes) + " |",
                    "|---|" + "---:|" * len(classes)]
            for s, v in d.splits.items():
                if v.class_counts:
                    out.append(f"| {s} | " + " | ".join(str(v.class_counts.get(c, "")) for c in classes) + " |")
            out.append("")
        if d.balance != "none":
            out += [f"Balancing of the training split: {d.balance}.", ""]
        if d.augment:
            out += [f"Training-only augmentation: {d.augment}.", ""]
        if d.features and d.features.get("steps"):
            out += [f"Feature steps (fitted on train): {d.features['steps']}.", ""]

    out += ["## Evaluation results", ""]
    if test:
        bases = list(record.baselines)
        out += ["Test split, touched once, at the end; percentile bootstrap intervals; dummy baselines fitted on "
                "the training labels.", "",
                "| metric | test | interval | " + " | ".join(f"baseline: {b}" for b in bases) + " |",
                "|---|---:|---|" + "---:|" * len(bases)]
        for m, v in test.items():
            band = f"[{iv[m][0]:.4f}, {iv[m][1]:.4f}]" if iv.get(m) else "—"
            out.append(f"| {m} | {_fmt(v)} | {band} | "
                       + " | ".join(_fmt(record.baselines[b].get(m)) for b in bases) + " |")
        out.append("")
    else:
        out += ["No test metrics (the run did not finish).", ""]

    out += ["## Known limitations", ""]
    if record.findings:
        out += ["What the run's checks found (evidence in `summary.json` and `report.html`):", ""]
        for f in record.findings:
            out.append(f"- **[{f.severity}] {f.title}** (`{f.id}`). {f.action}")
        out.append("")
    else:
        out += ["The run's checks found no problem; that is not a proof of fitness for a given use.", ""]

    out += ["## Config", "", "```yaml", config_text.rstrip(), "```", ""]
    return "\n".join(out)
