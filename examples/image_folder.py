"""Write an image folder (one subfolder per class) from scikit-learn's digits, to try `data.source:
imagefolder` without downloading anything; `--truncate` adds a cut-off PNG, to see how a bad file
is reported.

    python examples/image_folder.py imgs --truncate
    methodo run examples/imagefolder.yaml data.workers=2

Classes `a` (digit 0) and `b` (digit 1), 40 images each, 16×16 grayscale PNG.
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def write(root: Path, truncate: bool) -> None:
    digits = load_digits()
    for name, label in (("a", 0), ("b", 1)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(digits.images[digits.target == label][:40]):
            pixels = (np.kron(img, np.ones((2, 2))) * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / name / f"{name}{i:02d}.png")
    if truncate:
        good = (root / "b" / "b03.png").read_bytes()
        (root / "b" / "cut.png").write_bytes(good[: len(good) // 2])
    print(f"wrote {root}: 2 classes × 40 images" + (" + b/cut.png, truncated" if truncate else ""))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default="imgs")
    p.add_argument("--truncate", action="store_true", help="add b/cut.png, the first half of a PNG")
    a = p.parse_args()
    write(Path(a.out), a.truncate)
