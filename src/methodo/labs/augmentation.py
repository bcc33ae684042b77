"""Lab `augmentation`: data augmentation with few data, and what a model relies on (texture or shape).

Part 1. Generated 16×16 images of three shapes (circle, square, triangle) at random positions, sizes,
rotations and colours, written as an image folder; only 75 of them for training. The same small CNN is
trained by methodo's training loop without and with ``data.augment: [flip, rotation, random_resized_crop]``
(random mirror, any rotation, a random crop of 70-100 % of the area resized back): on the held-out test
images, the augmented model is clearly more accurate — the augmentations show it the poses the 75 images
lack, and are true invariances of the task (a mirrored or rotated square is still a square).

Part 2. A second set where each shape also wears its own fine texture (stripes, bars, checks): shape and
texture tell the class equally well. A CNN trained on it is perfect on its test split; what does it look at?
The same test images de-colored (``grayscale``), de-texturized (``detexture``: a Gaussian blur that erases the
2-pixel patterns and keeps the shapes), edge-enhanced (``edge_enhance``) and as edge maps (``edge_map``) — the
transforms of ``data.augment``, applied to every test image — answer: without its texture the model falls
to chance, so it relied on texture; the shape model of part 1, on the same probes, keeps its accuracy."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

SIZE, CLASSES = 16, ["circle", "square", "triangle"]
N_FEW, N_TEXTURED = 500, 360
EPOCHS_FEW, EPOCHS_TEXTURED = 60, 10
AUGMENT = ["flip", {"rotation": {"degrees": 180}}, {"random_resized_crop": {"scale": [0.7, 1.0]}}]
PROBES = {  # each test set: the test images under one transform of data.augment, applied to every image
    "clean": None,
    "decolored": {"grayscale": {"p": 1.0}},
    "detexturized": {"detexture": {"method": "gaussian", "kernel": 5, "sigma_space": 1.0, "p": 1.0}},
    "edge_enhanced": {"edge_enhance": {"factor": 3.0, "p": 1.0}},
    "edge_map": {"edge_map": {"p": 1.0}},
}
MODEL = {"name": "cnn", "width": 4, "dropout": 0.0}


def _config(path: str, augment: list, epochs: int, split: dict, batch_size: int) -> dict:
    return {"data": {"source": "imagefolder", "path": path, "augment": augment, "split": split},
            "model": MODEL,
            "train": {"epochs": epochs, "batch_size": batch_size, "optimizer": {"name": "adam", "lr": 0.01},
                      "early_stopping": {"monitor": "val_loss", "patience": epochs}}}


@step
def make_data(ctx: LabContext):
    """**Data.** Two generated sets of 16×16 RGB images written as image folders (`data.source: imagefolder`,
    one subfolder per class): three classes, circle, square and triangle, each image one bright object of
    random colour, size, position and rotation on a dark background. *Shapes*: 500 images; the class is the
    shape alone. *Textured*: 360 images where each shape also wears its own fine pattern (circles vertical
    stripes, squares horizontal bars, triangles a checkerboard, all of period 2 pixels), so texture tells the
    class as well as shape does."""
    from methodo.labs._images import shape_images, write_imagefolder

    rng = np.random.default_rng(ctx.seed)
    X, y = shape_images(rng, N_FEW, size=SIZE)
    Xt, yt = shape_images(rng, N_TEXTURED, size=SIZE, textured=True)
    ctx.state["shapes"] = str(write_imagefolder(ctx.run_dir("shapes"), X, y, CLASSES))
    ctx.state["textured"] = str(write_imagefolder(ctx.run_dir("textured"), Xt, yt, CLASSES))
    ctx.state["examples"] = (X[:6], Xt[:6], yt[:6])
    return ctx.record(images={"shapes": N_FEW, "textured": N_TEXTURED}, size=SIZE, classes=CLASSES)


@step
def few_data(ctx: LabContext):
    """**Few data, with and without augmentation.** The *shapes* set split 15 / 15 / 70 % (stratified): 75
    training images (about 25 per class), 75 for validation, 350 for the test. The same small `cnn` (width 4: 4, 8 and 16 channels) is trained twice by
    methodo's training loop — Adam at 0.01, batches of 16, 60 epochs, keeping the epoch of lowest val loss —
    once as is and once with `data.augment: [flip, {rotation: {degrees: 180}}, {random_resized_crop: {scale:
    [0.7, 1.0]}}]`: every training batch is mirrored (half the images), rotated by a random angle and cropped
    to 70-100 % of its area, afresh at each epoch; validation and test images are never augmented. Each
    model then predicts the test split once."""
    from methodo.labs._images import accuracy, to_unit

    split = {"method": "stratified", "val": 0.15, "test": 0.7}
    out = {}
    for name, aug in (("plain", []), ("augmented", AUGMENT)):
        prep, res = ctx.train(name, _config(ctx.state["shapes"], aug, EPOCHS_FEW, split, 16))
        X01 = to_unit(prep, prep.data.tensors["test"][0])
        ctx.state[f"few_{name}"] = prep
        out[name] = {"train_images": int(len(prep.data.indices["train"])),
                     "test_images": int(len(prep.data.indices["test"])),
                     "best_epoch": res.best_epoch, "val_accuracy": [r["val_accuracy"] for r in res.history],
                     "train_accuracy_at_best": res.history[res.best_epoch - 1]["train_accuracy"],
                     "test_accuracy": accuracy(prep, X01, prep.data.raw_y["test"])}
    out["gain"] = out["augmented"]["test_accuracy"] - out["plain"]["test_accuracy"]
    return ctx.record(few_data=out, augment=AUGMENT)


def _probe(ctx: LabContext, prep) -> dict:
    """Accuracy of ``prep``'s model on its test split under each probe transform."""
    from methodo.data.augment import AugmentPipeline
    from methodo.labs._images import accuracy, to_unit

    X01 = to_unit(prep, prep.data.tensors["test"][0])
    y = prep.data.raw_y["test"]
    return {name: accuracy(prep, X01 if item is None else AugmentPipeline([item], seed=ctx.seed).augment(X01), y)
            for name, item in PROBES.items()}


