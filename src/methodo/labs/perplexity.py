"""Lab `perplexity`: the course's formula, PPL = exp(−(1/N) Σ log p(yᵢ)), computed by hand on a tiny sequence and by
methodo's metrics (``perplexity``, ``bits_per_token`` and torchmetrics' perplexity from logits): the same
number. Then what it does and does not tell: a uniform guess over V tokens scores exactly V (so perplexities
over different vocabularies are not comparable), and two models with the same perplexity can have
opposite top-1 accuracy."""

from __future__ import annotations

import math

import numpy as np

from methodo.labs import Lab, LabContext, step

VOCAB = ["the", "cat", "sat", "on", "mat"]
TOKENS = 8


@step
def tiny_example(ctx: LabContext):
    """**A tiny example.** A vocabulary of 5 words and a sequence of 8 target tokens (drawn by the seed); a
    "model" gives each position logits (drawn by the seed, the target's logit raised by 1 so it is a
    half-decent model). By hand: the probability of each target is its softmax, and the perplexity is the
    exponential of the mean negative log-probability — the number of equally likely words the model
    hesitates between."""
    import torch

    g = torch.Generator().manual_seed(ctx.seed)
    target = torch.randint(len(VOCAB), (1, TOKENS), generator=g)
    logits = torch.randn(1, TOKENS, len(VOCAB), generator=g, dtype=torch.float64)
    logits[0, torch.arange(TOKENS), target[0]] += 1.0
    ctx.state.update(target=target, logits=logits)
    # by hand, in plain Python floats
    probs = []
    for t in range(TOKENS):
        row = [math.exp(v) for v in logits[0, t].tolist()]
        probs.append(row[int(target[0, t])] / sum(row))
    nll = -sum(math.log(p) for p in probs) / TOKENS
    return ctx.record(sequence=[VOCAB[i] for i in target[0].tolist()], p_target=probs, mean_nll=nll,
                      perplexity_by_hand=math.exp(nll), bits_per_token_by_hand=nll / math.log(2))


@step
def with_methodo(ctx: LabContext):
    """**The same with methodo.** `compute_metrics("language_modeling", ...)` takes the log-probability the model
    gave each target token (what methodo's language models produce) and returns `perplexity` and
    `bits_per_token`; `perplexity_from_logits` is torchmetrics' perplexity, from the raw logits."""
    import torch

    from methodo.evaluate.metrics import compute_metrics, perplexity_from_logits

    logits, target = ctx.state["logits"], ctx.state["target"]
    logp = torch.log_softmax(logits, -1).gather(-1, target[..., None])[..., 0]
    m = compute_metrics("language_modeling", logp, target, len(VOCAB), names=["perplexity", "bits_per_token"])
    return ctx.record(perplexity_methodo=m["perplexity"], bits_per_token_methodo=m["bits_per_token"],
                      perplexity_torchmetrics=perplexity_from_logits(logits.float(), target))


@step
def what_it_tells(ctx: LabContext):
    """**What perplexity does and does not tell.** (1) A model that knows nothing — uniform over the vocabulary
    — has perplexity exactly the vocabulary size: 5 here, 50 000 for a word-piece model, so perplexities of
    models with different vocabularies or tokenizations cannot be compared. (2) Perplexity only looks at the
    probability of the right token, not at which token wins: model A gives the right word 0.4 and spreads the
    rest (0.15 each): it is always right at top-1. Model B also gives the right word 0.4 but another one 0.45:
    it is never right. Same perplexity, opposite accuracy."""
    import torch

    from methodo.evaluate.metrics import compute_metrics

    target = ctx.state["target"]
    V = len(VOCAB)
    out = {}
    for v in (V, 10 * V):
        logp = torch.full(target.shape, -math.log(v), dtype=torch.float64)
        out[f"uniform_over_{v}"] = compute_metrics("language_modeling", logp, target, v, names=["perplexity"])["perplexity"]
    models = {}
    for name, other in (("A", 0.15), ("B", 0.45)):
        p = torch.full((TOKENS, V), (1 - 0.4 - other) / (V - 2) if name == "B" else other, dtype=torch.float64)
        t = target[0]
        p[torch.arange(TOKENS), t] = 0.4
        if name == "B":
            p[torch.arange(TOKENS), (t + 1) % V] = other  # a wrong word gets more than the right one
        logp = torch.log(p.gather(1, t[:, None])[:, 0])[None]
        ppl = compute_metrics("language_modeling", logp, target, V, names=["perplexity"])["perplexity"]
        acc = float((p.argmax(1) == t).double().mean())
        models[name] = {"perplexity": ppl, "top1_accuracy": acc}
    return ctx.record(uniform=out, same_perplexity=models)


