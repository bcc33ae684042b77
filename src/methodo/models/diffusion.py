"""Diffusion: a small DDPM (Ho et al., 2020) — forward noising, a U-Net that predicts the noise, and
ancestral reverse sampling x_T → x_0 as a Markov chain.

The math, with ᾱ_t = ∏_{s≤t} (1 − β_s):

1. Schedule: β_1..β_T linear (Ho et al.; scaled by 1000/T so a short chain still ends near pure noise)
   or cosine (Nichol & Dhariwal, 2021: ᾱ_t = cos²((t/T + s)/(1 + s) · π/2), β clipped at 0.999).
2. Forward noising, in one jump: q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I), i.e.
   x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε with ε ~ N(0, I).
3. Training: t uniform in 1..T, the network ε_θ(x_t, t) predicts ε; the loss is ‖ε − ε_θ‖² (the
   "simple" loss). The model's ``forward(x0)`` draws t and ε and returns both the prediction and the
   drawn noise, ``(N, 2, C, H, W)``, so the loop's loss is the task's MSE of the two, with no extra seam.
   Training draws come from torch's global CPU generator (seeded by the run's seed and saved in the
   checkpoint's state: a resumed run draws the same); evaluation draws from a fixed generator, so the
   validation loss of every epoch is measured on the same t and ε.
4. Sampling: x_T ~ N(0, I), then for t = T..1
   x_{t−1} = 1/√α_t · (x_t − β_t/√(1 − ᾱ_t) · ε_θ(x_t, t)) + σ_t z,
   σ_t² = β_t, z ~ N(0, I) (no noise at t = 1).

Samples are in the units the model was trained on (the data's scaling); :func:`sample_images`
maps them back to pixel values in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from methodo.errors import ConfigError
from methodo.models.zoo import MAX_DEPTH, MODELS, positive_int

SCHEDULES = ("linear", "cosine")
EVAL_SEED = 20_200_619  # the fixed t and ε of evaluation (the DDPM paper's arXiv date)


def beta_schedule(name: str, steps: int) -> torch.Tensor:
    """β_1..β_T (float64) of the ``linear`` or ``cosine`` schedule.

    >>> b = beta_schedule("linear", 1000); float(b[0]), round(float(b[-1]), 4)
    (0.0001, 0.02)
    >>> bool((beta_schedule("cosine", 50) < 1).all())
    True
    """
    if name == "linear":
        scale = 1000.0 / steps  # Nichol & Dhariwal's scaling: the same end point for any T
        return torch.linspace(scale * 1e-4, min(scale * 0.02, 0.999), steps, dtype=torch.float64)
    if name == "cosine":
        s = 0.008
        t = torch.linspace(0, steps, steps + 1, dtype=torch.float64) / steps
        abar = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    raise ConfigError(f"schedule {name!r} is not a noise schedule; choose {' or '.join(SCHEDULES)}", key="schedule")


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer steps (Vaswani et al.'s positions): ``(N,)`` → ``(N, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half, 1))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], 1)
    return F.pad(emb, (0, dim % 2))


class _Block(nn.Module):
    """Two 3×3 convolutions (group norm, SiLU); the step's embedding is added between them; residual."""

    def __init__(self, cin: int, cout: int, tdim: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, padding=1), nn.Conv2d(cout, cout, 3, padding=1)
        self.norm1, self.norm2 = nn.GroupNorm(1, cout), nn.GroupNorm(1, cout)
        self.time = nn.Linear(tdim, cout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        h = h + self.time(temb)[:, :, None, None]
        h = F.silu(self.norm2(self.conv2(h)))
        return h + self.skip(x)


class Denoiser(nn.Module):
    """U-Net ε_θ(x_t, t): blocks and 2× average pooling down, a middle block, nearest upsampling with the
    encoder's features of the same size concatenated (skip connections) on the way up."""

    def __init__(self, channels: int, width: int, levels: int):
        super().__init__()
        self.tdim = 4 * width
        self.time = nn.Sequential(nn.Linear(width, self.tdim), nn.SiLU(), nn.Linear(self.tdim, self.tdim))
        self.width = width
        chans = [width * min(2**s, 4) for s in range(levels + 1)]
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.down = nn.ModuleList()
        c = width
        for ch in chans[:-1]:
            self.down.append(_Block(c, ch, self.tdim))
            c = ch
        self.mid = _Block(c, chans[-1], self.tdim)
        self.up = nn.ModuleList()
        c = chans[-1]
        for ch in reversed(chans[:-1]):
            self.up.append(_Block(c + ch, ch, self.tdim))
            c = ch
        self.out = nn.Conv2d(c, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time(timestep_embedding(t, self.width))
        h, skips = self.inp(x), []
        for block in self.down:
            h = block(h, temb)
            skips.append(h)
            h = F.avg_pool2d(h, 2)
        h = self.mid(h, temb)
        for block, skip in zip(self.up, reversed(skips)):
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], 1), temb)
        return self.out(h)