@step
def texture_or_shape(ctx: LabContext):
    """**Texture or shape?** The *textured* set split 50 / 15 / 35 % (180 training images), the same `cnn` trained 10 epochs without augmentation. Then its test images are transformed, each
    whole test split at once, by the steps `data.augment` offers (here with probability 1): **de-colored**
    (`grayscale`: the luma on the three channels), **de-texturized** (`detexture`, Gaussian, kernel 5, σ 1
    pixel: the 2-pixel patterns vanish, the shapes stay), **edge-enhanced** (`edge_enhance`, sharpness ×3) and
    the **edge map** (`edge_map`: the Sobel magnitude, outlines only). The accuracy on each set says what the
    model needs: a drop means it relied on what the transform removed. The augmented *shape* model of the
    previous step, which never saw a texture, goes through the same probes on its own test split."""
    split = {"method": "stratified", "val": 0.15, "test": 0.35}
    prep, res = ctx.train("textured", _config(ctx.state["textured"], [], EPOCHS_TEXTURED, split, 32))
    ctx.state["textured_prep"] = prep
    textured = {"train_images": int(len(prep.data.indices["train"])), "best_epoch": res.best_epoch,
                "accuracy": _probe(ctx, prep)}
    shape = {"accuracy": _probe(ctx, ctx.state["few_augmented"])}
    for m in (textured, shape):
        m["drop"] = {k: m["accuracy"]["clean"] - v for k, v in m["accuracy"].items() if k != "clean"}
    return ctx.record(texture_model=textured, shape_model=shape, chance=round(1 / len(CLASSES), 4),
                      probes={k: v for k, v in PROBES.items() if v is not None})


