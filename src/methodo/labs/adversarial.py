"""Lab `adversarial`: adversarial examples against a methodo image model. A small CNN trained on scikit-learn's
8×8 digits by methodo's training loop is nearly perfect on its test split; methodo's robustness measurement
(``methodo.trust.robustness.measure``: torchattacks, the same code as ``evaluate.robustness`` and ``methodo
robustness``) then attacks a class-stratified sample of the test images. FGSM moves every pixel by at most
``eps`` (L∞, in pixel units of images in [0, 1]) in the direction that raises the loss: the fraction of the
correctly classified images it fools grows with ``eps``, and most are fooled well before the digit stops
looking like itself. The one-pixel attack (differential evolution) changes only ``k`` pixels of the 64: one
pixel already fools some images, three fool many. The gallery shows fooled images beside their originals."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

EPS = [0.05, 0.1, 0.2, 0.3]
PIXELS = [1, 3]
SAMPLE, ONEPIXEL_IMAGES, GALLERY = 150, 40, 4
EPOCHS = 10


@step
def train(ctx: LabContext):
    """**The model.** scikit-learn's `digits` (1797 grayscale 8×8 images, 10 classes, pixel values in [0, 1]),
    a stratified split 70 / 15 / 15 %, a small `cnn` (width 8) trained 10 epochs by methodo's training loop
    (Adam at 0.01, batches of 64), keeping the epoch of lowest val loss. Its clean accuracy is measured below
    on the very images that are attacked."""
    prep, res = ctx.train("digits", {
        "data": {"source": "digits", "split": {"method": "stratified", "val": 0.15, "test": 0.15}},
        "model": {"name": "cnn", "width": 8, "dropout": 0.0},
        "train": {"epochs": EPOCHS, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01},
                  "early_stopping": {"monitor": "val_loss", "patience": EPOCHS}}})
    ctx.state["prep"] = prep
    return ctx.record(test_images=int(len(prep.data.indices["test"])), best_epoch=res.best_epoch,
                      val_accuracy=res.history[res.best_epoch - 1]["val_accuracy"])


def _measure(ctx: LabContext, **options):
    """methodo's robustness measurement of the trained model on the attacked sample, with ``options`` of
    ``evaluate.robustness``; returns ``(numbers, gallery)``."""
    import torch

    from methodo.config import RobustnessConfig
    from methodo.trust.robustness import measure, sample

    prep = ctx.state["prep"]
    X, y = prep.data.tensors["test"][0], np.asarray(prep.data.raw_y["test"])
    rows = sample(y, SAMPLE, ctx.seed)  # a seeded class-stratified sample of the test split
    pre = prep.data.preprocessor  # the run's standardization: measure attacks in pixel units, [0, 1]
    mean, std = (torch.as_tensor(v, dtype=X.dtype).reshape(1, -1, 1, 1) for v in (pre.mean, pre.std))
    rcfg = RobustnessConfig(max_images=SAMPLE, corruptions=[], gallery=GALLERY, **options)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return measure(prep.model, X[rows], y[rows], rcfg=rcfg, mean=mean, std=std, seed=ctx.seed,
                       class_names=prep.ds.class_names)
    finally:
        torch.set_num_threads(threads)


def _budget_used(items: list[dict]) -> list[dict]:
    """For each fooled image of the gallery: the largest pixel change (L∞) and the number of pixels changed."""
    out = []
    for g in items:
        d = np.abs(np.asarray(g["adversarial"], dtype=np.float64) - np.asarray(g["original"], dtype=np.float64))
        out.append({"attack": g["attack"], "budget": g.get("eps", g.get("pixels")), "linf": float(d.max()),
                    "pixels_changed": int((d.max(axis=0) > 1e-4).sum())})
    return out


def _rows(rob: dict, name: str) -> list[dict]:
    keep = ("eps", "pixels", "images", "accuracy", "fooled", "fooled_fraction", "fooled_confidence")
    return [{k: r[k] for k in keep if k in r} for r in rob["attacks"][name]]


@step
def fgsm(ctx: LabContext):
    """**FGSM.** On a seeded class-stratified sample of 150 test images, the fast gradient sign method
    (torchattacks, untargeted, against the true label) at `eps` 0.05, 0.1, 0.2 and 0.3 — each pixel moved by at
    most `eps` of the [0, 1] range, in the one step that raises the loss most. The share of the correctly
    classified images whose prediction changes (`fooled_fraction`), and how confident the fooled predictions
    are."""
    rob, gallery = _measure(ctx, attacks=["fgsm"], eps=EPS)
    ctx.state["fgsm"] = (rob, gallery)
    return ctx.record(images=rob["images"], clean_accuracy=rob["clean_accuracy"],
                      clean_confidence=rob["clean_confidence"], fgsm=_rows(rob, "fgsm"))


@step
def one_pixel(ctx: LabContext):
    """**One pixel.** The one-pixel attack (torchattacks' differential evolution: 10 generations of a population
    of 10 × k candidate changes, each a pixel position and a new value) on the first 40 images of the same
    sample, allowed to change k = 1, then k = 3 of the 64 pixels. The gallery keeps fooled images of both
    attacks, and we check on them that each attack stayed within its budget."""
    rob, gallery = _measure(ctx, attacks=["onepixel"], pixels=PIXELS, onepixel_images=ONEPIXEL_IMAGES)
    ctx.state["onepixel"] = (rob, gallery)
    items = gallery["items"] + ctx.state["fgsm"][1]["items"]
    ctx.state["gallery"] = {"items": items, "class_names": gallery["class_names"]}
    return ctx.record(onepixel=_rows(rob, "onepixel"), gallery=_budget_used(items))


@step
def plot(ctx: LabContext):
    """**Figures.** *robustness*: methodo's own robustness figure — accuracy under FGSM against `eps`, with
    Wilson intervals, and the share of the correct images fooled by changing k pixels. *gallery*: fooled
    images, original (prediction and confidence) above adversarial (the fooled prediction and its confidence),
    one-pixel first."""
    from methodo.trust.report import draw_gallery, draw_robustness

    fg, op = ctx.state["fgsm"][0], ctx.state["onepixel"][0]
    ctx.figure(draw_robustness({**fg, "attacks": {**fg["attacks"], **op["attacks"]}}), "robustness")
    ctx.figure(draw_gallery(ctx.state["gallery"]), "gallery")


def conclude(ctx: LabContext):
    n = ctx.numbers
    fg, op = n["fgsm"], n["onepixel"]
    frac = [r["fooled_fraction"] for r in fg]
    at = {r["eps"]: r for r in fg}
    k1, k3 = op
    within = all(g["linf"] <= g["budget"] + 1e-4 if g["attack"] == "fgsm" else g["pixels_changed"] <= g["budget"]
                 for g in n["gallery"])
    checks = {
        "the model is accurate on the attacked images (≥ 0.95)": n["clean_accuracy"] >= 0.95,
        "FGSM fools more images as eps grows": all(a <= b for a, b in zip(frac, frac[1:])),
        "FGSM at eps 0.2 fools most correct images (≥ 50 %)": at[0.2]["fooled_fraction"] >= 0.5,
        "changing one pixel fools at least one image": k1["fooled"] >= 1,
        "three pixels fool far more (≥ 30 % of the correct images)": k3["fooled_fraction"] >= 0.3,
        "the gallery shows both attacks": {g["attack"] for g in n["gallery"]} == {"fgsm", "onepixel"},
        "every shown attack stayed within its budget (L∞ ≤ eps; ≤ k pixels changed)": within,
    }
    sentence = (f"The CNN classifies {n['clean_accuracy']:.3f} of {n['images']} test digits correctly; FGSM fools "
                + ", ".join(f"{100 * r['fooled_fraction']:.0f} %" for r in fg)
                + f" of them at eps {', '.join(f'{e:g}' for e in EPS)} (fooled predictions "
                f"{at[0.2]['fooled_confidence']:.2f} confident on average at 0.2), and changing 1 pixel of 64 fools "
                f"{k1['fooled']} of {k1['images']} images ({100 * k1['fooled_fraction']:.0f} % of the correct ones), "
                f"3 pixels {k3['fooled']} ({100 * k3['fooled_fraction']:.0f} %).")
    return sentence, checks


LAB = Lab("adversarial", "Adversarial examples: FGSM and one pixel",
          "A CNN that is nearly perfect on test digits is fooled by small worst-case changes: FGSM fools more "
          "images as its budget grows, most at eps 0.2, and changing a single pixel already fools some.",
          (train, fgsm, one_pixel, plot), conclude,
          intro="Accuracy is measured on natural images; an adversary chooses the image. A tiny, targeted change "
                "— every pixel a little, or one pixel a lot — can change the prediction of a confident model.")
