"""``shapes``: a generated segmentation dataset — circles, squares and triangles on noisy backgrounds.

Every image holds 1 to 3 shapes of random size, position, rotation and colour on a background of
random colour with a gradient and pixel noise; the mask gives each pixel's class (0 background,
1 circle, 2 square, 3 triangle; a shape drawn later covers an earlier one). Colours carry no
information about the class, so the model has to learn geometry. Everything comes from one
``numpy`` generator seeded by ``data.options.seed``: the same seed gives the same images.

Examples
--------
>>> from methodo.data.shapes import make_shapes
>>> X, y = make_shapes(4, size=16, seed=0)
>>> X.shape, y.shape, X.dtype.name, y.dtype.name
((4, 3, 16, 16), (4, 16, 16), 'float32', 'int64')
>>> bool((make_shapes(4, size=16, seed=0)[0] == X).all())
True
"""

from __future__ import annotations

import math

import numpy as np

from methodo.data.dataset import DATASETS, Dataset
from methodo.errors import DataError

CLASSES = ["background", "circle", "square", "triangle"]


def _shape_mask(kind: int, xx, yy, cx: float, cy: float, r: float, theta: float) -> np.ndarray:
    """Pixels inside a shape of circumradius ``r`` centred at ``(cx, cy)``, rotated by ``theta``."""
    dx, dy = xx - cx, yy - cy
    if kind == 1:  # circle
        return dx * dx + dy * dy <= r * r
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * dx + s * dy, -s * dx + c * dy  # coordinates in the shape's own frame
    if kind == 2:  # square with circumradius r: half side r/√2
        half = r / math.sqrt(2)
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    # equilateral triangle: inside the three half-planes whose normals point at 90°, 210°, 330°
    inside = np.ones_like(u, dtype=bool)
    for k in range(3):
        a = math.pi / 2 + k * 2 * math.pi / 3
        inside &= (u * math.cos(a) + v * math.sin(a)) >= -r / 2
    return inside


def make_shapes(n: int, *, size: int = 32, seed: int = 0, max_shapes: int = 3,
                noise: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """``n`` RGB images ``(n, 3, size, size)`` in [0, 1] and their masks ``(n, size, size)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
    X = np.empty((n, 3, size, size), dtype=np.float32)
    Y = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        # 1. Background: a random colour, a linear gradient across the image, pixel noise (below).
        bg = rng.uniform(0.15, 0.85, 3)
        g = rng.normal(0, 0.15, 2)
        ramp = (g[0] * (xx / size - 0.5) + g[1] * (yy / size - 0.5))
        img = bg[:, None, None] + ramp[None]
        # 2. Shapes: random class, radius, centre, rotation; a colour far enough from the background.
        for _ in range(int(rng.integers(1, max_shapes + 1))):
            kind = int(rng.integers(1, 4))
            r = rng.uniform(0.18, 0.32) * size
            cx, cy = rng.uniform(r * 0.6, size - r * 0.6, 2)
            inside = _shape_mask(kind, xx, yy, cx, cy, r, rng.uniform(0, 2 * math.pi))
            direction = rng.normal(0, 1, 3)
            colour = np.clip(bg + 0.45 * direction / np.linalg.norm(direction), 0, 1)
            img[:, inside] = colour[:, None]
            Y[i][inside] = kind
        X[i] = np.clip(img + rng.normal(0, noise, img.shape), 0, 1)
    return X, Y


@DATASETS.register("shapes", help="generated: RGB images of circles/squares/triangles on noisy backgrounds, "
                   "per-pixel class masks (segmentation)", task="segmentation",
                   kind="image")
def load_shapes(data_cfg, *, audit: bool = False, n: int = 600, size: int = 32, seed: int = 0,
                max_shapes: int = 3, noise: float = 0.08) -> Dataset:
    """Options (``data.options``): ``n`` images of ``size``×``size`` pixels, ``seed`` of the
    generator (independent of the training seed, so changing ``seed`` re-trains on the same
    images), up to ``max_shapes`` per image, pixel ``noise`` (standard deviation). Generated data has
    nothing for ``audit`` to collect."""
    if n < 3 or size < 8 or max_shapes < 1 or noise < 0:
        raise DataError(f"data.options: shapes needs n >= 3, size >= 8, max_shapes >= 1 and noise >= 0 "
                        f"(got n={n}, size={size}, max_shapes={max_shapes}, noise={noise})")
    X, y = make_shapes(n, size=size, seed=seed, max_shapes=max_shapes, noise=noise)
    return Dataset("shapes", "segmentation", "image", X, y, [], list(CLASSES),
                   f"generated shapes: {n} RGB {size}×{size} images with 1-{max_shapes} circles/squares/"
                   f"triangles on noisy backgrounds, per-pixel masks (generator seed {seed})")