@step
def plot(ctx: LabContext):
    """**Figures.** *augmentation*: three training images and three draws of the augmentation for each (a new
    draw at every epoch); the validation accuracy per epoch of both runs, and their test accuracy.
    *texture_shape*: a textured and a plain test image under each probe, and the accuracy of both models on
    every probe set."""
    import matplotlib.pyplot as plt
    import torch

    from methodo.data.augment import AugmentPipeline

    def show(ax, img, title=None):
        ax.imshow(np.clip(np.asarray(img).transpose(1, 2, 0), 0, 1), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if title:
            ax.set_title(title, fontsize=8)

    n = ctx.numbers
    few = n["few_data"]
    X, Xt, yt = ctx.state["examples"]
    pipe = AugmentPipeline(AUGMENT, seed=ctx.seed)
    draws = [pipe.augment(torch.as_tensor(X[:3])).numpy() for _ in range(3)]
    fig = plt.figure(figsize=(11, 3.6))
    grid = fig.add_gridspec(3, 6, width_ratios=[1, 1, 1, 1, 4.2, 2.6])
    for i in range(3):
        show(fig.add_subplot(grid[i, 0]), X[i], "original" if i == 0 else None)
        for d in range(3):
            show(fig.add_subplot(grid[i, d + 1]), draws[d][i], f"draw {d + 1}" if i == 0 else None)
    ax = fig.add_subplot(grid[:, 4])
    colors = {"plain": "#888888", "augmented": "#4477aa"}
    for name in ("plain", "augmented"):
        v = few[name]["val_accuracy"]
        ax.plot(np.arange(1, len(v) + 1), v, c=colors[name], lw=1.1, label=name)
    ax.axhline(1 / len(CLASSES), c="k", ls=":", lw=0.8, label="chance")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{few['plain']['train_images']} training images", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax = fig.add_subplot(grid[:, 5])
    acc = [few["plain"]["test_accuracy"], few["augmented"]["test_accuracy"]]
    ax.bar([0, 1], acc, color=[colors["plain"], colors["augmented"]])
    for i, a in enumerate(acc):
        ax.text(i, a + 0.01, f"{a:.3f}", ha="center", fontsize=8)
    ax.set_xticks([0, 1], ["none", "flip, rotation,\ncrop"], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"test accuracy ({few['plain']['test_images']} images)", fontsize=9)
    fig.tight_layout()
    ctx.figure(fig, "augmentation")

    probes = list(PROBES)
    pair = torch.as_tensor(np.stack([Xt[0], X[0]]))
    fig = plt.figure(figsize=(11, 3.6))
    grid = fig.add_gridspec(2, len(probes) + 1, width_ratios=[1] * len(probes) + [5.5])
    for j, name in enumerate(probes):
        item = PROBES[name]
        imgs = pair if item is None else AugmentPipeline([item], seed=ctx.seed).augment(pair)
        show(fig.add_subplot(grid[0, j]), imgs[0].numpy(), name.replace("_", " "))
        show(fig.add_subplot(grid[1, j]), imgs[1].numpy())
    ax = fig.add_subplot(grid[:, -1])
    w = 0.38
    pos = np.arange(len(probes))
    tm, sm = n["texture_model"]["accuracy"], n["shape_model"]["accuracy"]
    ax.bar(pos - w / 2, [tm[p] for p in probes], w, color="#cc6677", label="trained on textured shapes")
    ax.bar(pos + w / 2, [sm[p] for p in probes], w, color="#4477aa", label="trained on plain shapes, augmented")
    ax.axhline(n["chance"], c="k", ls=":", lw=0.8, label="chance")
    ax.set_xticks(pos, [p.replace("_", "\n") for p in probes], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    ctx.figure(fig, "texture_shape")


def conclude(ctx: LabContext):
    n = ctx.numbers
    few, tm, sm = n["few_data"], n["texture_model"], n["shape_model"]
    ta, sa, chance = tm["accuracy"], sm["accuracy"], n["chance"]
    checks = {
        "augmentation raises few-data test accuracy by ≥ 5 points": few["gain"] >= 0.05,
        "the textured model is near perfect on its clean test split (≥ 0.95)": ta["clean"] >= 0.95,
        "color carries no class: de-colored accuracy within 5 points of clean, both models":
            tm["drop"]["decolored"] <= 0.05 and sm["drop"]["decolored"] <= 0.05,
        "de-texturized, the textured model falls near chance (≤ chance + 0.25)": ta["detexturized"] <= chance + 0.25,
        "de-texturized, the shape model keeps its accuracy (drop ≤ 0.15)": sm["drop"]["detexturized"] <= 0.15,
        "the textured model loses ≥ 0.3 more than the shape model when the texture goes":
            tm["drop"]["detexturized"] >= sm["drop"]["detexturized"] + 0.3,
    }
    sentence = (f"With {few['plain']['train_images']} training images, flip + rotation + crop raise test accuracy "
                f"from {few['plain']['test_accuracy']:.3f} to {few['augmented']['test_accuracy']:.3f}; the model "
                f"trained on textured shapes scores {ta['clean']:.3f} on its test split, {ta['decolored']:.3f} "
                f"de-colored, {ta['detexturized']:.3f} de-texturized (chance {chance:.2f}), "
                f"{ta['edge_enhanced']:.3f} edge-enhanced and {ta['edge_map']:.3f} on edge maps — it relied on "
                f"texture, not color — while the shape model goes {sa['clean']:.3f} → {sa['detexturized']:.3f} "
                f"de-texturized ({sa['decolored']:.3f} de-colored, {sa['edge_map']:.3f} on edge maps).")
    return sentence, checks


LAB = Lab("augmentation", "Data augmentation with few data; texture or shape?",
          "With 75 training images, flip/rotation/crop augmentation raises test accuracy; and de-colored, "
          "de-texturized and edge test sets show what a model relies on: one trained where texture gives the "
          "class away falls to chance without it, one trained on shapes does not.",
          (make_data, few_data, texture_or_shape, plot), conclude,
          intro="Augmentation multiplies few training images by transformations the task does not care about; "
                "probing a trained model with test sets that remove one cue (color, texture) tells which cue it "
                "learned.")
