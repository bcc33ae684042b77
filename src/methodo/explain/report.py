"""Explanations of a trained model for the report: an image gallery, or ranked tabular features.

Examples
--------
>>> import numpy as np
>>> from methodo.explain.report import choose_examples
>>> probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])
>>> choose_examples(probs, np.array([0, 0, 1, 1]), 4)   # wrong ones first, most confident first
[3, 1, 0, 2]
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from methodo.progress import bar
from methodo.tasks import task_spec


def choose_examples(probs: np.ndarray, y_true: np.ndarray, n: int) -> list[int]:
    """Up to ``n`` rows: half wrong predictions (most confident first), the rest right ones."""
    pred = probs.argmax(1)
    conf = probs.max(1)
    wrong = [int(i) for i in np.argsort(-conf, kind="stable") if pred[i] != y_true[i]]
    right = [int(i) for i in np.argsort(-conf, kind="stable") if pred[i] == y_true[i]]
    k_wrong = min(len(wrong), n // 2)
    k_right = min(len(right), n - k_wrong)
    k_wrong = min(len(wrong), n - k_right)
    return wrong[:k_wrong] + right[:k_right]


def image_gallery(model, X, probs: np.ndarray, y_true: np.ndarray, class_names: list[str], methods: list[str],
                  n: int, path: Path, *, seed: int = 0, mean=None, std=None, progress: bool = False) -> dict:
    """Attributions of each method for ``n`` test images, drawn as one figure; returns what was shown.
    ``progress``: a bar over the methods on a terminal."""
    import torch

    from methodo.explain import attribute
    from methodo.report.plots import _plt, _save

    rows = choose_examples(probs, y_true, n)
    device = next(model.parameters()).device
    x = X[rows].to(device).float()
    target = torch.as_tensor(probs[rows].argmax(1), device=device)  # explain the prediction
    t0 = time.perf_counter()
    maps = {m: attribute(m, model, x, target, seed).float().cpu().numpy()
            for m in bar(methods, enabled=progress, desc="explain", unit="method")}
    elapsed = time.perf_counter() - t0
    img = x.detach().cpu().numpy()
    if mean is not None and std is not None:  # back to pixel units for display
        img = img * np.asarray(std).reshape(1, -1, 1, 1) + np.asarray(mean).reshape(1, -1, 1, 1)

    plt = _plt()
    cols = 1 + len(methods)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.9 * cols, 1.9 * len(rows)), squeeze=False)
    shown = []
    for r, i in enumerate(rows):
        pred, truth = int(probs[i].argmax()), int(y_true[i])
        ok = pred == truth
        pic = img[r].transpose(1, 2, 0)
        if pic.shape[2] == 1:
            axes[r, 0].imshow(pic[:, :, 0], cmap="gray")
        else:
            lo, hi = pic.min(), pic.max()
            axes[r, 0].imshow((pic - lo) / max(hi - lo, 1e-12))
        axes[r, 0].set_title(f"{'right' if ok else 'WRONG'}: {class_names[pred]} ({probs[i, pred]:.2f})\n"
                             f"true {class_names[truth]}", fontsize=7, color="black" if ok else "#b00020")
        for c, m in enumerate(methods, start=1):
            a = maps[m][r].sum(0)  # over channels
            lim = max(float(np.abs(a).max()), 1e-12)
            axes[r, c].imshow(a, cmap="bwr", vmin=-lim, vmax=lim)
            if r == 0:
                axes[r, c].set_title(m.replace("_", " "), fontsize=8)
        shown.append({"test_row": i, "true": class_names[truth], "predicted": class_names[pred],
                      "probability": round(float(probs[i, pred]), 4), "correct": bool(ok)})
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("attributions for the predicted class (red: for, blue: against)", fontsize=9)
    _save(fig, path)
    return {"kind": "image", "methods": list(methods), "examples": shown, "time_s": round(elapsed, 3),
            "figure": path.name}


def _score(model, X, y, task: str, batch_size: int = 4096) -> float:
    """Minus the loss: cross-entropy (classification) or mean squared error (regression).

    The loss, not the accuracy: it moves with every prediction's confidence, so features that
    matter but rarely flip a decision still rank above those that do not matter.
    """
    import torch

    model.eval()
    outs = []
    with torch.no_grad():
        for s in range(0, len(X), batch_size):
            outs.append(model(X[s:s + batch_size]).float())
    out = torch.cat(outs)
    if task_spec(task).has_classes:
        return -float(torch.nn.functional.cross_entropy(out, y))
    return -float((out.squeeze(-1) - y.float()).pow(2).mean())


def permutation_importance(model, X, y, task: str, *, repeats: int = 5, seed: int = 0,
                           progress: bool = False) -> dict[int, tuple[float, float]]:
    """Feature index → (mean, std) over ``repeats`` of the loss increase when that column is shuffled
    (``progress``: a bar over the features on a terminal)."""
    import torch

    rng = np.random.default_rng(seed)
    base = _score(model, X, y, task)
    out = {}
    for j in bar(range(X.shape[1]), enabled=progress, desc="explain", unit="feature"):
        drops = []
        for _ in range(repeats):
            Xp = X.clone()
            Xp[:, j] = X[torch.as_tensor(rng.permutation(len(X)), device=X.device), j]
            drops.append(base - _score(model, Xp, y, task))
        out[j] = (float(np.mean(drops)), float(np.std(drops)))
    return out


def tabular_importance(model, X, y, task: str, feature_names: list[str], path: Path, *, repeats: int = 5,
                       seed: int = 0, top: int = 20, max_rows: int = 500, progress: bool = False) -> dict:
    """Permutation importance and mean |integrated gradients| per feature, as a ranked bar chart.

    On at most ``max_rows`` test rows: a seeded sample (in row order) when there are more, so the
    cost is bounded whatever the size of the test split (permutation importance runs
    ``features × repeats`` forward passes, integrated gradients 32 per row)."""
    import torch
    from captum.attr import IntegratedGradients

    from methodo.report.plots import _plt, _save

    t0 = time.perf_counter()
    n_total = len(X)
    if n_total > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(n_total, max_rows, replace=False))
        X, y = X[torch.as_tensor(keep)], y[torch.as_tensor(keep)]
    device = next(model.parameters()).device
    X, y = X.to(device).float(), y.to(device)
    perm = permutation_importance(model, X, y, task, repeats=repeats, seed=seed, progress=progress)
    model.eval()
    with torch.enable_grad():
        if task_spec(task).has_classes:
            with torch.no_grad():
                target = model(X).argmax(1)
        else:
            target = 0
        ig = IntegratedGradients(model).attribute(X.clone().requires_grad_(True), baselines=0.0, target=target,
                                                  n_steps=32)
    ig_mean = ig.detach().abs().mean(0).cpu().numpy()
    elapsed = time.perf_counter() - t0
    order = sorted(range(X.shape[1]), key=lambda j: -perm[j][0])
    ranked = [{"feature": feature_names[j] if j < len(feature_names) else f"x{j}",
               "permutation_mean": round(perm[j][0], 6), "permutation_std": round(perm[j][1], 6),
               "integrated_gradients": round(float(ig_mean[j]), 6)} for j in order]

    plt = _plt()
    show = ranked[:top][::-1]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.32 * len(show) + 1.6))
    names = [r["feature"] for r in show]
    what = "cross-entropy" if task_spec(task).has_classes else "MSE (standardized target)"
    axes[0].barh(names, [r["permutation_mean"] for r in show], xerr=[r["permutation_std"] for r in show],
                 color="#1565c0")
    rows = "test" if len(X) == n_total else f"test, a sample of {len(X)} of {n_total} rows"
    axes[0].set_title(f"permutation importance: {what} increase when shuffled ({rows})", fontsize=9)
    axes[1].barh(names, [r["integrated_gradients"] for r in show], color="#e65100")
    axes[1].set_title(f"mean |integrated gradients| ({rows})", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3, axis="x")
        ax.tick_params(axis="y", labelsize=7)
    _save(fig, path)
    return {"kind": "tabular", "features": ranked, "repeats": repeats, "rows": len(X), "rows_total": n_total,
            "time_s": round(elapsed, 3), "figure": path.name}


def attention_strips(model, X, probs: np.ndarray, y_true: np.ndarray, class_names: list[str], texts, n: int,
                     path: Path, *, tokenizer: str | None = None) -> dict:
    """For ``n`` test texts (wrong predictions first, then right ones), the attention of the model's pooled
    representation over each token (``model.attention``, e.g. the ``[CLS]`` row of a transformer's last
    block), drawn as one heat strip per sentence: darker tokens weighed more in the prediction.

    ``X`` holds the token ids and masks ``(N, 2, L)``; ``tokenizer`` (an ``hf:`` reference) turns ids back
    into word pieces for the labels. Returns what was shown, with each text's three most attended tokens."""
    from methodo.report.plots import _plt, _save

    rows = choose_examples(probs, y_true, n)
    device = next(model.parameters()).device
    x = X[rows].to(device)
    was = model.training
    model.eval()
    att = model.attention(x).float().cpu().numpy()
    model.train(was)
    ids, mask = x[:, 0].cpu().numpy(), x[:, 1].cpu().numpy() > 0
    pieces = _word_pieces(ids, tokenizer)
    plt = _plt()
    width = max(int(mask[r].sum()) for r in range(len(rows)))
    fig, axes = plt.subplots(len(rows), 1, figsize=(min(18, 0.32 * width + 1), 1.25 * len(rows) + 0.5),
                             squeeze=False)
    shown = []
    for r, i in enumerate(rows):
        k = int(mask[r].sum())
        w = att[r, :k]
        top_w = max(float(w.max()), 1e-12)
        ax = axes[r, 0]
        ax.imshow(w[None], cmap="Reds", aspect="auto", vmin=0, vmax=top_w, extent=(-0.5, k - 0.5, -0.5, 0.5))
        ax.set_xlim(-0.5, width - 0.5)
        for j in range(k):  # the word piece inside its cell, white on the darkest cells
            ax.text(j, 0, pieces[r][j], ha="center", va="center", rotation=90, fontsize=7,
                    color="white" if w[j] > 0.6 * top_w else "black")
        ax.set_xticks([])
        ax.set_yticks([])
        pred, truth = int(probs[i].argmax()), int(y_true[i])
        ok = pred == truth
        ax.set_title(f"{'right' if ok else 'WRONG'}: {class_names[pred]} ({probs[i, pred]:.2f}), true {class_names[truth]}",
                     fontsize=8, loc="left", color="black" if ok else "#b00020")
        top = np.argsort(-w, kind="stable")[:3]
        shown.append({"test_row": i, "text": str(texts[i])[:200] if texts is not None else "",
                      "true": class_names[truth], "predicted": class_names[pred],
                      "probability": round(float(probs[i, pred]), 4), "correct": bool(ok),
                      "top_tokens": [[pieces[r][j], round(float(w[j]), 4)] for j in top]})
    fig.suptitle("attention of the prediction over the tokens (last block; darker: looked at more)", fontsize=9)
    fig.subplots_adjust(hspace=0.6)
    _save(fig, path)
    return {"kind": "attention", "examples": shown, "figure": path.name}


def _word_pieces(ids: np.ndarray, tokenizer: str | None) -> list[list[str]]:
    """The tokenizer's word piece of each id (the ids themselves when there is no tokenizer to ask)."""
    if tokenizer is None:
        return [[str(int(t)) for t in row] for row in ids]
    from methodo.models.backbones import _transformers, resolve_hf

    tok = _transformers().AutoTokenizer.from_pretrained(str(resolve_hf(tokenizer)))
    return [tok.convert_ids_to_tokens([int(t) for t in row]) for row in ids]
