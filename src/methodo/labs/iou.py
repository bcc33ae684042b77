"""Lab `iou`: intersection over union, by hand and by methodo's metrics, on tiny masks and boxes. IoU = |A ∩ B| /
|A ∪ B| and Dice = 2|A ∩ B| / (|A| + |B|) counted pixel by pixel equal methodo's segmentation metrics
(``mean_iou``, ``dice``, over all pixels of the split, per class, then averaged) and its ``box_iou``; Dice is a
function of IoU, 2·IoU / (1 + IoU); and pixel accuracy flatters a small object that IoU does not."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

SIZE, IMAGES = 12, 2


def _rect(rng, size):
    h, w = rng.integers(3, 6, 2)
    y, x = rng.integers(0, size - h), rng.integers(0, size - w)
    return int(y), int(x), int(h), int(w)


@step
def make_masks(ctx: LabContext):
    """**Tiny masks.** Two 12 × 12 images, each with one rectangular object (class 1) on background (class 0),
    placed by the seed; the "prediction" is the same rectangle shifted by one or two pixels, so it overlaps the
    truth only in part."""
    rng = np.random.default_rng(ctx.seed)
    truth = np.zeros((IMAGES, SIZE, SIZE), dtype=np.int64)
    pred = np.zeros_like(truth)
    boxes_t, boxes_p = [], []
    for i in range(IMAGES):
        y, x, h, w = _rect(rng, SIZE - 2)
        dy, dx = rng.integers(1, 3, 2)
        truth[i, y:y + h, x:x + w] = 1
        pred[i, y + dy:y + dy + h, x + dx:x + dx + w] = 1
        boxes_t.append([x, y, x + w, y + h])
        boxes_p.append([x + dx, y + dy, x + dx + w, y + dy + h])
    ctx.state.update(truth=truth, pred=pred, boxes_t=boxes_t, boxes_p=boxes_p)
    return ctx.record(image_size=SIZE, images=IMAGES, object_pixels=int(truth.sum()), predicted_pixels=int(pred.sum()))


@step
def by_hand(ctx: LabContext):
    """**By hand.** For each class, over all pixels of both images: the intersection (pixels of that class in
    both truth and prediction) and the union (in either); IoU = intersection / union, Dice = 2 × intersection
    / (truth pixels + predicted pixels); the mean over the two classes. For the boxes (x1, y1, x2, y2): the
    overlap rectangle's area over the area of the union."""
    t, p = ctx.state["truth"], ctx.state["pred"]
    iou, dice = [], []
    for c in (0, 1):
        inter = int(np.sum((t == c) & (p == c)))
        union = int(np.sum((t == c) | (p == c)))
        iou.append(inter / union)
        dice.append(2 * inter / (int(np.sum(t == c)) + int(np.sum(p == c))))
    boxes = []
    for (a1, b1, a2, b2), (c1, d1, c2, d2) in zip(ctx.state["boxes_t"], ctx.state["boxes_p"]):
        inter = max(0, min(a2, c2) - max(a1, c1)) * max(0, min(b2, d2) - max(b1, d1))
        boxes.append(inter / ((a2 - a1) * (b2 - b1) + (c2 - c1) * (d2 - d1) - inter))
    return ctx.record(by_hand={"iou_per_class": iou, "mean_iou": sum(iou) / 2, "dice_per_class": dice,
                               "dice": sum(dice) / 2, "pixel_accuracy": float(np.mean(t == p)), "box_iou": boxes})


@step
def with_methodo(ctx: LabContext):
    """**The same with methodo.** The prediction as class probabilities (N, C, H, W) — one-hot here — and the
    true masks go to `compute_metrics("segmentation", ...)` (`mean_iou`, `dice`, `pixel_accuracy`) and
    `per_class_iou`; the boxes to `box_iou` (torchvision's)."""
    import torch

    from methodo.evaluate.metrics import box_iou, compute_metrics, per_class_iou

    t, p = torch.as_tensor(ctx.state["truth"]), torch.as_tensor(ctx.state["pred"])
    probs = torch.nn.functional.one_hot(p, 2).permute(0, 3, 1, 2).float()
    m = compute_metrics("segmentation", probs, t, 2, names=["mean_iou", "dice", "pixel_accuracy"])
    ious = box_iou(torch.tensor(ctx.state["boxes_t"], dtype=torch.float32),
                   torch.tensor(ctx.state["boxes_p"], dtype=torch.float32)).diagonal().tolist()
    return ctx.record(methodo={"iou_per_class": per_class_iou(probs, t, 2), **m, "box_iou": ious})


