"""Lab `explain`: the husky-vs-wolf shortcut (Ribeiro et al., 2016), found with attributions.

Generated 16×16 images of two classes: a *husky* is a circle, a *wolf* a triangle (random size, position,
rotation and dark colour). In the data the model is trained on, every wolf stands on snow and every husky on
grass, so the background alone gives the label away. A small CNN trained by methodo's loop is perfect on its
test split — which has the same bias. Integrated gradients and saliency (``methodo.explain``, captum) show
where its evidence is; a test set of the same animals with the backgrounds swapped exposes the shortcut: the
model follows the background and gets them wrong. Retrained on the same animals pasted on backgrounds drawn
at random (background augmentation), the model must use the shape: it survives the swap, and its
attributions move onto the animal (the share of attribution mass inside the object's mask rises)."""

from __future__ import annotations

import math

import numpy as np

from methodo.labs import Lab, LabContext, step

SIZE, N = 16, 500
CLASSES = ["husky", "wolf"]
SHAPE = {0: 1, 1: 3}  # methodo.data.shapes kinds: husky a circle, wolf a triangle
BACKGROUNDS = {"grass": (0.25, 0.55, 0.2), "snow": (0.9, 0.9, 0.95)}
HOME = {0: "grass", 1: "snow"}  # where each class stands in the biased data
EPOCHS = 15
EXPLAINED = 40  # test images explained by integrated gradients (32 gradient evaluations each)
METHODS = ("integrated_gradients", "saliency")


def _animals(rng: np.random.Generator, n: int) -> list[dict]:
    """What each image holds, drawn once: its class, the animal's geometry and colour, the pixel noise, and the
    coin that picks its background in the randomized set."""
    y = rng.integers(0, 2, n)
    out = []
    for i in range(n):
        r = rng.uniform(0.28, 0.38) * SIZE
        cx, cy = rng.uniform(r * 0.7, SIZE - r * 0.7, 2)
        out.append({"y": int(y[i]), "r": r, "cx": cx, "cy": cy, "theta": rng.uniform(0, 2 * math.pi),
                    "colour": rng.uniform(0.05, 0.4, 3), "noise": rng.normal(0, 0.05, (3, SIZE, SIZE)),
                    "coin": bool(rng.random() < 0.5)})
    return out