@step
def plot(ctx: LabContext):
    """**Figure.** Left: the probability of each target token in the tiny example, and 1/PPL, their geometric
    mean. Right: models A and B, same perplexity, opposite accuracy."""
    import matplotlib.pyplot as plt

    n = ctx.numbers
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.bar(range(TOKENS), n["p_target"], color="#4477aa")
    a.axhline(1 / n["perplexity_methodo"], c="k", ls="--", lw=1,
              label=f"1/PPL = {1 / n['perplexity_methodo']:.3f} (PPL {n['perplexity_methodo']:.3f})")
    a.set_xticks(range(TOKENS), n["sequence"], fontsize=8)
    a.set_ylabel("p(target)")
    a.set_ylim(0, 1)
    a.legend(fontsize=8)
    a.set_title("tiny example")
    m = n["same_perplexity"]
    x = np.arange(2)
    b.bar(x - 0.2, [m["A"]["perplexity"], m["B"]["perplexity"]], 0.4, label="perplexity", color="#cc6677")
    b2 = b.twinx()
    b2.bar(x + 0.2, [m["A"]["top1_accuracy"], m["B"]["top1_accuracy"]], 0.4, label="top-1 accuracy", color="#117733")
    b2.set_ylim(0, 1.05)
    b.set_xticks(x, ["model A", "model B"])
    b.set_ylabel("perplexity")
    b2.set_ylabel("top-1 accuracy")
    b.set_title("same perplexity, opposite accuracy")
    fig.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "perplexity")


def conclude(ctx: LabContext):
    n = ctx.numbers
    hand, m, tm = n["perplexity_by_hand"], n["perplexity_methodo"], n["perplexity_torchmetrics"]
    s = n["same_perplexity"]
    checks = {
        "methodo's perplexity equals the hand formula": abs(m - hand) <= 1e-9 * hand,
        "bits per token equal": abs(n["bits_per_token_methodo"] - n["bits_per_token_by_hand"]) <= 1e-9,
        "torchmetrics' perplexity from logits agrees (float32)": abs(tm - hand) <= 1e-5 * hand,
        "a uniform guess scores the vocabulary size": all(abs(v - int(k.rsplit("_", 1)[1])) < 1e-9
                                                          for k, v in n["uniform"].items()),
        "equal perplexity, different accuracy": abs(s["A"]["perplexity"] - s["B"]["perplexity"]) < 1e-9
        and s["A"]["top1_accuracy"] != s["B"]["top1_accuracy"],
    }
    sentence = (f"By hand the tiny example's perplexity is {hand:.6f}, methodo's metric gives {m:.6f} and torchmetrics "
                f"{tm:.6f}; a uniform guess scores the vocabulary size ({n['uniform']['uniform_over_5']:g} and "
                f"{n['uniform']['uniform_over_50']:g}), and models A and B share perplexity "
                f"{s['A']['perplexity']:.3f} with top-1 accuracy {s['A']['top1_accuracy']:.0f} and "
                f"{s['B']['top1_accuracy']:.0f}.")
    return sentence, checks


LAB = Lab("perplexity", "Perplexity: the formula, and what it does not tell",
          "Perplexity computed by hand equals methodo's metric; it is the vocabulary size for a uniform guess (so "
          "it compares models on one vocabulary only), and it says nothing about which token wins.",
          (tiny_example, with_methodo, what_it_tells, plot), conclude,
          intro="The course's evaluation of language models: perplexity is the exponential of the mean negative "
                "log-likelihood per token.")
