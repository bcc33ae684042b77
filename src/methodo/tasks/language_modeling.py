"""Language modeling: the next token of every position. Cross-entropy per token, epoch score perplexity;
the scores of a window are the log-probabilities the model gave its target tokens."""

from __future__ import annotations

from methodo.tasks.base import TASKS, TaskSpec, cross_entropy, exp_capped, no_strata


def _token_nll(out, y, y_std=1.0):
    import torch.nn.functional as F

    return F.cross_entropy(out.transpose(1, 2), y, reduction="sum"), y.numel()


def _target_logprob(out, y):
    return out.log_softmax(-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)


def _baselines(y_train, y_eval, n_classes, seed):
    from methodo.evaluate.baselines import language_baselines

    return language_baselines(y_train, y_eval, n_classes)


def _write_outputs(o) -> None:
    """A sampled continuation of the first test window, and perplexity beside its baselines."""
    from methodo.evaluate.lm import sample_text
    from methodo.report import plots

    o.record.sample = sample_text(o.model, o.data.tensors["test"][0][0], o.ds.vocab, seed=o.cfg.seed)
    plots.perplexity_bars(o.record.metrics, o.record.baselines, o.record.extra_baselines or {},
                          o.rd.figure("perplexity.png"))


SPEC = TaskSpec(
    name="language_modeling", score="perplexity", higher_is_better=False, loss=cross_entropy,
    batch_score=_token_nll, finish=exp_capped, n_outputs=lambda ds: len(ds.vocab), strata=no_strata,
    to_scores=_target_logprob, decide=None, per_row=False,
    scores_need_targets=True, baselines=_baselines, headline=("perplexity", -1), write_outputs=_write_outputs,
    explain="explanations are drawn for classification and regression only (task: language_modeling)",
    help="next token of every position: cross-entropy per token, epoch score perplexity")
TASKS.register(SPEC.name, SPEC, help=SPEC.help)