def _render(animals: list[dict], backgrounds: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 3, 16, 16)`` in [0, 1] and object masks ``(n, 16, 16)``; ``backgrounds``: ``biased`` (wolves on
    snow, huskies on grass), ``swapped`` (the other way round) or ``random`` (snow or grass by a coin flip,
    independent of the class)."""
    from methodo.data.shapes import _shape_mask

    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    X = np.empty((len(animals), 3, SIZE, SIZE), dtype=np.float32)
    M = np.zeros((len(animals), SIZE, SIZE), dtype=bool)
    for i, a in enumerate(animals):
        home, away = HOME[a["y"]], HOME[1 - a["y"]]
        bg = {"biased": home, "swapped": away, "random": home if a["coin"] else away}[backgrounds]
        img = np.broadcast_to(np.array(BACKGROUNDS[bg])[:, None, None], (3, SIZE, SIZE)).copy()
        inside = _shape_mask(SHAPE[a["y"]], xx, yy, a["cx"], a["cy"], a["r"], a["theta"])
        img[:, inside] = a["colour"][:, None]
        X[i] = np.clip(img + a["noise"], 0, 1)
        M[i] = inside
    return X, M


@step
def make_data(ctx: LabContext):
    """**Data.** 500 animals, drawn once: a husky is a circle, a wolf a triangle, of random size, position,
    rotation and dark colour, with pixel noise. They are rendered three ways: *biased* (every wolf on snow,
    every husky on grass: the background alone tells the class), *swapped* (wolves on grass, huskies on snow)
    and *random* (snow or grass by a coin flip, whatever the class: background augmentation). The biased and
    the randomized sets are written as image folders (`data.source: imagefolder`); the object mask of every
    image is kept."""
    from methodo.labs._images import write_imagefolder

    animals = _animals(np.random.default_rng(ctx.seed), N)
    y = np.array([a["y"] for a in animals])
    sets = {}
    for name in ("biased", "swapped", "random"):
        X, M = _render(animals, name)
        sets[name] = X
        if name != "swapped":
            ctx.state[f"{name}_path"] = str(write_imagefolder(ctx.run_dir(name), X, y, CLASSES))
    ctx.state.update(sets=sets, masks=M, y=y)
    coins = np.array([a["coin"] for a in animals])  # True: the animal stands at home in the randomized set
    shares = {}
    for k, c in enumerate(CLASSES):
        shares[f"{c} on {HOME[k]}"] = int(np.sum((y == k) & coins))
        shares[f"{c} on {HOME[1 - k]}"] = int(np.sum((y == k) & ~coins))
    return ctx.record(images=N, classes=CLASSES, object_area_share=float(M.mean()), randomized_set=shares)


def _attribution_share(prep, X01: np.ndarray, masks: np.ndarray, y: np.ndarray, seed: int):
    """For each method: the mean share of the attribution mass (|attribution| summed over channels) that lies
    inside the object's mask, explaining the model's predicted class; integrated gradients on a seeded
    class-stratified sample of the images, saliency on all. Also the integrated-gradients maps of the sample."""
    import torch

    from methodo.evaluate.metrics import predict
    from methodo.explain import attribute
    from methodo.trust.robustness import sample

    x = torch.as_tensor(prep.data.preprocessor.transform_x(X01))
    target = torch.as_tensor(predict(prep.model, x, task="classification").argmax(1))
    picked = {"integrated_gradients": sample(y, EXPLAINED, seed), "saliency": np.arange(len(x))}
    out, maps = {}, {}
    for method in METHODS:
        pos = torch.as_tensor(picked[method])
        a = attribute(method, prep.model, x[pos], target[pos], seed).abs().sum(1).numpy()
        m = masks[picked[method]]
        out[method] = float(((a * m).sum((1, 2)) / np.maximum(a.sum((1, 2)), 1e-12)).mean())
        maps[method] = (picked[method], a)
    return out, maps


def _train_and_explain(ctx: LabContext, name: str) -> dict:
    from methodo.labs._images import accuracy, rows_of

    prep, res = ctx.train(name, {
        "data": {"source": "imagefolder", "path": ctx.state[f"{name}_path"],
                 "split": {"method": "stratified", "val": 0.2, "test": 0.3}},
        "model": {"name": "cnn", "width": 8, "dropout": 0.0},
        "train": {"epochs": EPOCHS, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01},
                  "early_stopping": {"monitor": "val_loss", "patience": EPOCHS}}})
    rows = rows_of(prep, "test")
    sets, y, masks = ctx.state["sets"], ctx.state["y"][rows], ctx.state["masks"][rows]
    share, maps = _attribution_share(prep, sets["biased"][rows], masks, y, ctx.seed)
    ctx.state.setdefault("maps", {})[name] = maps
    ctx.state.setdefault("test_rows", {})[name] = rows
    ctx.state.setdefault("preps", {})[name] = prep
    return {"train_images": int(len(prep.data.indices["train"])), "best_epoch": res.best_epoch,
            "test_accuracy_biased": accuracy(prep, sets["biased"][rows], y),
            "test_accuracy_swapped": accuracy(prep, sets["swapped"][rows], y),
            "attribution_share_in_object": share}


@step
def shortcut_model(ctx: LabContext):
    """**Train on the biased data.** The *biased* image folder, a stratified split 50 / 20 / 30 %, a small `cnn`
    (width 8) trained 15 epochs by methodo's loop (Adam at 0.01), keeping the epoch of lowest val loss. It is
    scored on its test split (150 images, as biased as the rest) and on the *same* animals with the
    backgrounds swapped. Then `methodo.explain.attribute` (captum) explains its predicted class on the test
    images: integrated gradients (from the mean image, 32 steps; a class-stratified sample of 40 test images) and
    saliency (all of them). The measure: the share of the attribution mass (absolute values, summed over the color channels)
    inside the animal's mask, against the share of the image the animal covers."""
    return ctx.record(shortcut=_train_and_explain(ctx, "biased"))


@step
def background_augmentation(ctx: LabContext):
    """**Retrain with randomized backgrounds.** The same animals, each on snow or grass by a coin flip
    independent of its class: the background no longer predicts anything, only the shape does. Same split
    (the rows and the seed are the same, so the same animals are held out for the test), same network and
    training; then the same test images — biased and swapped — and the same attributions."""
    res = _train_and_explain(ctx, "random")
    same = bool(np.array_equal(ctx.state["test_rows"]["random"], ctx.state["test_rows"]["biased"]))
    return ctx.record(randomized=res, same_test_animals=same)


