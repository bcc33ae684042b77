"""Sequence models for time series: a window ``(N, T, F)`` of past values → ``n_outputs`` next values.

``input_shape`` is ``(T, F)``: the window's time steps and variables. Both models read the window in
time order and predict from its end (``body(x)``: the features at the last step; ``head``: a linear
map to the horizon), so transfer strategies can swap the head as for the other models.

``residual: true`` (the default) makes the network level-free: it reads each window minus the window's
last values and its outputs are added to the last value of variable 0 — the target series, which
methodo's series datasets put first and scale like the target. The network predicts the change from
the last value, so a series that leaves its training range (a trend) needs no extrapolation of
levels, and a network that outputs zeros is the last-value forecast.

- ``recurrent``: the course's recurrent update, Y_t = f(W_x X_t + W_y Y_{t-1} + b), with a plain
  ``rnn`` cell (f = tanh), an ``lstm`` (gated, with a cell state) or a ``gru`` cell (gated).
- ``tcn``: a temporal convolutional network (Bai et al. 2018): residual blocks of dilated causal 1-D
  convolutions, dilation doubling per block, so the last step sees ``1 + 2(k-1)(2^blocks - 1)`` steps back.
"""

from __future__ import annotations

import torch
from torch import nn

from methodo.errors import ConfigError
from methodo.models.zoo import MAX_DEPTH, MODELS, positive_int, rate

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class _LastStep(nn.Module):
    """A recurrent net's output at the last time step."""

    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return out[:, -1]


class _Forecaster(nn.Module):
    residual = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.residual:
            return self.head(self.body(x))
        last = x[:, -1:, :]  # each window is read relative to its last values: no level to extrapolate
        return self.head(self.body(x - last)) + last[:, 0, :1]


class Recurrent(_Forecaster):
    def __init__(self, features: int, horizon: int, cell: str, hidden: int, layers: int, dropout: float,
                 residual: bool = True):
        super().__init__()
        self.residual = residual
        rnn = CELLS[cell](features, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.body = nn.Sequential(_LastStep(rnn), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, horizon)


class CausalBlock(nn.Module):
    """Two dilated causal convolutions (left padding only: step t sees steps <= t), ReLU, dropout, and a
    residual connection (a 1×1 convolution when the channel count changes)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, dilation=dilation)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, dilation=dilation)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, T)
        h = self.drop(torch.relu(self.conv1(nn.functional.pad(x, (self.pad, 0)))))
        h = self.drop(torch.relu(self.conv2(nn.functional.pad(h, (self.pad, 0)))))
        return torch.relu(h + self.skip(x))


class TCNBody(nn.Module):
    def __init__(self, features: int, channels: int, blocks: int, kernel: int, dropout: float):
        super().__init__()
        self.blocks = nn.Sequential(*[CausalBlock(features if i == 0 else channels, channels, kernel, 2 ** i, dropout)
                                      for i in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, F) → features at the last step (N, C)
        return self.blocks(x.transpose(1, 2))[:, :, -1]


class TCN(_Forecaster):
    def __init__(self, features: int, horizon: int, channels: int, blocks: int, kernel: int, dropout: float,
                 residual: bool = True):
        super().__init__()
        self.residual = residual
        self.body = TCNBody(features, channels, blocks, kernel, dropout)
        self.head = nn.Linear(channels, horizon)


def _flag(value, key: str = "residual") -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} is true or false (got {value!r})", key=key)
    return value


def _series_shape(input_shape) -> tuple[int, int]:
    if len(input_shape) != 2:
        raise ConfigError(f"a sequence model reads windows (time steps, variables); got input shape {tuple(input_shape)}")
    return int(input_shape[0]), int(input_shape[1])


@MODELS.register("recurrent", help="recurrent net over a window (cell: rnn, lstm or gru), last step → the horizon",
                 inputs=("series",), tasks=("forecasting",))
def recurrent(*, input_shape, n_outputs, cell: str = "lstm", hidden: int = 64, layers: int = 1,
              dropout: float = 0.0, residual: bool = True) -> Recurrent:
    if cell not in CELLS:
        raise ConfigError(f"cell {cell!r} is not a recurrent cell; choose rnn, lstm or gru", key="cell")
    _, features = _series_shape(input_shape)
    hidden, layers = positive_int(hidden, "hidden"), positive_int(layers, "layers", maximum=MAX_DEPTH)
    return Recurrent(features, n_outputs, cell, hidden, layers, rate(dropout), _flag(residual))


@MODELS.register("tcn", help="temporal CNN: residual blocks of dilated causal 1-D convolutions, last step → the horizon",
                 inputs=("series",), tasks=("forecasting",))
def tcn(*, input_shape, n_outputs, channels: int = 32, blocks: int = 3, kernel: int = 3,
        dropout: float = 0.0, residual: bool = True) -> TCN:
    _, features = _series_shape(input_shape)
    channels, blocks = positive_int(channels, "channels"), positive_int(blocks, "blocks", maximum=16)
    kernel = positive_int(kernel, "kernel", minimum=2, maximum=64)
    return TCN(features, n_outputs, channels, blocks, kernel, rate(dropout), _flag(residual))
