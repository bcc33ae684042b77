"""Multi-label classification: several yes/no labels per row (an image can be even *and* have a loop).

One sigmoid output per label, binary cross-entropy summed over labels, epoch score subset accuracy (every
label of the row right). Metrics per label and pooled (``f1_macro``, ``f1_micro``, ``ap_macro``,
``roc_auc_macro``), exact match (``subset_accuracy``) and ``hamming_loss``; the baselines predict each
label from its training frequency. A stratified split keeps the label combinations in proportion
(combinations seen fewer than 3 times are pooled).
"""

from __future__ import annotations

from methodo.tasks.base import TASKS, TaskSpec


def _bce(out, y, class_weights=None, label_smoothing=0.0):
    import torch.nn.functional as F

    target = y.float()
    if label_smoothing:
        target = target * (1 - label_smoothing) + 0.5 * label_smoothing
    return F.binary_cross_entropy_with_logits(out.float(), target, pos_weight=class_weights)


def _exact(out, y, y_std=1.0):
    return ((out >= 0) == (y >= 0.5)).all(1).sum(), len(y)  # logit ≥ 0 ⇔ probability ≥ 0.5


def _sigmoid(out, y=None):
    return out.sigmoid()


def _decide(p):
    return (p >= 0.5).astype("int64")


def _combinations(y, min_count: int = 3):
    """Each row's label combination as one integer; combinations rarer than ``min_count`` pooled into one."""
    import numpy as np

    bits = (np.asarray(y) >= 0.5).astype(np.int64)
    code = bits @ (1 << np.arange(bits.shape[1], dtype=np.int64))
    values, inverse, counts = np.unique(code, return_inverse=True, return_counts=True)
    rare = counts[inverse] < min_count
    return np.where(rare, -1, inverse) + 1  # 0: the pooled rare combinations


def _baselines(y_train, y_eval, n_labels, seed):
    from methodo.evaluate.baselines import multilabel_baselines

    return multilabel_baselines(y_train, y_eval, n_labels, seed=seed)


def _tables(scores, y, label_names):
    from methodo.evaluate.metrics import multilabel_tables

    return multilabel_tables(scores, y, label_names)


def _write_outputs(o) -> None:
    """Per-label precision, recall and F1 beside each label's frequency, and the predictions files (val, test)."""
    from methodo.report import plots

    names = o.ds.class_names
    plots.per_label(o.record.tables["test"]["per_label"], o.rd.figure("per_label.png"))
    joined = lambda row: "|".join(n for n, v in zip(names, row) if v >= 0.5)  # noqa: E731
    o.write_split_predictions(["row", "true", "predicted", *[f"p_{n}" for n in names]], lambda s: (
        [int(r), joined(t), joined(p), *[f"{v:.6f}" for v in p]]
        for r, t, p in zip(o.data.indices[s], o.data.raw_y[s], o.preds[s])))


SPEC = TaskSpec(
    name="multilabel", score="subset_accuracy", higher_is_better=True, loss=_bce, batch_score=_exact,
    n_outputs=lambda ds: ds.n_classes, strata=_combinations, to_scores=_sigmoid, decide=_decide,
    baselines=_baselines, tables=_tables, write_outputs=_write_outputs, headline=("f1_macro", 1),
    label_issues="multilabel",
    explain="explanations are drawn for single-label classification and regression (task: multilabel)",
    help="several yes/no labels per row: sigmoid outputs, binary cross-entropy, epoch score subset accuracy")
TASKS.register(SPEC.name, SPEC, help=SPEC.help)
