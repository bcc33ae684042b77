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
    o.write_split_predictions(["row", "true", "predicted", *[f"p_{c}" for c in names]], lambda s: (
        [int(r), names[int(t)], names[int(p.argmax())], *[f"{v:.6f}" for v in p]]
        for r, t, p in zip(o.data.indices[s], o.data.raw_y[s], o.preds[s])))


SPEC = TaskSpec(
    name="classification", score="accuracy", higher_is_better=True, loss=cross_entropy, batch_score=correct,
    n_outputs=lambda ds: ds.n_classes, strata=lambda y: y, to_scores=softmax, decide=argmax, baselines=_baselines,
    tables=_tables,
    write_outputs=_write_outputs, has_classes=True, reference=True, headline=("accuracy", 1), label_issues="multiclass",
    help="one class per row: cross-entropy, epoch score accuracy")
TASKS.register(SPEC.name, SPEC, help=SPEC.help)
