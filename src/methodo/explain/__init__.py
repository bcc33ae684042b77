"""Explainability: which parts of an input made the model predict what it predicted.

Image attribution methods (captum, imported only when one runs), one registry entry each; every
method takes ``(model, x, target, seed)`` with ``x`` a batch ``(N, C, H, W)`` of standardized
images and ``target`` the class indices to explain, and returns an attribution tensor of the
shape of ``x`` (higher: more evidence for ``target``):

- ``saliency``              |∂ score / ∂ pixel| (Simonyan et al. 2014);
- ``integrated_gradients``  path integral of gradients from a baseline (the training mean, 0 after
                            standardization) to the image (Sundararajan et al. 2017);
- ``occlusion``             score drop when a square patch is replaced by the baseline (Zeiler & Fergus);
- ``lime``                  LIME-style: a sparse linear model fitted on random on/off masks of square
                            superpixels, weighted by similarity to the image (Ribeiro et al. 2016).

For tabular models, :func:`methodo.explain.report.permutation_importance` (metric drop when a
feature column is shuffled) and integrated gradients per feature give a ranked bar chart.

Examples
--------
>>> from methodo.explain import EXPLAINERS
>>> EXPLAINERS.names()
['integrated_gradients', 'lime', 'occlusion', 'saliency']
"""

from __future__ import annotations

from methodo.registry import Registry

EXPLAINERS = Registry("explainer")


def _patch(x) -> int:
    """Side of the square patches (occlusion) and superpixels (LIME): a quarter of the image, ≥ 2."""
    return max(2, min(x.shape[-2:]) // 4)


@EXPLAINERS.register("saliency", help="saliency: |gradient of the class score w.r.t. each pixel|")
def saliency(model, x, target, seed: int = 0):
    from captum.attr import Saliency

    return Saliency(model).attribute(x, target=target, abs=True).detach()


@EXPLAINERS.register("integrated_gradients", help="integrated gradients from the mean image "
                     "(0 after standardization) to the image, 32 steps")
def integrated_gradients(model, x, target, seed: int = 0):
    from captum.attr import IntegratedGradients

    return IntegratedGradients(model).attribute(x, baselines=0.0, target=target, n_steps=32).detach()


@EXPLAINERS.register("occlusion", help="occlusion: drop of the class score when a square patch "
                     "(a quarter of the side) is set to the mean, sliding by half a patch")
def occlusion(model, x, target, seed: int = 0):
    from captum.attr import Occlusion

    w = _patch(x)
    c = x.shape[1]
    return Occlusion(model).attribute(x, sliding_window_shapes=(c, w, w), strides=(c, max(1, w // 2), max(1, w // 2)),
                                      baselines=0.0, target=target).detach()


def superpixels(shape, side: int):
    """A feature mask of square superpixels: ``(1, 1, H, W)`` ids, all channels of a cell together."""
    import torch

    h, w = shape[-2:]
    rows = torch.arange(h) // side
    cols = torch.arange(w) // side
    ids = rows[:, None] * ((w + side - 1) // side) + cols[None, :]
    return ids.view(1, 1, h, w)


@EXPLAINERS.register("lime", help="LIME-style: a sparse linear model on 200 random on/off masks of square "
                     "superpixels (a quarter of the side), superpixel weights shown per pixel")
def lime(model, x, target, seed: int = 0):
    import torch
    from captum._utils.models.linear_model import SkLearnLasso
    from captum.attr import Lime
    from captum.attr._core.lime import get_exp_kernel_similarity_function

    mask = superpixels(x.shape, _patch(x)).to(x.device).expand(1, x.shape[1], *x.shape[-2:])
    explainer = Lime(model, interpretable_model=SkLearnLasso(alpha=1e-3),
                     similarity_func=get_exp_kernel_similarity_function("cosine", kernel_width=0.75))
    out = []
    with torch.random.fork_rng(devices=[]):  # LIME samples masks from torch's RNG: seeded, and isolated
        torch.manual_seed(seed)
        for i in range(len(x)):
            t = int(target[i]) if hasattr(target, "__len__") else int(target)
            out.append(explainer.attribute(x[i:i + 1], target=t, baselines=0.0, feature_mask=mask,
                                           n_samples=200, perturbations_per_eval=50).detach())
    return torch.cat(out)


def attribute(method: str, model, x, target, seed: int = 0):
    """Attributions of ``method`` for ``model`` on ``x`` (eval mode, gradients enabled)."""
    import torch

    fn = EXPLAINERS.get(method, key="explain.methods")
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            return fn(model, x.detach().clone().requires_grad_(method in ("saliency", "integrated_gradients")),
                      target, seed)
    finally:
        model.train(was)
