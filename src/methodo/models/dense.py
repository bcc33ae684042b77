"""Segmentation models: a class score for every pixel, ``(N, C, H, W)`` → ``(N, n_outputs, H, W)``.

``fcn`` downsamples with conv stages, scores each coarse position with a 1×1 convolution and
upsamples the scores bilinearly back to the input size (Long et al., 2015, in small). ``unet``
adds a decoder that upsamples step by step and concatenates the encoder's features of the same
resolution (skip connections), which keeps the boundaries sharp (Ronneberger et al., 2015).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from methodo.models.zoo import MAX_DEPTH, MODELS, positive_int, rate


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


def _levels(input_shape, wanted: int) -> int:
    # halve while the smallest side stays >= 4 pixels: 32×32 → at most 3 halvings
    return max(1, min(int(wanted), int(math.log2(min(input_shape[1:]))) - 2))


class FCN(nn.Module):
    """Conv stages (each halves the resolution), 1×1 class scores, bilinear upsampling to the input."""

    def __init__(self, cin: int, n_outputs: int, width: int, levels: int, dropout: float):
        super().__init__()
        stages, c = [], cin
        for s in range(levels):
            stages += [_double_conv(c, width * 2**s), nn.MaxPool2d(2)]
            c = width * 2**s
        self.body = nn.Sequential(*stages, _double_conv(c, c), nn.Dropout2d(dropout))
        self.head = nn.Conv2d(c, n_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.head(self.body(x))
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)


class UNet(nn.Module):
    """Encoder (double conv, max-pool) ×levels, a bottleneck, and a decoder that upsamples with a
    transposed convolution and concatenates the encoder features of the same size at each step."""

    def __init__(self, cin: int, n_outputs: int, width: int, levels: int, dropout: float):
        super().__init__()
        chans = [width * 2**s for s in range(levels + 1)]
        self.down = nn.ModuleList()
        c = cin
        for ch in chans[:-1]:
            self.down.append(_double_conv(c, ch))
            c = ch
        self.bottleneck = nn.Sequential(_double_conv(c, chans[-1]), nn.Dropout2d(dropout))
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for ch_hi, ch in zip(chans[:0:-1], chans[-2::-1]):
            self.up.append(nn.ConvTranspose2d(ch_hi, ch, 2, stride=2))
            self.fuse.append(_double_conv(2 * ch, ch))
        self.head = nn.Conv2d(chans[0], n_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips)):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:  # odd sizes: match the skip's size
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = fuse(torch.cat([skip, x], 1))
        return self.head(x)


@MODELS.register("fcn", help="fully convolutional net: conv stages, 1×1 class scores, bilinear upsampling",
                 inputs=("image",), tasks=("segmentation",))
def fcn(*, input_shape, n_outputs, width: int = 16, levels: int = 2, dropout: float = 0.0) -> FCN:
    width, dropout = positive_int(width, "width"), rate(dropout)
    levels = positive_int(levels, "levels", maximum=MAX_DEPTH)
    return FCN(input_shape[0], n_outputs, int(width), _levels(input_shape, levels), dropout)


@MODELS.register("unet", help="U-Net: encoder, decoder with skip connections, per-pixel class scores",
                 inputs=("image",), tasks=("segmentation",))
def unet(*, input_shape, n_outputs, width: int = 16, levels: int = 3, dropout: float = 0.0) -> UNet:
    width, dropout = positive_int(width, "width"), rate(dropout)
    levels = positive_int(levels, "levels", maximum=MAX_DEPTH)
    return UNet(input_shape[0], n_outputs, int(width), _levels(input_shape, levels), dropout)
