"""Figures of a run, written as PNG files (matplotlib, Agg backend). Each returns its path.

Figures draw a bounded number of points whatever the rows (issue 11): a scatter of rows draws a seeded
sample of at most ``MAX_SCATTER_POINTS``, a ROC or precision-recall curve at most ``MAX_CURVE_POINTS``
points along it (its ends kept), and a per-step series (learning rate, gradient norm) at most
``MAX_CURVE_POINTS`` points: the lowest and highest value of each run of consecutive steps, so a spike
stays visible. The figure says so ("5,000 of 1,000,000 points"). Numbers shown on a figure (AUC, AP,
counts) are computed from every row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAX_SCATTER_POINTS = 5000
MAX_CURVE_POINTS = 2000


def scatter_sample(n: int, cap: int = MAX_SCATTER_POINTS, seed: int = 0) -> np.ndarray:
    """Indices of the rows a scatter draws: all ``n``, or a seeded sample of ``cap`` (sorted)."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


def thin_curve(x: np.ndarray, y: np.ndarray, cap: int = MAX_CURVE_POINTS) -> np.ndarray:
    """Indices of at most ``cap`` points along the curve ``(x, y)``, evenly spaced in arc length, first
    and last kept: the drawn line stays within about ``length / cap`` of the full one (≤ 0.001 for a
    ROC curve drawn with 2000 points), sharp turns included."""
    n = len(x)
    if n <= cap:
        return np.arange(n)
    s = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    idx = np.searchsorted(s, np.linspace(0.0, s[-1], cap - 1))  # the first target, 0, is point 0
    return np.unique(np.concatenate([idx, [n - 1]]))