class DDPM(nn.Module):
    """The denoiser with its noise schedule. ``forward(x0)`` → ``(N, 2, C, H, W)``: [predicted ε, drawn ε]."""

    def __init__(self, channels: int, width: int, levels: int, steps: int, schedule: str):
        super().__init__()
        self.net = Denoiser(channels, width, levels)
        self.steps, self.schedule = steps, schedule
        betas = beta_schedule(schedule, steps)
        abar = torch.cumprod(1 - betas, 0)
        # derived from the options, not weights: not saved in checkpoints (persistent=False)
        for name, v in {"betas": betas, "alphas": 1 - betas, "abar": abar}.items():
            self.register_buffer(name, v.float(), persistent=False)

    def noise(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t drawn from q(x_t | x_0) in one jump (step 2); ``t`` is 0-based (0 ↔ t = 1)."""
        a = self.abar[t].view(-1, *([1] * (x0.ndim - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * eps

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        g = None if self.training else torch.Generator().manual_seed(EVAL_SEED)
        # drawn on the CPU (the generator whose state the checkpoints keep), then moved
        t = torch.randint(0, self.steps, (len(x0),), generator=g).to(x0.device)
        eps = torch.randn(x0.shape, generator=g).to(x0.device, x0.dtype)
        return torch.stack([self.net(self.noise(x0, t, eps), t), eps], 1)

    @torch.no_grad()
    def sample(self, n: int, shape: tuple[int, ...], *, generator: torch.Generator,
               keep: int = 0) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
        """``n`` samples by ancestral sampling (step 4), and ``keep`` evenly spaced states of the chain
        ``[(t, x_t), ...]`` from x_T to x_0 (t = 0: the sample). Noise from ``generator`` (CPU)."""
        was = self.training
        self.eval()
        dev = self.betas.device
        x = torch.randn((n, *shape), generator=generator).to(dev)
        marks = set(torch.linspace(self.steps, 0, keep).round().long().tolist()) if keep else set()
        chain = [(self.steps, x.cpu())] if self.steps in marks else []
        for i in reversed(range(self.steps)):
            t = torch.full((n,), i, device=dev, dtype=torch.long)
            eps = self.net(x, t)
            b, a, ab = self.betas[i], self.alphas[i], self.abar[i]
            x = (x - b / (1 - ab).sqrt() * eps) / a.sqrt()
            if i > 0:
                x = x + b.sqrt() * torch.randn((n, *shape), generator=generator).to(dev)
            if i in marks:
                chain.append((i, x.cpu()))
        self.train(was)
        return x.cpu(), chain


def _levels(input_shape, wanted: int) -> int:
    # halve while the smallest side stays >= 2 pixels: 8×8 → at most 2 halvings
    return max(1, min(int(wanted), int(math.log2(max(min(input_shape[1:]), 2))) - 1))


@MODELS.register("ddpm", help="denoising diffusion (DDPM): U-Net noise predictor with a sinusoidal step embedding, "
                 "linear or cosine noise schedule, ancestral sampling", inputs=("image",), tasks=("generation",))
def ddpm(*, input_shape, n_outputs, width: int = 32, levels: int = 2, steps: int = 200,
         schedule: str = "linear") -> DDPM:
    """``n_outputs`` is the channels of the predicted noise: the input's (the task says so)."""
    width = positive_int(width, "width")
    levels = positive_int(levels, "levels", maximum=MAX_DEPTH)
    steps = positive_int(steps, "steps", maximum=100_000)
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule {schedule!r} is not a noise schedule; choose {' or '.join(SCHEDULES)}",
                          key="schedule")
    if int(n_outputs) != int(input_shape[0]):
        raise ConfigError(f"ddpm predicts noise of the input's {input_shape[0]} channel(s), not {n_outputs} outputs",
                          key=None)
    return DDPM(int(input_shape[0]), int(width), _levels(input_shape, levels), int(steps), schedule)


def to_pixels(x: torch.Tensor, mean=None, std=None) -> torch.Tensor:
    """Samples in the model's units → pixel values in [0, 1] (undo the data's per-channel scaling)."""
    if mean is not None:
        x = x * torch.as_tensor(std, dtype=x.dtype) + torch.as_tensor(mean, dtype=x.dtype)
    return x.clamp(0.0, 1.0)


def sample_images(model: DDPM, n: int, shape: tuple[int, ...], *, seed: int, mean=None, std=None,
                  keep: int = 0) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
    """``n`` images in [0, 1] and the chain's kept states (also in [0, 1]), reproducible from ``seed``.

    >>> import torch
    >>> m = ddpm(input_shape=(1, 8, 8), n_outputs=1, width=8, steps=10)
    >>> x, chain = sample_images(m, 3, (1, 8, 8), seed=0, keep=4)
    >>> tuple(x.shape), float(x.min()) >= 0.0, float(x.max()) <= 1.0, [t for t, _ in chain]
    ((3, 1, 8, 8), True, True, [10, 7, 3, 0])
    """
    g = torch.Generator().manual_seed(int(seed))
    x, chain = model.sample(n, tuple(shape), generator=g, keep=keep)
    return to_pixels(x, mean, std), [(t, to_pixels(c, mean, std)) for t, c in chain]
