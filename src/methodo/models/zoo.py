"""Small models sized from the data. Each is ``body`` (features) then ``head`` (outputs), so the
penultimate embedding is ``model.body(x)`` and transfer strategies can swap the head.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from methodo.errors import ConfigError, short
from methodo.registry import Registry

MODELS = Registry("model")


# Argument checks shared by the models: each raises ConfigError(key=option) with the allowed range,
# so `model.dropout=5` fails at config time (the config loader builds the model once on a dummy input).


MAX_WIDTH = 2**20  # units or channels of one layer
MAX_DEPTH = 64  # blocks, layers or levels: the model is built in a Python loop over them


def positive_int(value, key: str, *, minimum: int = 1, maximum: int = MAX_WIDTH) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ConfigError(f"{key} must be an integer in [{minimum}, {maximum}] (got {short(value)})", key=key)
    return value


def rate(value, key: str = "dropout") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{key} is a probability in [0, 1) (got {short(value)})", key=key)
    return float(value)


def layer_widths(value, key: str = "hidden") -> list[int]:
    """A list of positive layer widths, e.g. [256, 128] ([] for no hidden layer)."""
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple)) or len(value) > MAX_DEPTH or any(
            isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= MAX_WIDTH for h in value):
        raise ConfigError(f"{key} is a list of at most {MAX_DEPTH} layer widths, each an integer in [1, {MAX_WIDTH}], "
                          f"e.g. [256, 128] (got {short(value)})", key=key)
    return list(value)


class Net(nn.Module):
    """``head(body(x))``; ``embed(x)`` returns the penultimate-layer features."""

    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body = body
        self.head = head

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@MODELS.register("mlp", help="multi-layer perceptron (ReLU, dropout); flattens image inputs",
                 inputs=("image", "tabular"))
def mlp(*, input_shape, n_outputs, hidden: tuple = (256, 128), dropout: float = 0.2) -> Net:
    hidden, dropout = layer_widths(hidden), rate(dropout)
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU(), nn.Dropout(dropout)]
        width = int(h)
    return Net(nn.Sequential(*layers), nn.Linear(width, n_outputs))


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _n_stages(input_shape) -> int:
    # Halve the resolution while it stays >= 2 pixels, at most 3 times: 8×8 → 2 stages, 28/32 → 3.
    return max(1, min(3, int(math.log2(min(input_shape[1:]))) - 1))


@MODELS.register("cnn", help="small conv net: [conv-BN-ReLU ×2, max-pool] stages, dropout, linear head",
                 inputs=("image",))
def cnn(*, input_shape, n_outputs, width: int = 32, dropout: float = 0.25) -> Net:
    width, dropout = positive_int(width, "width"), rate(dropout)
    cin, layers = input_shape[0], []
    for s in range(_n_stages(input_shape)):
        cout = width * 2**s
        layers += [_conv_bn(cin, cout), _conv_bn(cout, cout), nn.MaxPool2d(2)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout)]
    return Net(nn.Sequential(*layers), nn.Linear(cin, n_outputs))


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity (or 1×1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv = nn.Sequential(
            _conv_bn(cin, cout, stride), nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        )
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.conv(x) + self.shortcut(x))


@MODELS.register("resnet", help="small residual net: stem + BasicBlock stages, global pooling",
                 inputs=("image",))
def resnet(*, input_shape, n_outputs, width: int = 32, blocks: int = 2, dropout: float = 0.0) -> Net:
    width, dropout = positive_int(width, "width"), rate(dropout)
    blocks = positive_int(blocks, "blocks", maximum=MAX_DEPTH)
    layers: list[nn.Module] = [_conv_bn(input_shape[0], width)]
    cin = width
    for s in range(_n_stages(input_shape)):
        cout = width * 2**s
        for b in range(int(blocks)):
            layers.append(BasicBlock(cin, cout, stride=2 if (b == 0 and s > 0) else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout)]
    return Net(nn.Sequential(*layers), nn.Linear(cin, n_outputs))
