"""Training-only image augmentation, batched on tensors, with torchvision transforms v2.

``data.augment`` lists the steps in order, each a name or ``{name: options}``. Every step works on
a whole batch ``(N, C, H, W)`` of float images in [0, 1] at once, with its own random parameters
for each image (torchvision's v2 transforms draw one set of parameters per call, so applied to a
batch they would flip, rotate or crop every image the same way). Each step also gives
``reference()``, the per-image torchvision v2 transform doing the same thing, used by the
benchmark (``bench/augment.py``) and the tests.

Augmentation only ever touches training batches: the loop calls the pipeline on each training
batch; evaluation never does. ``normalize`` is the exception by design: a fixed normalization must
be the same for every split, so it replaces the fitted standardization instead of being a
training-only step.

Examples
--------
>>> import torch
>>> from methodo.data.augment import AugmentPipeline
>>> aug = AugmentPipeline(["flip", {"rotation": {"degrees": 10}}], seed=0)
>>> aug(torch.rand(4, 3, 8, 8)).shape
torch.Size([4, 3, 8, 8])
"""

from __future__ import annotations

import math
from typing import Any

from methodo.errors import ConfigError, short
from methodo.tasks import task_spec
from methodo.registry import Registry

AUGMENTATIONS = Registry("augmentation")


class Augmentation:
    """One step. ``__init__`` stores options only; ``apply(x, g)`` transforms the chosen images.

    ``__call__(x, g)`` picks each image with probability ``p`` and applies ``apply`` to those only.
    """

    p: float = 1.0

    @property
    def name(self) -> str:
        """The name this step's class is registered under."""
        return AUGMENTATIONS.name_of(type(self)) or "?"

    def apply(self, x, g):  # pragma: no cover - abstract
        raise NotImplementedError

    def reference(self):  # pragma: no cover - abstract
        """The per-image torchvision v2 transform doing the same thing."""
        raise NotImplementedError

    def __call__(self, x, g):
        import torch

        if self.p >= 1.0:
            return self.apply(x, g)
        pick = (torch.rand(len(x), generator=g) < self.p).nonzero().squeeze(1)
        if len(pick) == 0:
            return x
        pick = pick.to(x.device)
        out = x.clone()
        out[pick] = self.apply(x[pick], g)
        return out

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({opts})"


def _uniform(g, n, lo, hi):
    import torch

    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def _blend(a, b, ratio):
    """``ratio × a + (1 − ratio) × b`` per image (ratio shaped (N,)), clamped to [0, 1] like torchvision."""
    r = ratio.to(a.dtype).to(a.device).view(-1, 1, 1, 1)
    return (r * a + (1 - r) * b).clamp_(0.0, 1.0)


