"""`methodo evaluate-lm` on a real on-disk Hugging Face model: a tiny randomly initialized GPT-2
with a byte-level BPE tokenizer trained here, saved with save_pretrained (no download)."""

from __future__ import annotations

import json
import math

import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("lm_eval")

from methodo.evaluate.lm import leaderboard_rows, load_hf_causal, sliding_window_nll  # noqa: E402

from conftest import EXAMPLES, cli, cli_inproc  # noqa: E402

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """The tiny GPT-2 of ``examples/tiny_gpt2.py`` (the script the docs use), written once per module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_gpt2", EXAMPLES / "tiny_gpt2.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    path = tmp_path_factory.mktemp("tiny-gpt2")
    script.main(str(path))
    return path


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    from pydoc_data.topics import topics

    p = tmp_path_factory.mktemp("text") / "if.txt"
    p.write_text(topics["if"] + topics["while"])
    return p


def _run(*args, **kw):
    return cli("evaluate-lm", *map(str, args), env=OFFLINE, timeout=600, **kw)


def test_leaderboard_table_for_the_local_tasks(tiny_gpt2, tmp_path):
    out = tmp_path / "board.json"
    res = _run(tiny_gpt2, "--tasks", "methodo_science_mc,methodo_science_mc_letters", "--json", out)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("|")]
    assert lines[0] == "| model | task | metric | score (%) | ± stderr | n |"
    rows = [ln.split("|")[1:-1] for ln in lines[2:]]
    assert [r[1].strip() for r in rows] == ["methodo_science_mc", "methodo_science_mc_letters", "**average**"]
    assert [r[2].strip() for r in rows[:2]] == ["acc_norm", "acc"]  # ARC-style ranks by acc_norm
    board = json.loads(out.read_text())["leaderboard"]
    scores = [t["score"] for t in board["tasks"]]
    assert all(0 <= s <= 100 for s in scores) and all(t["n"] == 20 for t in board["tasks"])
    assert all((s / 5) == pytest.approx(round(s / 5)) for s in scores)  # k/20 questions right, in %
    assert board["average"] == pytest.approx(sum(scores) / len(scores))
    assert f"**{board['average']:.2f}**" in lines[-1]
    assert float(rows[0][3]) == pytest.approx(scores[0], abs=0.005)


def test_leaderboard_rows_pick_the_leaderboard_metric_and_average():
    results = {"arc_challenge": {"acc,none": 0.30, "acc_stderr,none": 0.01, "acc_norm,none": 0.35,
                                 "acc_norm_stderr,none": 0.02, "alias": "arc_challenge"},
               "gsm8k": {"exact_match,strict-match": 0.10, "exact_match_stderr,strict-match": 0.008,
                         "exact_match,flexible-extract": 0.12},
               "winogrande": {"acc,none": 0.60, "acc_stderr,none": 0.013}}
    board = leaderboard_rows(results, ["arc_challenge", "gsm8k", "winogrande"])
    picked = {r["task"]: (r["metric"], r["score"], r["stderr"]) for r in board["tasks"]}
    assert picked["arc_challenge"] == ("acc_norm", pytest.approx(35.0), pytest.approx(2.0))
    assert picked["gsm8k"] == ("exact_match", pytest.approx(10.0), pytest.approx(0.8))
    assert picked["winogrande"][:2] == ("acc", pytest.approx(60.0))
    assert board["average"] == pytest.approx((35 + 10 + 60) / 3)


def test_public_suite_without_its_data_is_a_clear_error(tiny_gpt2):
    res = _run(tiny_gpt2, "--tasks", "arc_easy", "--limit", "2")
    assert res.returncode == 2, res.stderr[-2000:]
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith("error: --tasks arc_easy: its data set is not available here")
    assert "'allenai/ai2_arc', 'ARC-Easy'" in err and "HF_DATASETS_OFFLINE=1" in err and "~/.cache/huggingface" in err
    assert "Traceback" not in res.stderr


def test_bad_inputs_exit_2_with_one_line(tiny_gpt2, tmp_path, capsys):
    cases = [((tiny_gpt2, "--tasks", "arc_chalenge"), "unknown lm-eval task 'arc_chalenge'; did you mean 'arc_challenge'"),
             ((tmp_path, "--tasks", "methodo_science_mc"), "not a Hugging Face model folder (no config.json)"),
             ((tiny_gpt2,), "give --tasks TASK ... and/or --perplexity FILE"),
             ((tiny_gpt2, "--perplexity", tmp_path / "missing.txt"), "file not found")]
    for args, needle in cases:  # in process: each is refused before any model or data set loads
        code, _, err = cli_inproc(capsys, "evaluate-lm", *map(str, args))
        assert code == 2, (args, err[-1000:])
        assert needle in err and "Traceback" not in err and err.strip().startswith("error: ")


def test_sliding_window_scores_every_token_once_with_the_right_context(tiny_gpt2):
    import torch

    model, _ = load_hf_causal(tiny_gpt2)
    ids = torch.randint(0, 300, (23,), generator=torch.Generator().manual_seed(0))
    # one window over everything: the model's own loss (mean NLL of tokens 1..n-1)
    nll, scored, windows = sliding_window_nll(model, ids, window=64, stride=32)
    with torch.no_grad():
        hf = model(ids[None], labels=ids[None]).loss.item()
    assert scored == 22 and windows == 1 and nll / scored == pytest.approx(hf, rel=1e-5)
    # stride 1: token t is scored from exactly the previous window-1 tokens (brute force)
    w = 5
    nll, scored, _ = sliding_window_nll(model, ids, window=w, stride=1)
    ref = 0.0
    with torch.no_grad():
        for t in range(1, len(ids)):
            ctx = ids[max(0, t - (w - 1)):t + 1]
            ref -= model(ctx[None]).logits[0, -2].log_softmax(-1)[ids[t]].item()
    assert scored == 22 and nll == pytest.approx(ref, rel=1e-5)


def test_perplexity_command_overlapping_windows_differ_from_chunks(tiny_gpt2, text_file, tmp_path):
    from methodo.errors import BadInput
    from methodo.evaluate.lm import text_perplexity

    out = tmp_path / "p.json"
    r = _run(tiny_gpt2, "--perplexity", text_file, "--window", "64", "--stride", "16", "--json", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "perplexity of" in r.stdout and "windows of 64 tokens, stride 16" in r.stdout
    sliding = json.loads(out.read_text())["perplexity"]
    model, tok = load_hf_causal(tiny_gpt2)
    text = text_file.read_text()
    assert text_perplexity(model, tok, text, window=64, stride=16)["nll"] == pytest.approx(sliding["nll"], rel=1e-5)
    chunks = text_perplexity(model, tok, text, window=64, stride=64)
    n = sliding["tokens"]
    assert sliding["scored_tokens"] == n - 1  # every token but the first
    # each chunk's first token has no context (nor a last chunk of one token)
    assert n - chunks["windows"] - 1 <= chunks["scored_tokens"] <= n - chunks["windows"] < n - 1
    assert sliding["perplexity"] != pytest.approx(chunks["perplexity"], rel=1e-4)
    for p in (sliding, chunks):
        assert p["perplexity"] == pytest.approx(math.exp(p["nll"] / p["scored_tokens"]))
        assert p["bits_per_token"] == pytest.approx(math.log2(p["perplexity"]))
    with pytest.raises(BadInput, match="--window 65: the model reads at most 64 positions"):
        text_perplexity(model, tok, text, window=65, stride=10)
