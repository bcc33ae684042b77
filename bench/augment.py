"""How fast is methodo's batched augmentation against a per-image torchvision v2 pipeline?

The same transform lists, on the same images, timed side by side in one process:

  (a) methodo   ``AugmentPipeline.augment`` on whole batches (one call per batch of ``--batch-size``
                images; per-image random parameters drawn as tensors)
  (b) per-image the equivalent torchvision v2 pipeline (``AugmentPipeline.reference()``: ``v2.Compose``
                of ``RandomHorizontalFlip``, ``RandomResizedCrop``, ``RandomRotation``, ``ColorJitter``,
                ``RandomGrayscale``, ``RandomErasing``, ...) called on one image tensor at a time, as a
                ``Dataset.__getitem__`` does inside a DataLoader worker

Both produce the same number of augmented images; throughput is images per second (median over
rounds, interleaved a, b, a, b, ... after one untimed warm-up). This is a benchmark, not a test: run
it by hand.

    python bench/augment.py [--images N] [--batch-size B] [--rounds R] [--threads T] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from _common import ROOT, code_version, cpu_and_nproc, loadavg, replace_section  # bench/ is sys.path[0]

SECTION = "## Augmentation"
sys.path.insert(0, str(ROOT / "src"))

PIPELINES = {
    "geometric + color": [
        {"flip": {"p": 0.5}}, {"random_resized_crop": {"scale": [0.6, 1.0]}}, {"rotation": {"degrees": 15}},
        {"color_jitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05}},
        {"grayscale": {"p": 0.2}}, {"erase": {"p": 0.5}},
    ],
    "texture + edges": [
        {"detexture": {"method": "bilateral", "p": 0.5}}, {"edge_enhance": {"p": 0.5}}, {"edge_map": {"p": 0.2}},
    ],
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2048, help="images augmented per timed run (default 2048)")
    p.add_argument("--size", type=int, default=32, help="image side in pixels (default 32, CIFAR-like)")
    p.add_argument("--batch-size", type=int, default=256, help="batch size of (a) (default 256)")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds per pipeline (default 7)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for both variants (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write", metavar="FILE", help=f"write/update the '{SECTION}' section of FILE")
    return p.parse_args(argv)


def images(n: int, size: int, seed: int):
    """Smooth random RGB images in [0, 1] (low-frequency noise upsampled), like natural photos."""
    import torch

    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, size // 4, size // 4, generator=g)
    return torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)


def run_batched(pipe, X, bs: int) -> int:
    for s in range(0, len(X), bs):
        pipe.augment(X[s:s + bs])
    return len(X)


def run_per_image(ref, X) -> int:
    for i in range(len(X)):
        ref(X[i])
    return len(X)


def machine() -> dict:
    import torch
    import torchvision

    cpu, nproc = cpu_and_nproc()
    return {"nproc": nproc, "cpu": cpu, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "code": code_version("src/methodo/data/augment.py")}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from methodo.data.augment import AugmentPipeline

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # torchvision v2 draws its parameters from the global generator
    X = images(args.images, args.size, args.seed)
    load_before = loadavg()
    rows = []
    for title, items in PIPELINES.items():
        pipe = AugmentPipeline(items, seed=args.seed)
        ref = pipe.reference()
        small = X[: max(args.batch_size, 64)]
        run_batched(pipe, small, args.batch_size)  # warm-up (lazy imports, allocator)
        run_per_image(ref, small)
        times = {"a": [], "b": []}
        for r in range(args.rounds):
            for key in ("ab" if r % 2 == 0 else "ba"):
                gc.collect()
                t0 = time.perf_counter()
                n = run_batched(pipe, X, args.batch_size) if key == "a" else run_per_image(ref, X)
                times[key].append(n / (time.perf_counter() - t0))
            print(f"{title}: round {r + 1}/{args.rounds} "
                  f"a={times['a'][-1]:.0f} img/s b={times['b'][-1]:.0f} img/s", file=sys.stderr, flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        per_round = statistics.median(a / b for a, b in zip(times["a"], times["b"]))
        rows.append((title, items, med, {k: (min(v), max(v)) for k, v in times.items()}, per_round))
    load_after = loadavg()

    table = ["| pipeline | variant | median img/s | min–max img/s | speed-up (a)/(b) |",
             "|---|---|---:|---:|---:|"]
    for title, items, med, rng, per_round in rows:
        table.append(f"| {title} | (a) methodo batched | {med['a']:,.0f} | {rng['a'][0]:,.0f}–{rng['a'][1]:,.0f} | "
                     f"**{med['a'] / med['b']:.1f}×** (per-round median {per_round:.1f}×) |")
        table.append(f"| {title} | (b) torchvision v2 per image | {med['b']:,.0f} | "
                     f"{rng['b'][0]:,.0f}–{rng['b'][1]:,.0f} | 1.0× |")
    print("\n".join(table))
    if args.write:
        cmd = "python bench/augment.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_section(Path(args.write), cmd.strip(), args, machine(), table, rows, (load_before, load_after))
        print(f"wrote section '{SECTION}' of {args.write}")
    return 0


def write_section(path: Path, cmd: str, args, mach: dict, table: list[str], rows, load) -> None:
    today = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lists = "\n".join(f"  - *{title}*: `data.augment: {items}`" for title, items, *_ in rows)
    body = f"""{SECTION}

Throughput of methodo's batched, per-image-random augmentation against the equivalent per-image
torchvision v2 pipeline, measured by `bench/augment.py` (a benchmark run by hand, not a timed test).

- **Command:** `{cmd}`
- **Date:** {today}
- **Machine:** `nproc` = {mach['nproc']}, {mach['cpu']}; torch {mach['torch']}, torchvision
  {mach['torchvision']} (CPU), Python {mach['python']}; `torch.set_num_threads({args.threads})` for both variants
- **Code measured:** methodo {mach['code']}
- **Workload:** {args.images} smooth random RGB images of {args.size}×{args.size} (float32 in [0, 1]); each
  timed run augments all of them once. (a) `AugmentPipeline(items).augment(batch)` over batches of
  {args.batch_size}; (b) `AugmentPipeline(items).reference()` — a `v2.Compose` of the torchvision v2
  transforms doing the same steps (bilateral smoothing and the Sobel edge map, which torchvision
  lacks, run methodo's kernel on one image) — called image by image, as a DataLoader worker's
  `__getitem__` does. Transform lists:
{lists}
- **Timed:** one untimed warm-up, then {args.rounds} rounds alternating (a, b) and (b, a);
  `gc.collect()` before every run; median, min and max images/s. 1-minute load average {load[0]}
  before, {load[1]} after.

{chr(10).join(table)}

Same operations, not bit-identical streams: (a) draws one set of parameters per image from its own
generator; torchvision draws from the global one, applies `ColorJitter`'s four adjustments in a
random order (methodo: brightness, contrast, saturation, hue), and retries `RandomResizedCrop`'s
box up to 10 times before a centre crop (methodo clips the box to the image). With fixed
parameters the outputs agree with torchvision's kernels (rotation within 1e-5, flip, grayscale,
sharpness and Gaussian blur exactly: `tests/test_augment.py`).
"""
    replace_section(path, SECTION, body)


if __name__ == "__main__":
    sys.exit(main())