def _gray(x):
    """Luma (ITU-R 601-2, as torchvision) of RGB images, shape (N, 1, H, W)."""
    if x.shape[1] == 1:
        return x
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _warp(x, theta):
    """Resample ``x`` through per-image affine maps ``theta`` (N, 2, 3) in normalized coordinates."""
    import torch.nn.functional as F

    grid = F.affine_grid(theta.to(x.dtype).to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# --------------------------------------------------------------------------- geometry


@AUGMENTATIONS.register("flip", help="mirror left-right (and up-down with vertical: true), each with probability p")
class Flip(Augmentation):
    def __init__(self, p: float = 0.5, horizontal: bool = True, vertical: bool = False):
        self.p, self.horizontal, self.vertical = p, horizontal, vertical

    def __call__(self, x, g):  # independent coins for each axis
        import torch

        if self.horizontal:
            m = (torch.rand(len(x), generator=g) < self.p).to(x.device).view(-1, 1, 1, 1)
            x = torch.where(m, x.flip(-1), x)
        if self.vertical:
            m = (torch.rand(len(x), generator=g) < self.p).to(x.device).view(-1, 1, 1, 1)
            x = torch.where(m, x.flip(-2), x)
        return x

    def reference(self):
        from torchvision.transforms import v2

        steps = ([v2.RandomHorizontalFlip(self.p)] if self.horizontal else []) + (
            [v2.RandomVerticalFlip(self.p)] if self.vertical else [])
        return v2.Compose(steps)


@AUGMENTATIONS.register("rotation",
                        help="rotate by a random angle in [-degrees, degrees] (default 15; or [low, high]), "
                             "bilinear, black corners")
class Rotation(Augmentation):
    def __init__(self, degrees: float | list | None = None, p: float = 1.0):
        if degrees is not None and not (isinstance(degrees, (int, float)) and not isinstance(degrees, bool)
                                        or isinstance(degrees, (list, tuple)) and len(degrees) == 2):
            raise ConfigError(f"rotation: degrees is a number or [low, high] (got {short(degrees)})", key="degrees")
        self.degrees, self.p = degrees, p

    def _range(self):
        d = 15.0 if self.degrees is None else self.degrees
        return (-float(d), float(d)) if isinstance(d, (int, float)) else (float(d[0]), float(d[1]))

    def apply(self, x, g):
        import torch

        lo, hi = self._range()
        a = torch.deg2rad(_uniform(g, len(x), lo, hi))  # counter-clockwise, as torchvision
        h, w = x.shape[-2:]
        cos, sin = torch.cos(a), torch.sin(a)
        theta = torch.zeros(len(x), 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w
        theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
        return _warp(x, theta)

    def reference(self):
        from torchvision.transforms import v2

        return v2.RandomRotation(self._range(), interpolation=v2.InterpolationMode.BILINEAR)


@AUGMENTATIONS.register("random_resized_crop",
                        help="crop a random area (scale of the image, aspect ratio) and resize it back to the image "
                             "size")
class RandomResizedCrop(Augmentation):
    def __init__(self, scale: list = (0.6, 1.0), ratio: list = (0.75, 1.3333), p: float = 1.0):
        self.scale, self.ratio, self.p = scale, ratio, p

    def apply(self, x, g):
        import torch

        n = len(x)
        h, w = x.shape[-2:]
        area = _uniform(g, n, float(self.scale[0]), float(self.scale[1]))
        logr = _uniform(g, n, math.log(self.ratio[0]), math.log(self.ratio[1]))
        r = torch.exp(logr)
        # crop width/height as fractions of the image (aspect ratio in pixels), clipped to fit
        cw = torch.sqrt(area * r * h / w).clamp(max=1.0)
        ch = torch.sqrt(area / r * w / h).clamp(max=1.0)
        cx = (1 - cw) * (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1)  # centre, normalized
        cy = (1 - ch) * (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1)
        theta = torch.zeros(n, 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 0, 2] = cw, cx
        theta[:, 1, 1], theta[:, 1, 2] = ch, cy
        return _warp(x, theta)

    def reference(self):
        from torchvision.transforms import v2

        return _Resized(v2, tuple(self.scale), tuple(self.ratio))


class _Resized:
    """``v2.RandomResizedCrop`` to the input's own size (known only per image)."""

    def __init__(self, v2, scale, ratio):
        self.v2, self.scale, self.ratio = v2, scale, ratio

    def __call__(self, img):
        return self.v2.RandomResizedCrop(tuple(img.shape[-2:]), scale=self.scale, ratio=self.ratio,
                                         antialias=True)(img)


# --------------------------------------------------------------------------- color


@AUGMENTATIONS.register("color_jitter",
                        help="random brightness, contrast, saturation (factors in [1-v, 1+v]) and hue shift (in "
                             "[-hue, hue] turns)")
class ColorJitter(Augmentation):
    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, hue: float = 0.0,
                 p: float = 1.0):
        self.brightness, self.contrast, self.saturation, self.hue, self.p = brightness, contrast, saturation, hue, p

    def apply(self, x, g):
        import torch

        n = len(x)
        if self.brightness:
            x = _blend(x, torch.zeros_like(x), _uniform(g, n, max(0, 1 - self.brightness), 1 + self.brightness))
        if self.contrast:
            mean = _gray(x).mean(dim=(-3, -2, -1), keepdim=True)
            x = _blend(x, mean.expand_as(x), _uniform(g, n, max(0, 1 - self.contrast), 1 + self.contrast))
        if x.shape[1] == 3:  # saturation and hue mean nothing for a gray image
            if self.saturation:
                x = _blend(x, _gray(x).expand_as(x), _uniform(g, n, max(0, 1 - self.saturation), 1 + self.saturation))
            if self.hue:
                from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

                hsv = _rgb_to_hsv(x.clamp(0, 1))
                shift = _uniform(g, n, -self.hue, self.hue).to(x.dtype).to(x.device).view(-1, 1, 1)
                hsv[:, 0] = (hsv[:, 0] + shift) % 1.0
                x = _hsv_to_rgb(hsv)
        return x

    def reference(self):
        from torchvision.transforms import v2

        return v2.ColorJitter(brightness=self.brightness or None, contrast=self.contrast or None,
                              saturation=self.saturation or None, hue=self.hue or None)


@AUGMENTATIONS.register("grayscale",
                        help="de-colored: replace the image by its luma (kept as C channels) with probability p")
class Grayscale(Augmentation):
    def __init__(self, p: float = 0.2):
        self.p = p

    def apply(self, x, g):
        return _gray(x).expand_as(x).contiguous()

    def reference(self):
        from torchvision.transforms import v2

        return v2.RandomGrayscale(self.p)


# --------------------------------------------------------------------------- texture and edges


def _median(x, k):
    import torch.nn.functional as F

    pad = k // 2
    n, c, h, w = x.shape
    patches = F.unfold(F.pad(x, (pad, pad, pad, pad), mode="reflect"), k)  # (N, C·k², H·W)
    return patches.view(n, c, k * k, h * w).median(dim=2).values.view(n, c, h, w)


def _bilateral(x, k, sigma_color, sigma_space):
    """Edge-preserving smoothing: each pixel averages its k×k neighbours, weighted by distance in
    space and in color (one shifted view per offset: no k²-sized copy of the batch)."""
    import math as _m

    import torch
    import torch.nn.functional as F

    pad = k // 2
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    num = torch.zeros_like(x)
    den = torch.zeros_like(x[:, :1])
    inv_c = -1.0 / (2 * sigma_color ** 2)
    for dy in range(k):
        for dx in range(k):
            nb = padded[..., dy:dy + h, dx:dx + w]
            ws = _m.exp(-((dy - pad) ** 2 + (dx - pad) ** 2) / (2 * sigma_space ** 2))
            wgt = torch.exp((nb - x).pow(2).sum(1, keepdim=True) * inv_c) * ws
            num += nb * wgt
            den += wgt
    return num / den


@AUGMENTATIONS.register("detexture",
                        help="de-texturized: smooth away fine texture, keeping shapes (method: "
                             "bilateral|median|gaussian; kernel size)")
class Detexture(Augmentation):
    def __init__(self, method: str = "bilateral", kernel: int = 5, sigma_color: float = 0.1,
                 sigma_space: float = 2.0, p: float = 0.5):
        if method not in ("bilateral", "median", "gaussian"):
            raise ConfigError(f"detexture: method {short(method)}; choose 'bilateral', 'median' or 'gaussian'", key="method")
        if kernel < 3 or kernel % 2 == 0:
            raise ConfigError(f"detexture: kernel must be an odd size >= 3 (got {kernel})", key="kernel")
        self.method, self.kernel, self.sigma_color, self.sigma_space, self.p = (
            method, kernel, sigma_color, sigma_space, p)

    def apply(self, x, g):
        if self.method == "median":
            return _median(x, self.kernel)
        if self.method == "bilateral":
            return _bilateral(x, self.kernel, self.sigma_color, self.sigma_space)
        from torchvision.transforms.v2 import functional as TF

        return TF.gaussian_blur(x, [self.kernel, self.kernel], [self.sigma_space, self.sigma_space])

    def reference(self):
        from torchvision.transforms import v2

        if self.method == "gaussian":
            return v2.RandomApply([v2.GaussianBlur(self.kernel, self.sigma_space)], p=self.p)
        return v2.RandomApply([_PerImage(self.apply)], p=self.p)


class _PerImage:
    """A batched kernel applied to one image (C, H, W): the per-image form of a step torchvision lacks."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, img):
        return self.fn(img[None], None)[0]


@AUGMENTATIONS.register("edge_enhance",
                        help="sharpen edges (torchvision adjust_sharpness by factor) with probability p")
class EdgeEnhance(Augmentation):
    def __init__(self, factor: float = 2.0, p: float = 0.5):
        self.factor, self.p = factor, p

    def apply(self, x, g):
        from torchvision.transforms.v2 import functional as TF

        return TF.adjust_sharpness(x, self.factor)

    def reference(self):
        from torchvision.transforms import v2

        return v2.RandomAdjustSharpness(self.factor, p=self.p)


def _sobel(x):
    import torch
    import torch.nn.functional as F

    gray = _gray(x)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    k = torch.stack([kx, kx.T])[:, None]  # (2, 1, 3, 3)
    gxy = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), k)
    mag = gxy.pow(2).sum(1, keepdim=True).sqrt()
    # scale by the image's strongest edge, but never by less than a 0→0.25 step (Sobel 1.0): a flat
    # image's faint noise must stay dark, not be stretched into a texture of false edges
    peak = mag.amax(dim=(-2, -1), keepdim=True)
    return (mag / peak.clamp_min(1.0)).expand_as(x).contiguous()


@AUGMENTATIONS.register("edge_map",
                        help="salient edge map: replace the image by its Sobel edge magnitude (scaled by the "
                             "strongest edge to [0, 1]) with probability p")
class EdgeMap(Augmentation):
    def __init__(self, p: float = 0.2):
        self.p = p

    def apply(self, x, g):
        return _sobel(x)

    def reference(self):
        from torchvision.transforms import v2

        return v2.RandomApply([_PerImage(self.apply)], p=self.p)


@AUGMENTATIONS.register("erase",
                        help="erase a random rectangle (area scale of the image) with probability p (cutout)")
class Erase(Augmentation):
    def __init__(self, scale: list = (0.02, 0.2), p: float = 0.5):
        self.scale, self.p = scale, p

    def apply(self, x, g):
        import torch

        n, _, h, w = x.shape
        area = _uniform(g, n, float(self.scale[0]), float(self.scale[1]))
        logr = _uniform(g, n, math.log(0.3), math.log(3.3))
        eh = torch.sqrt(area * h * w * torch.exp(logr)).round().clamp(1, h)
        ew = torch.sqrt(area * h * w / torch.exp(logr)).round().clamp(1, w)
        top = (torch.rand(n, generator=g, dtype=torch.float64) * (h - eh + 1)).floor()
        left = (torch.rand(n, generator=g, dtype=torch.float64) * (w - ew + 1)).floor()
        rows = torch.arange(h, dtype=torch.float64).view(1, h, 1)
        cols = torch.arange(w, dtype=torch.float64).view(1, 1, w)
        box = ((rows >= top.view(-1, 1, 1)) & (rows < (top + eh).view(-1, 1, 1))
               & (cols >= left.view(-1, 1, 1)) & (cols < (left + ew).view(-1, 1, 1)))
        return x.masked_fill(box.unsqueeze(1).to(x.device), 0.0)

    def reference(self):
        from torchvision.transforms import v2

        return v2.RandomErasing(p=self.p, scale=tuple(self.scale), ratio=(0.3, 3.3), value=0)


@AUGMENTATIONS.register("normalize", all_splits=True,
                        help="fixed normalization (mean, std per channel) for EVERY split, instead of the "
                             "training-set standardization; not random")
class Normalize(Augmentation):
    def __init__(self, mean: list | None = None, std: list | None = None):
        if (mean is None) != (std is None):
            raise ConfigError("normalize: give both mean and std, or neither (then they are fitted on train)",
                              key="mean" if mean is None else "std")
        for key, v in (("mean", mean), ("std", std)):
            vals = v if isinstance(v, (list, tuple)) else [v]
            if v is not None and (not vals or len(vals) > 4 or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                    and (key == "mean" or x > 0) for x in vals)):
                raise ConfigError(f"normalize: {key} is a number or one number per channel, e.g. [0.5, 0.5, 0.5]"
                                  + (", each > 0" if key == "std" else "") + f" (got {short(v)})", key=key)
        self.mean, self.std, self.p = mean, std, 1.0

    def apply(self, x, g):
        from torchvision.transforms.v2 import functional as TF

        if self.mean is None:
            return x
        return TF.normalize(x, list(map(float, self.mean)), list(map(float, self.std)))

    def reference(self):
        from torchvision.transforms import v2

        if self.mean is None:
            return v2.Identity()
        return v2.Normalize(list(map(float, self.mean)), list(map(float, self.std)))


# --------------------------------------------------------------------------- the pipeline


def parse(items: list) -> list[tuple[str, dict]]:
    from methodo.data.features import parse_step

    return [parse_step(item, i, key="data.augment") for i, item in enumerate(items)]


def build_steps(items: list) -> list[Augmentation]:
    """Instantiate each listed step; a bad name or option is a ConfigError naming ``data.augment.I``."""
    from methodo.registry import check_kwargs

    steps = []
    for i, (name, opts) in enumerate(parse(items)):
        cls = AUGMENTATIONS.get(name, key=f"data.augment.{i}")
        try:
            check_kwargs(cls.__init__, opts, what=f"augmentation {name!r}")
            steps.append(cls(**opts))
        except ConfigError as exc:
            raise ConfigError(f"data.augment.{i}.{exc.key or 'name'}: {exc}") from None
    return steps


class AugmentPipeline:
    """The training-batch transform: the listed steps, each on the whole batch, in order.

    With ``mean``/``std`` (the fitted standardization) it takes standardized batches, maps them back
    to image values, augments, and standardizes again — so the loop keeps one tensor per split.
    """

    def __init__(self, items: list, *, seed: int, mean=None, std=None):
        self.steps = [s for s in build_steps(items) if not AUGMENTATIONS.entry(s.name).meta.get("all_splits")]
        self.seed = seed
        self.mean, self.std = mean, std
        self._g = None

    @property
    def generator(self):
        import torch

        if self._g is None:
            self._g = torch.Generator().manual_seed(self.seed * 1_000_003 + 7)
        return self._g

    def augment(self, x):
        """Augment images in [0, 1] (no standardization)."""
        for step in self.steps:
            x = step(x, self.generator)
        return x

    def __call__(self, x):
        import torch

        if not self.steps:
            return x
        if self.mean is None:
            return self.augment(x)
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)
        return (self.augment(x * std + mean) - mean) / std

    def reference(self):
        """The per-image torchvision v2 pipeline doing the same steps (for benchmarks and tests)."""
        from torchvision.transforms import v2

        return v2.Compose([s.reference() for s in self.steps])

    def __repr__(self):
        return f"AugmentPipeline({self.steps})"


def fixed_normalization(items: list) -> tuple[Any, Any] | None:
    """``(mean, std)`` of a ``normalize`` step with explicit values, else ``None``."""
    for s in build_steps(items):
        if isinstance(s, Normalize) and s.mean is not None:
            return s.mean, s.std
    return None


def gallery(ds, rows, items: list, *, seed: int, path, n: int = 8, copies: int = 5):
    """Draw ``n`` training images (one per class first) beside ``copies`` augmented versions of each."""
    import numpy as np
    import torch

    from methodo.report import plots

    rows = np.asarray(rows)
    picked: list[int] = []
    for c in range(max(ds.n_classes, 1)):  # one image of each class first, then the next ones in order
        hit = rows[ds.y[rows] == c] if task_spec(ds.task).has_classes else rows
        if len(hit) and len(picked) < n:
            picked.append(int(hit[0]))
    picked += [int(r) for r in rows if int(r) not in picked][: n - len(picked)]
    x = torch.from_numpy(np.ascontiguousarray(ds.X[picked]))
    pipe = AugmentPipeline(items, seed=seed)
    copies_out = [pipe.augment(x.clone()).numpy() for _ in range(copies)]
    labels = [ds.class_names[ds.y[i]] for i in picked] if ds.class_names else None
    title = "data.augment: " + ", ".join(name if not opts else f"{name} {opts}" for name, opts in parse(items))
    return plots.augmentation_grid(x.numpy(), copies_out, path, labels=labels, title=title)
