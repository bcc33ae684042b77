"""Language models: token ids ``(N, T)`` → next-token logits ``(N, T, vocab)``, causal (position t
sees tokens 0..t only). ``input_shape`` is ``(T,)``, the training window; ``n_outputs`` the vocabulary.
"""

from __future__ import annotations

import torch
from torch import nn

from methodo.models.zoo import MAX_DEPTH, MODELS, positive_int, rate


class GRULanguageModel(nn.Module):
    """Embedding → GRU layers → dropout → linear scores over the vocabulary."""

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = nn.GRU(embed, hidden, num_layers=layers, batch_first=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab)
        self.max_len = None  # a recurrent net reads any length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.embed(x))
        return self.head(self.drop(h))


class TinyTransformer(nn.Module):
    """Token + learned position embeddings, pre-norm causal self-attention blocks, linear head."""

    def __init__(self, vocab: int, max_len: int, d_model: int, heads: int, layers: int, dropout: float):
        super().__init__()
        self.max_len = max_len
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        block = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequence of {t} tokens is longer than the model's {self.max_len} positions")
        h = self.tok(x) + self.pos(torch.arange(t, device=x.device))
        causal = nn.Transformer.generate_square_subsequent_mask(t, device=x.device)
        return self.head(self.norm(self.blocks(h, mask=causal, is_causal=True)))


@MODELS.register("gru", help="GRU language model: embedding, GRU layers, linear next-token scores",
                 inputs=("text",), tasks=("language_modeling",))
def gru(*, input_shape, n_outputs, embed: int = 64, hidden: int = 256, layers: int = 1,
        dropout: float = 0.1) -> GRULanguageModel:
    embed, hidden = positive_int(embed, "embed"), positive_int(hidden, "hidden")
    layers = positive_int(layers, "layers", maximum=MAX_DEPTH)
    return GRULanguageModel(n_outputs, embed, hidden, layers, rate(dropout))


@MODELS.register("transformer", help="tiny causal transformer language model (pre-norm, learned positions)",
                 inputs=("text",), tasks=("language_modeling",))
def transformer(*, input_shape, n_outputs, d_model: int = 128, heads: int = 4, layers: int = 2,
                dropout: float = 0.1) -> TinyTransformer:
    d_model, heads = positive_int(d_model, "d_model"), positive_int(heads, "heads")
    layers = positive_int(layers, "layers", maximum=MAX_DEPTH)
    if d_model % heads:
        from methodo.errors import ConfigError

        raise ConfigError(f"d_model={d_model} must be a multiple of heads={heads}", key="heads")
    return TinyTransformer(n_outputs, int(input_shape[0]), d_model, heads, layers, rate(dropout))
