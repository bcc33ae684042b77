"""Segmentation: one class per pixel. Per-pixel cross-entropy, epoch score pixel accuracy; metrics over
all pixels of a split (the dataset-level IoU of PASCAL VOC and Cityscapes)."""

from __future__ import annotations

from methodo.tasks.base import TASKS, TaskSpec, argmax, correct, cross_entropy, softmax


def _dominant_class(masks):  # stratify images by their largest foreground class
    from methodo.data.preprocess import dominant_class

    return dominant_class(masks)


def _baselines(y_train, y_eval, n_classes, seed):
    from methodo.evaluate.baselines import segmentation_baselines

    return segmentation_baselines(y_train, y_eval, n_classes, seed)


def _tables(scores, y, class_names):
    from methodo.evaluate.metrics import segmentation_tables

    return segmentation_tables(scores, y, class_names)


def _write_outputs(o) -> None:
    """Pixel confusion matrix, test images beside true and predicted masks, one row per val / test image."""
    import numpy as np

    from methodo.report import plots

    names, masks = o.ds.class_names, o.data.raw_y["test"]
    pred = o.preds["test"].argmax(1)
    plots.confusion_matrix(o.record.tables["test"]["confusion_matrix"], names, o.rd.figure("confusion_matrix.png"))
    plots.segmentation_samples(o.ds.X[o.data.indices["test"]], masks, pred, names, o.rd.figure("segmentation.png"))
    present = lambda m: " ".join(names[c] for c in np.unique(m))  # noqa: E731
    o.write_split_predictions(["row", "pixel_accuracy", "true_classes", "predicted_classes"], lambda s: (
        [int(r), f"{float((t == p).mean()):.4f}", present(t), present(p)]
        for r, t, p in zip(o.data.indices[s], o.data.raw_y[s], o.preds[s].argmax(1))))


SPEC = TaskSpec(
    name="segmentation", score="pixel_accuracy", higher_is_better=True, loss=cross_entropy, batch_score=correct,
    n_outputs=lambda ds: ds.n_classes, strata=_dominant_class, to_scores=softmax, decide=argmax,
    metric_input=argmax,
    baselines=_baselines, tables=_tables, write_outputs=_write_outputs, pixel_classes=True, count_unit="pixels",
    headline=("mean_iou", 1), per_row=False,
    explain="explanations are drawn for classification and regression only (task: segmentation)",
    help="one class per pixel: per-pixel cross-entropy, epoch score pixel accuracy")
TASKS.register(SPEC.name, SPEC, help=SPEC.help)
