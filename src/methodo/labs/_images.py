"""Small generated image sets for the image labs (`augmentation`, `explain`), written as an image folder
(``data.source: imagefolder``: one subfolder per class of PNG files), the format a user gives methodo.

Shapes are drawn with the geometry of methodo's ``shapes`` dataset (:func:`methodo.data.shapes._shape_mask`);
everything comes from the numpy generator the lab passes, so a seed gives the same images. File names are
the image's index (``0042.png``), so :func:`rows_of` maps a split of the pipeline back to the generated arrays
(and to what the lab knows about each image: its object mask, its background).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

SHAPES = {"circle": 1, "square": 2, "triangle": 3}  # the kinds of methodo.data.shapes
TEXTURES = ("stripes", "bars", "checks")  # vertical stripes, horizontal bars, a checkerboard: all of period 2


def _grid(size: int):
    return np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # (yy, xx), pixel centres


def shape_images(rng: np.random.Generator, n: int, *, size: int = 16, textured: bool = False,
                 noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """``n`` RGB images ``(n, 3, size, size)`` in [0, 1] and their classes (0 circle, 1 square, 2 triangle).

    One bright object of random colour, size, position and rotation on a dark background of random colour,
    plus pixel noise; the class is the shape. With ``textured``, the object also wears its class's texture (a
    fine pattern of period 2 pixels, see :data:`TEXTURES`): shape and texture then tell the class equally well.
    """
    from methodo.data.shapes import _shape_mask

    yy, xx = _grid(size)
    ii, jj = np.mgrid[0:size, 0:size]
    patterns = [(jj % 2) == 0, (ii % 2) == 0, ((ii + jj) % 2) == 0]
    X = np.empty((n, 3, size, size), dtype=np.float32)
    y = rng.integers(0, len(SHAPES), n)
    for i in range(n):
        bg = rng.uniform(0.0, 0.3, 3)
        img = np.broadcast_to(bg[:, None, None], (3, size, size)).copy()
        r = rng.uniform(0.28, 0.42) * size
        cx, cy = rng.uniform(r * 0.7, size - r * 0.7, 2)
        inside = _shape_mask(int(y[i]) + 1, xx, yy, cx, cy, r, rng.uniform(0, 2 * math.pi))
        colour = rng.uniform(0.6, 1.0, 3)
        img[:, inside] = colour[:, None]
        if textured:
            img[:, inside & patterns[y[i]]] = 0.4 * colour[:, None]
        X[i] = np.clip(img + rng.normal(0, noise, img.shape), 0, 1)
    return X, y


def write_imagefolder(root: Path, X: np.ndarray, y: np.ndarray, classes: list[str]) -> Path:
    """Write images ``(n, C, H, W)`` in [0, 1] as ``root/CLASS/INDEX.png`` (8-bit); returns ``root``."""
    from PIL import Image

    root = Path(root)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
    for i, (x, t) in enumerate(zip(X, y)):
        pixels = (np.asarray(x).transpose(1, 2, 0) * 255).round().astype(np.uint8)
        Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(root / classes[int(t)] / f"{i:04d}.png")
    return root


def rows_of(prep, split: str) -> np.ndarray:
    """The generated-image index of each row of ``split`` (the pipeline's order), from the files' names."""
    paths = prep.ds.meta["path"]
    return np.array([int(Path(str(paths[j])).stem) for j in prep.data.indices[split]], dtype=np.int64)


def to_unit(prep, X):
    """Standardized inputs (the pipeline's tensors) back to pixel values in [0, 1]."""
    import torch

    pre = prep.data.preprocessor
    mean = torch.as_tensor(pre.mean, dtype=X.dtype)
    std = torch.as_tensor(pre.std, dtype=X.dtype)
    return (X * std + mean).clamp(0, 1)


def accuracy(prep, X01, y) -> float:
    """The accuracy of the prepared model on images in [0, 1] (standardized with the run's own training-set
    statistics, as every split), scored by methodo's metric."""
    import torch

    from methodo.evaluate.metrics import compute_metrics, predict

    X = torch.as_tensor(prep.data.preprocessor.transform_x(np.asarray(X01, dtype=np.float32)))
    p = predict(prep.model, X, task="classification")
    return float(compute_metrics("classification", p, np.asarray(y), p.shape[1], names=["accuracy"])["accuracy"])