@step
def small_object(ctx: LabContext):
    """**What pixel accuracy hides.** The same prediction scored as if the images were 48 × 48 (the object
    unchanged, 16 times more background): pixel accuracy climbs towards 1, mean IoU barely moves, and the
    object's own IoU does not move at all — IoU per class is the honest number for small objects."""
    import torch

    from methodo.evaluate.metrics import compute_metrics, per_class_iou

    big_t = np.zeros((IMAGES, 4 * SIZE, 4 * SIZE), dtype=np.int64)
    big_p = np.zeros_like(big_t)
    big_t[:, :SIZE, :SIZE], big_p[:, :SIZE, :SIZE] = ctx.state["truth"], ctx.state["pred"]
    t, p = torch.as_tensor(big_t), torch.as_tensor(big_p)
    probs = torch.nn.functional.one_hot(p, 2).permute(0, 3, 1, 2).float()
    m = compute_metrics("segmentation", probs, t, 2, names=["pixel_accuracy", "mean_iou"])
    return ctx.record(large_background={**m, "object_iou": per_class_iou(probs, t, 2)[1]})


@step
def plot(ctx: LabContext):
    """**Figure.** The two images: truth (blue), prediction (red), overlap (purple), with each object's IoU."""
    import matplotlib.pyplot as plt

    t, p = ctx.state["truth"], ctx.state["pred"]
    fig, axes = plt.subplots(1, IMAGES + 1, figsize=(9, 3.2))
    for i in range(IMAGES):
        rgb = np.ones((SIZE, SIZE, 3))
        rgb[t[i] == 1] = (0.55, 0.7, 0.95)
        rgb[p[i] == 1] = (0.95, 0.6, 0.55)
        rgb[(t[i] == 1) & (p[i] == 1)] = (0.6, 0.4, 0.75)
        axes[i].imshow(rgb, interpolation="nearest")
        inter, union = int(((t[i] == 1) & (p[i] == 1)).sum()), int(((t[i] == 1) | (p[i] == 1)).sum())
        axes[i].set_title(f"image {i + 1}: object IoU {inter}/{union} = {inter / union:.3f}", fontsize=9)
        axes[i].set_xticks([])
        axes[i].set_yticks([])
    n = ctx.numbers
    names = ["mean IoU", "Dice", "pixel acc."]
    keys = ["mean_iou", "dice", "pixel_accuracy"]
    x = np.arange(3)
    axes[-1].bar(x - 0.2, [n["by_hand"][k] for k in keys], 0.4, label="by hand", color="#999999")
    axes[-1].bar(x + 0.2, [n["methodo"][k] for k in keys], 0.4, label="methodo", color="#4477aa")
    axes[-1].set_xticks(x, names, fontsize=8)
    axes[-1].set_ylim(0, 1.05)
    axes[-1].legend(fontsize=8)
    axes[-1].set_title("both images", fontsize=9)
    fig.tight_layout()
    ctx.figure(fig, "iou")


def conclude(ctx: LabContext):
    n = ctx.numbers
    h, m, big = n["by_hand"], n["methodo"], n["large_background"]
    close = lambda a, b: all(abs(x - y) < 1e-6 for x, y in zip(a, b))  # noqa: E731  (float32 tensors)
    checks = {
        "mean IoU, Dice and pixel accuracy equal methodo's": close([h[k] for k in ("mean_iou", "dice", "pixel_accuracy")],
                                                                 [m[k] for k in ("mean_iou", "dice", "pixel_accuracy")]),
        "IoU per class equals methodo's": close(h["iou_per_class"], m["iou_per_class"]),
        "box IoU equals methodo's box_iou": close(h["box_iou"], m["box_iou"]),
        "Dice = 2·IoU/(1 + IoU) per class": close(h["dice_per_class"], [2 * i / (1 + i) for i in h["iou_per_class"]]),
        "more background: pixel accuracy rises, object IoU does not": big["pixel_accuracy"] > h["pixel_accuracy"]
        and abs(big["object_iou"] - h["iou_per_class"][1]) < 1e-9,
    }
    sentence = (f"By hand the object's IoU is {h['iou_per_class'][1]:.4f} and the mean IoU {h['mean_iou']:.4f} (methodo: "
                f"{m['iou_per_class'][1]:.4f}, {m['mean_iou']:.4f}), Dice {h['dice']:.4f} ({m['dice']:.4f}), box IoU "
                f"{', '.join(f'{v:.4f}' for v in h['box_iou'])} (methodo {', '.join(f'{v:.4f}' for v in m['box_iou'])}); "
                f"with 16× the background pixel accuracy goes {h['pixel_accuracy']:.3f} → {big['pixel_accuracy']:.3f} "
                f"while the object's IoU stays {big['object_iou']:.4f}.")
    return sentence, checks


LAB = Lab("iou", "IoU and Dice, by hand and by methodo",
          "IoU and Dice counted by hand on tiny masks and boxes equal methodo's metrics; Dice = 2·IoU/(1 + IoU); "
          "pixel accuracy flatters a small object, the object's IoU does not.",
          (make_masks, by_hand, with_methodo, small_object, plot), conclude,
          intro="The course's segmentation and detection metric: intersection over union, per class over all "
                "pixels (the PASCAL VOC / Cityscapes convention methodo uses).")
