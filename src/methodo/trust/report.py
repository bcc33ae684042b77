"""The trust figures of the report: per-group metrics, robust accuracy vs budget, corruptions, fooled images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# the per-group metrics drawn, in order (those the task has)
_DRAWN = ("accuracy", "selection_rate", "tpr", "fpr", "precision")


def fairness_figure(fairness: dict, path: Path, split: str = "test") -> Path:
    """One panel per sensitive attribute: a bar per group and metric on the ``split`` with its bootstrap
    interval, the group sizes in the legend."""
    from methodo.report.plots import _plt, _save

    plt = _plt()
    attrs = list(fairness.get("attributes", {}))
    fig, axes = plt.subplots(1, len(attrs), figsize=(6.5 * len(attrs), 4.2), squeeze=False)
    for ax, attr in zip(axes[0], attrs):
        s = fairness["attributes"][attr]["splits"].get(split) or {}
        groups = list(s.get("groups", {}))
        metrics = [m for m in _DRAWN if any(s["groups"][g].get(m) is not None for g in groups)]
        width = 0.8 / max(len(groups), 1)
        x = np.arange(len(metrics))
        for i, g in enumerate(groups):
            vals = [s["groups"][g].get(m) for m in metrics]
            ivs = [(s.get("intervals") or {}).get(g, {}).get(m) for m in metrics]
            y = np.array([np.nan if v is None else v for v in vals], dtype=float)
            lo = np.array([0 if (iv is None or v is None) else max(v - iv[0], 0) for v, iv in zip(vals, ivs)])
            hi = np.array([0 if (iv is None or v is None) else max(iv[1] - v, 0) for v, iv in zip(vals, ivs)])
            ax.bar(x + (i - (len(groups) - 1) / 2) * width, y, width, yerr=[lo, hi], capsize=3,
                   label=f"{g} (n={s['groups'][g].get('n')})")
        ax.set_xticks(x, [m.replace("_", " ") for m in metrics])
        ax.set_ylim(0, 1.05)
        d = s.get("disparity", {})
        note = ", ".join(f"{k.replace('_difference', ' diff').replace('_', ' ')} {v:.3f}" for k, v in d.items()
                         if v is not None and not k.endswith("ratio"))
        ax.set_title(f"{attr} ({split}, {round(100 * fairness.get('level', 0.95))}% intervals)\n{note}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def robustness_figure(rob: dict, path: Path) -> Path:
    """Robust accuracy against the L∞ budget (FGSM, PGD; before adversarial training dashed, when measured),
    and the share of the correctly classified images fooled by changing k pixels (:func:`draw_robustness`),
    saved to ``path``."""
    from methodo.report.plots import _save

    return _save(draw_robustness(rob), path)


def draw_robustness(rob: dict):
    """The figure of :func:`robustness_figure` (``summary.json`` → ``robustness``), returned unsaved."""
    from methodo.report.plots import _plt

    plt = _plt()
    attacks = rob.get("attacks", {})
    lp = [a for a in attacks if a != "onepixel"]
    panels = (1 if lp else 0) + (1 if "onepixel" in attacks else 0)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(6 * max(panels, 1), 4), squeeze=False)
    ax_i = 0
    if lp:
        ax = axes[0][ax_i]
        ax_i += 1
        before = (rob.get("before_adversarial_training") or {}).get("attacks", {})
        for a in lp:
            eps = [r["eps"] for r in attacks[a]]
            acc = [r["accuracy"] for r in attacks[a]]
            lo = [r["accuracy"] - r["interval"][0] for r in attacks[a]]
            hi = [r["interval"][1] - r["accuracy"] for r in attacks[a]]
            line = ax.errorbar(eps, acc, yerr=[lo, hi], marker="o", capsize=3, label=a.upper())
            if a in before:
                ax.plot([r["eps"] for r in before[a]], [r["accuracy"] for r in before[a]], "--", marker="x",
                        color=line[0].get_color(), label=f"{a.upper()}, before adversarial training")
        ax.axhline(rob["clean_accuracy"], color="gray", ls=":", label=f"clean {rob['clean_accuracy']:.3f}")
        ax.set_xlabel("eps (L∞, pixel units of [0, 1] images)")
        ax.set_ylabel("accuracy under attack")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{rob['images']} test images")
        ax.legend(fontsize=8)
    if "onepixel" in attacks:
        ax = axes[0][ax_i]
        rows = attacks["onepixel"]
        ks = [str(r["pixels"]) for r in rows]
        frac = [r["fooled_fraction"] for r in rows]
        ax.bar(ks, frac, color="#b00020")
        for i, r in enumerate(rows):
            ax.text(i, frac[i] + 0.01, f"{r['fooled']} fooled", ha="center", fontsize=8)
        ax.set_xlabel("pixels changed (k)")
        ax.set_ylabel("share of correct images fooled")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"one-pixel attack, {rows[0]['images']} images")
    fig.tight_layout()
    return fig


def corruption_figure(rob: dict, path: Path) -> Path:
    """Accuracy per corruption against its severity (1-5), clean accuracy dotted."""
    from methodo.report.plots import _plt, _save

    plt = _plt()
    c = rob["corruptions"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, acc in c["accuracy"].items():
        ax.plot(range(1, len(acc) + 1), acc, marker="o", label=name.replace("_", " "))
    ax.axhline(rob["clean_accuracy"], color="gray", ls=":", label=f"clean {rob['clean_accuracy']:.3f}")
    ax.set_xticks(range(1, 6))
    ax.set_xlabel("severity")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"mean corruption error {c['mce']:.3f} (clean {c['clean_error']:.3f})")
    ax.legend(fontsize=8)
    return _save(fig, path)


def gallery_figure(gallery: dict, path: Path) -> Path:
    """Each fooled image: the original with its prediction and confidence above the adversarial one with the
    fooled prediction and its confidence (the course's one-pixel slide; :func:`draw_gallery`), saved to ``path``."""
    from methodo.report.plots import _save

    return _save(draw_gallery(gallery), path)


def draw_gallery(gallery: dict):
    """The figure of :func:`gallery_figure`, returned unsaved; ``gallery`` is the second value of
    :func:`methodo.trust.robustness.measure` (``{"items": [...], "class_names": [...]}``)."""
    from methodo.report.plots import _plt, _show

    plt = _plt()
    items, names = gallery["items"], gallery.get("class_names")
    name = (lambda i: names[i] if names else str(i))
    fig, axes = plt.subplots(2, len(items), figsize=(1.9 * len(items), 4.4), squeeze=False)
    for j, g in enumerate(items):
        budget = f"{g['pixels']} px" if "pixels" in g else f"eps {g['eps']:.3g}"
        _show(axes[0][j], g["original"])
        axes[0][j].set_title(f"{name(g['before'])} ({g['before_conf']:.0%})", fontsize=8)
        _show(axes[1][j], g["adversarial"])
        axes[1][j].set_title(f"→ {name(g['after'])} ({g['after_conf']:.0%})\n{g['attack']} {budget}", fontsize=8,
                             color="#b00020")
    return fig