def series_points(values, cap: int = MAX_CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` to draw a per-step series (steps from 1) with at most ``cap`` points: every step,
    or for each of ``cap // 2`` runs of consecutive steps its lowest then its highest value (NaN ignored
    unless the whole run is NaN), both at the run's middle step."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n <= cap:
        return np.arange(1, n + 1), v
    starts = np.linspace(0, n, cap // 2 + 1).astype(np.intp)
    lo, hi = starts[:-1], starts[1:]
    with np.errstate(invalid="ignore"):
        low, high = np.fmin.reduceat(v, lo), np.fmax.reduceat(v, lo)
    mid = (lo + hi + 1) / 2  # the middle of steps lo + 1 … hi
    return np.repeat(mid, 2), np.column_stack([low, high]).ravel()


def _drawn(k: int, n: int, what: str = "points") -> str:
    """``"5,000 of 1,000,000 points"``: what a thinned figure says it draws."""
    return f"{k:,} of {n:,} {what}"


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


def learning_curves(history: list[dict], lrs: list[float], path: Path, *, best_epoch: int | None = None,
                    grad_norms: list[float] | None = None, clip: float | None = None) -> Path:
    """Train/val loss, train/val score, the learning rate per optimizer step and, when logged, the
    pre-clip gradient norm per step."""
    plt = _plt()
    ep = [r["epoch"] for r in history]
    score = next(k[4:] for k in history[0] if k.startswith("val_") and k != "val_loss")  # accuracy, mae, ...
    panels = 4 if grad_norms else 3
    fig, axes = plt.subplots(1, panels, figsize=(4.4 * panels, 3.6))
    for ax, key in zip(axes[:2], ("loss", score)):
        ax.plot(ep, [r[f"train_{key}"] for r in history], label=f"train {key}")
        ax.plot(ep, [r[f"val_{key}"] for r in history], label=f"val {key}")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
        ax.grid(alpha=0.3)
    axes[2].plot(*series_points(lrs))
    axes[2].set_xlabel("optimizer step")
    axes[2].set_title("learning rate" + _series_note(len(lrs)))
    axes[2].grid(alpha=0.3)
    if grad_norms:
        g = np.asarray(grad_norms, dtype=float)
        axes[3].plot(*series_points(np.where(np.isfinite(g), g, np.nan)), lw=0.8)
        if clip:
            axes[3].axhline(clip, color="#b00020", ls="--", lw=1, label=f"clip norm {clip:g}")
            axes[3].legend()
        if np.nanmin(np.where(g > 0, g, np.nan)) > 0:
            axes[3].set_yscale("log")
        axes[3].set_xlabel("optimizer step")
        axes[3].set_title("gradient norm (before clipping)" + _series_note(len(g)))
        axes[3].grid(alpha=0.3)
    return _save(fig, path)


def _series_note(n: int, cap: int = MAX_CURVE_POINTS) -> str:
    """A second title line when a per-step series is drawn thinned: "lowest and highest of each 3 steps"."""
    return "" if n <= cap else f"\n(lowest and highest of each {n / (cap // 2):.3g} steps; {n:,} steps)"


def weight_distributions(monitor: list[dict], path: Path, *, max_layers: int = 6) -> Path:
    """Per layer, over epochs: weight quantile bands, |gradient| quantile bands, and dead ReLU units.

    Bands: 5–95% (light) and 25–75% (dark) with the median line; epoch 0 is the initialization.
    """
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    names = list(monitor[0]["layers"])
    if len(names) > max_layers:  # first, last and evenly spaced ones between
        pick = np.linspace(0, len(names) - 1, max_layers).round().astype(int)
        names = [names[i] for i in sorted(set(pick))]
    dead_names = list(monitor[-1].get("dead_relu", {}))
    rows = 3 if dead_names else 2
    fig, axes = plt.subplots(rows, len(names), figsize=(2.9 * len(names), 2.5 * rows), squeeze=False)
    for c, name in enumerate(names):
        for r, (key, title) in enumerate((("w_q", "weights"), ("g_q", "|gradient|"))):
            ax = axes[r, c]
            pts = [(m["epoch"], m["layers"][name][key]) for m in monitor if key in m["layers"].get(name, {})]
            if not pts:
                ax.set_visible(False)
                continue
            e = np.array([p[0] for p in pts])
            q = np.array([p[1] for p in pts])  # quantiles 0, 5, 25, 50, 75, 95, 100 %
            ax.fill_between(e, q[:, 1], q[:, 5], alpha=0.25, color="#1565c0", lw=0)
            ax.fill_between(e, q[:, 2], q[:, 4], alpha=0.45, color="#1565c0", lw=0)
            ax.plot(e, q[:, 3], color="#0d47a1", lw=1.2)
            if key == "g_q" and (q[:, 1:6] > 0).all():
                ax.set_yscale("log")
            ax.set_title(f"{name}\n{title}", fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if r == rows - 1 or (r == 1 and rows == 2):
                ax.set_xlabel("epoch", fontsize=8)
    if dead_names:
        for c in range(len(names)):
            axes[2, c].set_visible(False)
        ax = axes[2, 0]
        ax.set_visible(True)
        e = [m["epoch"] for m in monitor if m.get("dead_relu")]
        for n in dead_names:
            ax.plot(e, [100 * m["dead_relu"].get(n, np.nan) for m in monitor if m.get("dead_relu")], label=n, lw=1)
        ax.set_ylim(-2, 102)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("dead ReLU units (%)", fontsize=8)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    fig.suptitle("weight and gradient distributions per layer (bands: 5–95%, 25–75%; line: median)", fontsize=9)
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


def _one_vs_rest(probs: np.ndarray, y: np.ndarray, class_names: list[str], draw) -> tuple | None:
    """A figure with ``draw(ax, positives, scores, name)`` called for the positive class (binary)
    or for each class against the rest; ``None`` when no class has both positives and negatives."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    classes = [1] if len(class_names) == 2 else range(len(class_names))
    drawn = 0
    for c in classes:
        pos = (y == c)
        if pos.all() or not pos.any():
            continue
        draw(ax, pos, probs[:, c], class_names[c])
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    return fig, ax


def _curve_note(ax, title: str, thinned: list[tuple[int, int]]) -> None:
    """The title, with a second line when a curve was thinned for drawing: "1,973 of 50,977 curve points
    drawn" (the scores in the legend come from every row)."""
    k, n = sum(k for k, _ in thinned), sum(n for _, n in thinned)
    if k == n:
        ax.set_title(title)
    else:
        ax.set_title(f"{title}\n{_drawn(k, n, 'curve points')} drawn (scores from every row)", fontsize=9)


def roc_curves(probs: np.ndarray, y: np.ndarray, class_names: list[str], path: Path) -> Path | None:
    """ROC curve of the positive class (binary) or of each class against the rest."""
    from sklearn.metrics import auc, roc_curve

    thinned = []

    def draw(ax, pos, score, name):
        fpr, tpr, _ = roc_curve(pos, score)
        keep = thin_curve(fpr, tpr)  # the AUC is computed on every point
        thinned.append((len(keep), len(fpr)))
        ax.plot(fpr[keep], tpr[keep], lw=1.3, label=f"{name} (AUC {auc(fpr, tpr):.3f})")

    made = _one_vs_rest(probs, y, class_names, draw)
    if made is None:
        return None
    fig, ax = made
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    _curve_note(ax, "ROC (test)" if len(class_names) == 2 else "ROC one-vs-rest (test)", thinned)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def regression_fit(pred: np.ndarray, y: np.ndarray, path: Path) -> Path:
    """Predicted vs true, and residuals vs predicted."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    rows = scatter_sample(len(y))
    note = "" if len(rows) == len(y) else f"\n{_drawn(len(rows), len(y))} (a seeded sample)"
    ys, ps = y[rows], pred[rows]
    axes[0].scatter(ys, ps, s=10, alpha=0.6)
    axes[0].plot([lo, hi], [lo, hi], "k--", lw=0.8)
    axes[0].set_xlabel("true")
    axes[0].set_ylabel("predicted")
    axes[0].set_title("predicted vs true (test)" + note)
    axes[1].scatter(ps, ps - ys, s=10, alpha=0.6)
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set_xlabel("predicted")
    axes[1].set_ylabel("residual (predicted − true)")
    axes[1].set_title("residuals (test)" + note)
    for ax in axes:
        ax.grid(alpha=0.3)
    return _save(fig, path)


def forecast(history: np.ndarray, indices: dict, pred: np.ndarray, *, window: int, path: Path, title: str = ""
             ) -> Path:
    """The target series with each split's stretch shaded, and on the test split the one-step-ahead
    forecasts (each test window's first predicted step) beside the truth; the last test window's whole
    horizon is drawn too. Time is the step index of the series."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4.2))
    t = np.arange(len(history))
    ax.plot(t, history, color="0.35", lw=1.0, label="history (truth)")
    colors = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}
    for split in ("train", "val", "test"):
        rows = np.asarray(indices[split])
        ax.axvspan(rows.min() + window, rows.max() + window, color=colors[split], alpha=0.08, label=f"{split} targets")
    test = np.asarray(indices["test"])
    ax.plot(test + window, pred[:, 0], color="tab:red", lw=1.2, label="forecast, 1 step ahead (test)")
    last = test[-1] + window + np.arange(pred.shape[1])
    ax.plot(last, pred[-1], "o--", color="tab:purple", ms=3, lw=1.0, label=f"last window's {pred.shape[1]} steps")
    ax.set_xlabel("time step")
    ax.set_ylabel("target")
    ax.set_title(f"forecast on the test split{': ' + title if title else ''}")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def pr_curves(probs: np.ndarray, y: np.ndarray, class_names: list[str], path: Path) -> Path | None:
    """Precision-recall curve of the positive class (binary) or of each class against the rest."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    thinned = []

    def draw(ax, pos, score, name):
        prec, rec, _ = precision_recall_curve(pos, score)
        keep = thin_curve(rec, prec)  # the AP is computed on every row
        thinned.append((len(keep), len(rec)))
        ax.plot(rec[keep], prec[keep], lw=1.3, label=f"{name} (AP {average_precision_score(pos, score):.3f}, "
                f"base rate {pos.mean():.2f})")

    made = _one_vs_rest(probs, y, class_names, draw)
    if made is None:
        return None
    fig, ax = made
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    _curve_note(ax, "precision-recall (test)", thinned)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def reliability(probs: np.ndarray, y: np.ndarray, path: Path, bins: int = 15) -> Path:
    """Reliability diagram: accuracy vs confidence of the predicted class, with bin counts."""
    plt = _plt()
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges) - 1, 0, bins - 1)
    acc = np.array([(pred[which == b] == y[which == b]).mean() if (which == b).any() else np.nan for b in range(bins)])
    cnt = np.bincount(which, minlength=bins)
    ece = np.nansum(cnt / cnt.sum() * np.abs(acc - np.array([conf[which == b].mean() if cnt[b] else 0 for b in range(bins)])))
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    centers = (edges[:-1] + edges[1:]) / 2
    ax.bar(centers, np.nan_to_num(acc), width=1 / bins, edgecolor="k", alpha=0.7, label="accuracy in bin")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    for x, n in zip(centers, cnt):
        if n:
            ax.text(x, 0.02, str(n), ha="center", fontsize=6, rotation=90)
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (test), ECE {ece:.3f}")
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def threshold_sweep(p_pos: np.ndarray, y: np.ndarray, chosen: float, path: Path) -> Path:
    """Precision, recall, F1 and specificity of the positive class vs the threshold (validation)."""
    from methodo.evaluate.threshold import sweep

    plt = _plt()
    sw = sweep(p_pos, y, np.linspace(0.005, 0.995, 199))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k in ("precision", "recall", "f1", "specificity"):
        ax.plot(sw["threshold"], sw[k], label=k)
    ax.axvline(chosen, color="k", ls="--", lw=1, label=f"chosen {chosen:.3f}")
    ax.axvline(0.5, color="grey", ls=":", lw=1, label="0.5")
    ax.set_xlabel("threshold on P(positive)")
    ax.set_title("threshold sweep (validation)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def label_errors(suspects: list[dict], ds, path: Path) -> Path:
    """The suspect rows (``label_issues.csv`` rows) with their inputs: images for image data, feature values
    for tables."""
    plt = _plt()
    n = len(suspects)
    if ds.kind == "image":
        fig, axes = plt.subplots(1, n, figsize=(1.8 * n + 0.4, 2.3), squeeze=False)
        for ax, s in zip(axes[0], suspects):
            img = ds.X[s["row"]]
            ax.imshow(img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1) / max(img.max(), 1e-8), cmap="gray")
            ax.set_title(f"row {s['row']}\ngiven {s['given']}\nmodel {s['suggested']} ({s['p_suggested']:.2f})", fontsize=7)
            ax.axis("off")
        return _save(fig, path)
    if ds.kind == "text":  # labeled text: the texts themselves (kept by the tokenizer step)
        texts = ds.meta.get("text")
        cols, values = ["text"], [[(str(texts[s["row"]]) if texts is not None else "")[:90]] for s in suspects]
    elif ds.kind == "graph":  # packed graphs: their size (methodo.data.graphs)
        from methodo.data.graphs import unpack

        cols, values = ["nodes", "edges"], []
        for s in suspects:
            adj, mask, _ = unpack(ds.X[s["row"]], ds.X.shape[1])
            values.append([str(int(mask.sum())), str(int(adj.sum() // 2))])
    else:
        cols = ds.feature_names[:8]
        values = [[f"{v:.3g}" for v in ds.X[s["row"]][:len(cols)]] for s in suspects]
    fig, ax = plt.subplots(figsize=(min(14, 1.3 * len(cols) + 4) if ds.kind != "text" else 12, 0.4 * n + 1))
    ax.axis("off")
    cells = [[s["row"], s["given"], s["suggested"], f"{s['p_given']:.3f}"] + v for s, v in zip(suspects, values)]
    table = ax.table(cellText=cells, colLabels=["row", "given", "model", "p(given)", *cols], loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.5)
    ax.set_title("suspected label errors (the most suspect; all in label_issues.csv)")
    return _save(fig, path)


def thumbnail(img: np.ndarray, path: Path, size: int = 96) -> Path:
    """One image ``(C, H, W)`` as a small PNG (min-max scaled to 0-255, enlarged without smoothing to about
    ``size`` pixels, never shrunk below its own size): a suspect's picture in the report's label-issue table."""
    from PIL import Image

    a = np.asarray(img, dtype=np.float64)
    a = a[0] if a.shape[0] == 1 else np.moveaxis(a[:3], 0, -1)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    a = np.nan_to_num((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)) * 255
    im = Image.fromarray(a.round().astype(np.uint8))
    k = max(1, size // max(im.size))
    im = im.resize((im.size[0] * k, im.size[1] * k), Image.NEAREST)
    im.save(path, format="PNG")
    return path


# class colours for masks: background dark, then distinct hues
_MASK_COLOURS = np.array([[0.12, 0.12, 0.12], [0.90, 0.30, 0.25], [0.25, 0.60, 0.95], [0.98, 0.80, 0.20],
                          [0.45, 0.80, 0.35], [0.70, 0.40, 0.85], [0.95, 0.55, 0.75], [0.60, 0.60, 0.60]])


def segmentation_samples(images: np.ndarray, masks: np.ndarray, pred: np.ndarray, class_names: list[str],
                         path: Path, n: int = 6) -> Path:
    """Rows: test image, true mask, predicted mask (with its pixel accuracy), for ``n`` test images."""
    from matplotlib.patches import Patch

    plt = _plt()
    n = min(n, len(images))
    colours = _MASK_COLOURS[np.arange(len(class_names)) % len(_MASK_COLOURS)]
    fig, axes = plt.subplots(3, n, figsize=(1.9 * n + 0.4, 6.2), squeeze=False)
    for j in range(n):
        img = np.moveaxis(images[j], 0, -1)
        axes[0, j].imshow(img.squeeze(-1) if img.shape[-1] == 1 else np.clip(img, 0, 1), cmap="gray")
        axes[1, j].imshow(colours[masks[j]])
        axes[2, j].imshow(colours[pred[j]])
        axes[2, j].set_xlabel(f"pixel acc {float((masks[j] == pred[j]).mean()):.2f}", fontsize=8)
    for i, label in enumerate(("image", "true mask", "predicted")):
        axes[i, 0].set_ylabel(label)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.legend(handles=[Patch(color=colours[c], label=name) for c, name in enumerate(class_names)],
               loc="lower center", ncol=len(class_names), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def perplexity_bars(metrics: dict, baselines: dict, extra_baselines: dict, path: Path) -> Path:
    """Perplexity of the model and of the baselines per split (log scale): in-domain vs out-of-domain."""
    plt = _plt()
    splits = [s for s in ("train", "val", "test", "ood") if s in metrics]
    series = {"model": [metrics[s].get("perplexity") for s in splits]}
    for b in baselines:  # baselines are computed on test, and on each evaluation-only set
        series[b] = [(baselines[b] if s == "test" else extra_baselines.get(s, {}).get(b, {})).get("perplexity")
                     if s in ("test", *extra_baselines) else None for s in splits]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    width = 0.8 / len(series)
    for k, (name, vals) in enumerate(series.items()):
        xs = np.arange(len(splits)) + (k - (len(series) - 1) / 2) * width
        ok = [(x, v) for x, v in zip(xs, vals) if v is not None]
        bars = ax.bar([x for x, _ in ok], [v for _, v in ok], width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(splits)), ["out-of-domain" if s == "ood" else s for s in splits])
    ax.set_yscale("log")
    ax.set_ylabel("perplexity (log scale, lower is better)")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
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
    n, n_wrong = len(y), int((pred != y).sum())  # counted on every row, drawn on the sample
    rows = scatter_sample(n)
    points, y, pred = points[rows], y[rows], pred[rows]
    for c, name in enumerate(class_names):
        m = y == c
        if m.any():
            ax.scatter(points[m, 0], points[m, 1], s=12, color=cmap(c % cmap.N), alpha=0.75, label=name, lw=0)
    wrong = pred != y
    if wrong.any():
        ax.scatter(points[wrong, 0], points[wrong, 1], s=46, facecolors="none", edgecolors="black", lw=1.0,
                   label=f"wrong prediction ({n_wrong})")
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    note = "" if len(rows) == n else f"\n{_drawn(len(rows), n)} drawn (a seeded sample)"
    ax.set_title((title or f"test embeddings ({method})") + note, fontsize=9)
    ax.legend(fontsize=7, markerscale=1.2, loc="best", framealpha=0.8)
    ax.grid(alpha=0.2)
    return _save(fig, path)


def kfold_metrics(runs: list[dict], path: Path, *, metrics: list[str]) -> Path:
    """Test metrics of each fold as bars, with the mean over folds as a dashed line.

    A metric no fold computed is an error, not a silently missing panel."""
    for m in metrics:
        if runs and all(m not in r["metrics"]["test"] for r in runs):
            raise ValueError(f"k-fold figure: no fold has the test metric {m!r} "
                             f"(they have {sorted(runs[0]['metrics']['test'])})")
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


def per_label(rows: list[dict], path: Path) -> Path:
    """Multi-label: precision, recall and F1 of each label (test), with each label's support."""
    plt = _plt()
    names = [r["label"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 3.6))
    for i, key in enumerate(("precision", "recall", "f1")):
        vals = [np.nan if r[key] is None else r[key] for r in rows]
        ax.bar(x + (i - 1) * 0.27, vals, width=0.27, label=key)
    ax.set_xticks(x, [f"{n}\n(n={r['support']})" for n, r in zip(names, rows)])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test score")
    ax.set_title("Per-label scores at threshold 0.5 (n: rows with the label)")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)
