"""Language-model evaluation: sampling from methodo's own models; sliding-window perplexity and
lm-evaluation-harness benchmarks for Hugging Face causal models (``methodo evaluate-lm``)."""

from __future__ import annotations

import torch


@torch.no_grad()
def sample_text(model, context: torch.Tensor, vocab: list[str], *, seed: int, prompt_len: int = 64,
                n: int = 200, temperature: float = 0.8) -> dict[str, str]:
    """Continue the first ``prompt_len`` tokens of ``context`` by ``n`` sampled tokens.

    Sampling draws from ``softmax(logits / temperature)`` with a generator seeded by ``seed``, so
    the sample is reproducible. Returns ``{"prompt", "continuation", "temperature"}``.
    """
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    prompt_len = min(prompt_len, len(context))
    ids = context[:prompt_len].tolist()
    max_len = getattr(model, "max_len", None) or len(context)
    for _ in range(n):
        window = torch.tensor(ids[-max_len:], device=device)[None]
        logits = model(window)[0, -1].float().cpu() / temperature
        ids.append(int(torch.multinomial(logits.softmax(-1), 1, generator=gen)))
    text = lambda xs: "".join(vocab[i] for i in xs)
    return {"prompt": text(ids[:prompt_len]), "continuation": text(ids[prompt_len:]), "temperature": temperature}
