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
