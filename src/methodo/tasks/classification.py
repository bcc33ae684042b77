"""Classification: one class per row. Cross-entropy, epoch score accuracy, probabilities per class."""

from __future__ import annotations

from methodo.tasks.base import TASKS, TaskSpec, argmax, correct, cross_entropy, softmax


def _baselines(y_train, y_eval, n_classes, seed):
    from methodo.evaluate.baselines import classification_baselines

    return classification_baselines(y_train, y_eval, n_classes, seed=seed)


def _tables(scores, y, class_names):
    from methodo.evaluate.metrics import classification_tables

    return classification_tables(scores, y, class_names)


def _write_outputs(o) -> None:
    """Confusion matrix, ROC/PR curves, calibration, the threshold sweep, label-error suspects, predictions
    (validation and test)."""
    from methodo.report import plots

    probs, y = o.preds["test"], o.data.raw_y["test"]
    names = o.ds.class_names
    plots.confusion_matrix(o.record.tables["test"]["confusion_matrix"], names, o.rd.figure("confusion_matrix.png"))
    plots.roc_curves(probs, y, names, o.rd.figure("roc.png"))
    plots.pr_curves(probs, y, names, o.rd.figure("pr.png"))
    plots.reliability(probs, y, o.rd.figure("reliability.png"))
    if o.record.threshold is not None:
        plots.threshold_sweep(o.preds["val"][:, 1], o.data.raw_y["val"], o.record.threshold.value,
                              o.rd.figure("threshold.png"))
    suspects = next((f.evidence["top"] for f in o.findings if f.id == "label_errors"), None)
    if suspects:
        plots.label_errors(suspects, o.ds, o.rd.figure("label_errors.png"))
        if o.ds.kind == "image":  # the report's label-issue table shows each suspect's image
            for s in suspects:
                plots.thumbnail(o.ds.X[s["row"]], o.rd.figure(f"suspect_{s['rank']}.png"))
    o.write_split_columns(["row", "true", "predicted", *[f"p_{c}" for c in names]], lambda s: _columns(o, s, names))


def _columns(o, split: str, names: list[str]) -> list:
    """A split's prediction columns: row id, true and predicted class names, each class probability
    with 6 decimals (``f"{p:.6f}"``)."""
    import numpy as np

    from methodo import csvtext

    p = np.asarray(o.preds[split])
    return [csvtext.integers(o.data.indices[split]), csvtext.labels(np.asarray(o.data.raw_y[split]), names),
            csvtext.labels(p.argmax(1), names), *[csvtext.fixed(p[:, k]) for k in range(p.shape[1])]]


SPEC = TaskSpec(
    name="classification", score="accuracy", higher_is_better=True, loss=cross_entropy, batch_score=correct,
    n_outputs=lambda ds: ds.n_classes, strata=lambda y: y, to_scores=softmax, decide=argmax, baselines=_baselines,
    tables=_tables,
    write_outputs=_write_outputs, has_classes=True, reference=True, headline=("accuracy", 1), label_issues="multiclass",
    help="one class per row: cross-entropy, epoch score accuracy")
TASKS.register(SPEC.name, SPEC, help=SPEC.help)
