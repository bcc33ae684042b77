"""Figures of a run, written as PNG files (matplotlib, Agg backend). Each returns its path."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def learning_curves(history: list[dict], lrs: list[float], path: Path, *, best_epoch: int | None = None) -> Path:
    """Train/val loss, train/val score and the learning rate per optimizer step."""
    plt = _plt()
    ep = [r["epoch"] for r in history]
    score = "accuracy" if "val_accuracy" in history[0] else "mae"
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key in zip(axes[:2], ("loss", score)):
        ax.plot(ep, [r[f"train_{key}"] for r in history], label=f"train {key}")
        ax.plot(ep, [r[f"val_{key}"] for r in history], label=f"val {key}")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
        ax.grid(alpha=0.3)
    axes[2].plot(np.arange(1, len(lrs) + 1), lrs)
    axes[2].set_xlabel("optimizer step")
    axes[2].set_title("learning rate")
    axes[2].grid(alpha=0.3)
    return _save(fig, path)


def confusion_matrix(cm: list[list[int]], class_names: list[str], path: Path) -> Path:
    """Counts, and the same matrix normalized by true class."""
    plt = _plt()
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(class_names) + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, mat, title, fmt in ((axes[0], cm, "counts", "d"), (axes[1], norm, "normalized by true class", ".2f")):
        ax.imshow(mat, cmap="Blues")
        ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
        ax.set_yticks(range(len(class_names)), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"confusion matrix ({title})")
        if len(class_names) <= 20:
            hi = mat.max() / 2 if mat.max() else 1
            for i in range(mat.shape[0]):
                for j in range(mat.shape[1]):
                    ax.text(j, i, format(mat[i, j], fmt), ha="center", va="center", fontsize=8,
                            color="white" if mat[i, j] > hi else "black")
    return _save(fig, path)


def roc_curves(probs: np.ndarray, y: np.ndarray, class_names: list[str], path: Path) -> Path | None:
    """ROC curve of the positive class (binary) or of each class against the rest."""
    from sklearn.metrics import auc, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    classes = [1] if len(class_names) == 2 else range(len(class_names))
    drawn = 0
    for c in classes:
        pos = (y == c)
        if pos.all() or not pos.any():
            continue
        fpr, tpr, _ = roc_curve(pos, probs[:, c])
        ax.plot(fpr, tpr, lw=1.3, label=f"{class_names[c]} (AUC {auc(fpr, tpr):.3f})")
        drawn += 1
    if not drawn:
        _plt().close(fig)
        return None
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC (test)" if len(class_names) == 2 else "ROC one-vs-rest (test)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def regression_fit(pred: np.ndarray, y: np.ndarray, path: Path) -> Path:
    """Predicted vs true, and residuals vs predicted."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    axes[0].scatter(y, pred, s=10, alpha=0.6)
    axes[0].plot([lo, hi], [lo, hi], "k--", lw=0.8)
    axes[0].set_xlabel("true")
    axes[0].set_ylabel("predicted")
    axes[0].set_title("predicted vs true (test)")
    axes[1].scatter(pred, pred - y, s=10, alpha=0.6)
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set_xlabel("predicted")
    axes[1].set_ylabel("residual (predicted − true)")
    axes[1].set_title("residuals (test)")
    for ax in axes:
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _show(ax, img: np.ndarray) -> None:
    """Draw one (C, H, W) image in [0, 1]."""
    img = np.clip(np.asarray(img, dtype=np.float32), 0, 1)
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(img.transpose(1, 2, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def augmentation_grid(originals: np.ndarray, augmented: list[np.ndarray], path: Path, *,
                      labels: list[str] | None = None, title: str = "") -> Path:
    """One row per image: the original (first column), then each augmented copy."""
    plt = _plt()
    n, k = len(originals), len(augmented)
    fig, axes = plt.subplots(n, k + 1, figsize=(1.4 * (k + 1), 1.4 * n + (0.5 if title else 0)), squeeze=False)
    for i in range(n):
        _show(axes[i, 0], originals[i])
        for j in range(k):
            _show(axes[i, j + 1], augmented[j][i])
        if labels:
            axes[i, 0].set_ylabel(labels[i], fontsize=7)
    axes[0, 0].set_title("original", fontsize=8)
    for j in range(k):
        axes[0, j + 1].set_title(f"augmented {j + 1}", fontsize=8)
    if title:
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title, width=int(18 * (k + 1)))), fontsize=8)
    return _save(fig, path)


def embeddings(points: np.ndarray, y: np.ndarray, pred: np.ndarray, class_names: list[str], path: Path, *,
               method: str, title: str = "") -> Path:
    """2-D projection of embeddings, colored by true class; wrong predictions ringed in black."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c, name in enumerate(class_names):
        m = y == c
        if m.any():
            ax.scatter(points[m, 0], points[m, 1], s=12, color=cmap(c % cmap.N), alpha=0.75, label=name, lw=0)
    wrong = pred != y
    if wrong.any():
        ax.scatter(points[wrong, 0], points[wrong, 1], s=46, facecolors="none", edgecolors="black", lw=1.0,
                   label=f"wrong prediction ({int(wrong.sum())})")
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    ax.set_title(title or f"test embeddings ({method})", fontsize=9)
    ax.legend(fontsize=7, markerscale=1.2, loc="best", framealpha=0.8)
    ax.grid(alpha=0.2)
    return _save(fig, path)


def kfold_metrics(runs: list[dict], path: Path, *, metrics: list[str]) -> Path:
    """Test metrics of each fold as bars, with the mean over folds as a dashed line."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    folds = [r["fold"] for r in runs]
    for ax, m in zip(axes[0], metrics):
        vals = [r["metrics"]["test"].get(m) for r in runs]
        ok = [v for v in vals if v is not None]
        ax.bar(folds, [v if v is not None else 0 for v in vals], color="#4c72b0")
        if ok:
            mean, sd = float(np.mean(ok)), float(np.std(ok, ddof=1)) if len(ok) > 1 else 0.0
            ax.axhline(mean, color="k", ls="--", lw=1, label=f"mean {mean:.3f} ± {sd:.3f}")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks(folds)
        ax.set_xlabel("fold")
        ax.set_title(f"test {m}", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)