@step
def plot(ctx: LabContext):
    """**Figure.** Four test animals: the image, the same animal with its background swapped, and where each
    model's integrated gradients put the evidence (brighter: more). Right: the accuracy of both models on the
    biased and on the swapped test images, and the share of the attribution mass inside the animal."""
    import matplotlib.pyplot as plt

    n = ctx.numbers
    rows = ctx.state["test_rows"]["biased"]
    sets, y = ctx.state["sets"], ctx.state["y"]
    explained, _ = ctx.state["maps"]["biased"]["integrated_gradients"]  # positions in the test split
    pick = [int(i) for k in (0, 1) for i in np.flatnonzero(y[rows[explained]] == k)[:2]]  # two of each class
    fig = plt.figure(figsize=(10, 4.8))
    grid = fig.add_gridspec(4, 6, width_ratios=[1, 1, 1, 1, 3, 3])
    labels = ["test image", "backgrounds\nswapped", "IG, biased\nmodel", "IG, randomized\nmodel"]
    for j, k in enumerate(pick):
        i = explained[k]
        panels = [sets["biased"][rows[i]], sets["swapped"][rows[i]],
                  ctx.state["maps"]["biased"]["integrated_gradients"][1][k],
                  ctx.state["maps"]["random"]["integrated_gradients"][1][k]]
        for r, img in enumerate(panels):
            ax = fig.add_subplot(grid[r, j])
            if img.ndim == 3:
                ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1), interpolation="nearest")
            else:
                ax.imshow(img, cmap="magma", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(CLASSES[y[rows[i]]], fontsize=8)
            if j == 0:
                ax.set_ylabel(labels[r], fontsize=7)
    sc, rd = n["shortcut"], n["randomized"]
    ax = fig.add_subplot(grid[:, 4])
    w = 0.38
    ax.bar(np.arange(2) - w / 2, [sc["test_accuracy_biased"], rd["test_accuracy_biased"]], w, color="#4477aa",
           label="test, biased backgrounds")
    ax.bar(np.arange(2) + w / 2, [sc["test_accuracy_swapped"], rd["test_accuracy_swapped"]], w, color="#cc6677",
           label="same animals, swapped")
    ax.set_xticks([0, 1], ["trained on\nbiased data", "randomized\nbackgrounds"], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, loc="upper left")
    ax = fig.add_subplot(grid[:, 5])
    for k, (method, color) in enumerate(zip(METHODS, ("#228833", "#ccbb44"))):
        vals = [sc["attribution_share_in_object"][method], rd["attribution_share_in_object"][method]]
        ax.bar(np.arange(2) + (k - 0.5) * w, vals, w, color=color, label=method.replace("_", " "))
    ax.axhline(n["object_area_share"], c="k", ls=":", lw=1, label="area of the animal")
    ax.set_xticks([0, 1], ["trained on\nbiased data", "randomized\nbackgrounds"], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of attribution inside the animal")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    ctx.figure(fig, "explain")


def conclude(ctx: LabContext):
    n = ctx.numbers
    sc, rd, area = n["shortcut"], n["randomized"], n["object_area_share"]
    ig_sc, ig_rd = (m["attribution_share_in_object"]["integrated_gradients"] for m in (sc, rd))
    sal_sc, sal_rd = (m["attribution_share_in_object"]["saliency"] for m in (sc, rd))
    checks = {
        "the biased model scores high on its (biased) test split (≥ 0.95)": sc["test_accuracy_biased"] >= 0.95,
        "swapping the backgrounds exposes it: accuracy falls by ≥ 0.5":
            sc["test_accuracy_biased"] - sc["test_accuracy_swapped"] >= 0.5,
        "with randomized backgrounds the model survives the swap (≥ 0.9 on both test sets)":
            min(rd["test_accuracy_biased"], rd["test_accuracy_swapped"]) >= 0.9,
        "the biased model's integrated gradients lie mostly outside the animal (share inside ≤ 0.5)": ig_sc <= 0.5,
        "integrated gradients move onto the animal (share inside up by ≥ 0.1)": ig_rd >= ig_sc + 0.1,
        "saliency moves onto the animal too (share inside up by ≥ 0.05)": sal_rd >= sal_sc + 0.05,
        "the same animals are held out for both models": n["same_test_animals"],
    }
    sentence = (f"Trained where every wolf stands on snow, the CNN scores {sc['test_accuracy_biased']:.3f} on its test "
                f"split but {sc['test_accuracy_swapped']:.3f} on the same animals with the backgrounds swapped; "
                f"{100 * (1 - ig_sc):.0f} % of its integrated-gradients mass ({100 * (1 - sal_sc):.0f} % of its "
                f"saliency) lies outside the animal, which covers {100 * area:.0f} % of the image. Retrained with "
                f"randomized backgrounds it scores {rd['test_accuracy_biased']:.3f} and "
                f"{rd['test_accuracy_swapped']:.3f}, and the share inside the animal rises from {ig_sc:.2f} to "
                f"{ig_rd:.2f} (saliency {sal_sc:.2f} → {sal_rd:.2f}).")
    return sentence, checks


LAB = Lab("explain", "Explaining a shortcut: husky or wolf?",
          "A model trained where the background predicts the label scores high on a test set with the same "
          "bias, most of its attribution mass lies on the background, and a background-swapped test set exposes it; "
          "retrained with randomized backgrounds it survives the swap and its attributions move onto the object.",
          (make_data, shortcut_model, background_augmentation, plot), conclude,
          intro="A high test accuracy says the model found *a* rule that works on data like the training data, not "
                "that it found the right one. Attribution maps show which pixels carried the decision; a test set "
                "that breaks the suspected shortcut confirms it.")
