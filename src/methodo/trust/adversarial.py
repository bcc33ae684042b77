"""``train.adversarial``: adversarial examples mixed into the training batches (Goodfellow et al., 2015;
Madry et al., 2018), through the loop's extra-loss seam.

For each training batch of ``B`` rows, adversarial copies of its first ``⌈ratio × B⌉`` rows (the batch is
already a random draw) are made by torchattacks (FGSM or PGD at ``eps``, pixel units of images in [0, 1],
against the true labels, on the current weights, with the model in eval mode while attacking); their
cross-entropy, summed and divided by ``B``, is added to the batch's loss: the batch is trained as if the
copies were extra rows of it. The logged ``train_loss`` stays the clean data loss. The attack is built on
the first batch (after the loop has moved the model to its device) and reused.
"""

from __future__ import annotations

import math


def adversarial_loss(acfg, *, mean=None, std=None):
    """``extra_loss(model, out, xb, yb)`` for ``train.adversarial`` (``acfg``); ``mean``/``std``: the run's
    per-channel standardization (the batches are standardized, the budget is in pixel units)."""
    import torch
    import torch.nn.functional as F

    from methodo.trust.robustness import make_attack

    state: dict = {}

    def extra_loss(model, out, xb, yb):
        if "attack" not in state:
            m = s = None
            if mean is not None:
                m = torch.as_tensor(mean, dtype=xb.dtype, device=xb.device).reshape(1, -1, 1, 1)
                s = torch.as_tensor(std, dtype=xb.dtype, device=xb.device).reshape(1, -1, 1, 1)
            state["attack"] = make_attack(model, acfg.attack, eps=acfg.eps, steps=acfg.steps, mean=m, std=s)
        k = max(1, math.ceil(acfg.ratio * len(xb)))
        adv = state["attack"](xb[:k].detach(), yb[:k])
        return F.cross_entropy(model(adv), yb[:k], reduction="sum") / len(xb)

    return extra_loss
