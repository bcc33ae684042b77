"""Language modeling: the real-text corpus, windows and the document split, perplexity against
torchmetrics, the unigram baseline, causal models, and a tiny end-to-end `methodo run`."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from methodo.config import validate
from methodo.data import load_dataset, prepare
from methodo.data.text import UNK, VOCAB, decode, encode, python_doc_topics, sklearn_dataset_descriptions, windows
from methodo.evaluate import METRICS, compute_metrics
from methodo.evaluate.baselines import baseline_metrics
from methodo.evaluate.metrics import perplexity_from_logits
from methodo.models import MODELS, build_model, model_tasks

from conftest import EXAMPLES, cli, cli_inproc

LM_MODELS = [n for n in MODELS.names() if "language_modeling" in model_tasks(n)]
TINY = ["data.options.seq_len=32", "data.options.max_chars=20000", "model.hidden=32", "model.embed=16",
        "train.epochs=2", "evaluate.bootstrap=20", "track.mlflow=false", "train.progress=false", "train.threads=1"]


def test_the_corpus_is_real_text_shipped_with_python_and_scikit_learn():
    topics = python_doc_topics()
    assert len(topics) > 50 and sum(map(len, topics.values())) > 300_000
    assert "The \"if\" statement" in topics["if"]
    ood = sklearn_dataset_descriptions()
    assert "iris.rst" in ood and "Fisher" in ood["iris.rst"]
    ids = encode(topics["if"])
    assert (ids == UNK).mean() < 0.01  # the fixed ASCII vocabulary covers the docs


def test_windows_predict_the_next_character():
    ids = encode("abcdefghij")
    x, y = windows(ids, 3)
    assert x.shape == y.shape == (3, 3)
    assert decode(x[0]) == "abc" and decode(y[0]) == "bcd"
    assert np.array_equal(x[:, 1:], y[:, :-1])
    assert decode(x.ravel()) == "abcdefghi"  # non-overlapping, every target once


def test_split_holds_out_whole_topics_and_ood_stays_aside():
    cfg = validate({"data": {"source": "python_docs", "options": {"seq_len": 32, "max_chars": 100000},
                             "split": {"method": "random", "val": 0.1, "test": 0.1}},
                    "model": {"name": "gru"}, "task": "language_modeling"})
    ds = load_dataset(cfg.data)
    data = prepare(ds, cfg.data, seed=0)
    topics = {s: set(ds.groups[ix]) for s, ix in data.indices.items()}
    assert not (topics["train"] & topics["test"]) and not (topics["train"] & topics["val"])
    assert not (topics["val"] & topics["test"])
    n = len(ds.groups)
    assert abs(len(data.indices["test"]) / n - 0.1) < 0.03 and abs(len(data.indices["val"]) / n - 0.1) < 0.03
    X, y = data.tensors["ood"]
    assert X.dtype == torch.int64 and X.shape[1] == 32 and len(X) > 10  # token ids, not scaled floats
    assert torch.equal(data.tensors["train"][0], torch.from_numpy(ds.X[data.indices["train"]]))
    assert data.n_outputs == len(VOCAB) == 97


def test_perplexity_metrics_against_torchmetrics_and_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11) * 2
    target = torch.randint(0, 11, (3, 7))
    logp = logits.log_softmax(-1).gather(-1, target[..., None]).squeeze(-1)
    m = compute_metrics("language_modeling", logp, target, 11)
    assert m["perplexity"] == pytest.approx(perplexity_from_logits(logits, target), rel=1e-5)
    assert m["bits_per_token"] == pytest.approx(math.log2(m["perplexity"]), rel=1e-6)
    # a uniform guess over V tokens has perplexity V and log2(V) bits
    flat = compute_metrics("language_modeling", torch.full((2, 5), -math.log(11)), target[:2, :5], 11)
    assert flat["perplexity"] == pytest.approx(11) and flat["bits_per_token"] == pytest.approx(math.log2(11))


@pytest.mark.parametrize("name", [e.name for e in METRICS.entries() if e.meta["task"] == "language_modeling"])
def test_every_language_metric_is_best_on_a_certain_model(name):
    y = torch.randint(0, 5, (4, 6))
    v = compute_metrics("language_modeling", torch.zeros(4, 6), y, 5, names=[name])[name]  # p(target) = 1
    assert v == pytest.approx({"perplexity": 1.0, "bits_per_token": 0.0}[name])


def test_unigram_baseline_by_hand():
    y_train = np.array([[0, 0, 0, 1]])  # counts 3, 1, 0 over a vocabulary of 3, add-one smoothed
    y_eval = np.array([[0, 1, 2]])
    p = np.array([4 / 7, 2 / 7, 1 / 7])
    base = baseline_metrics("language_modeling", y_train, y_eval, 3, seed=0)
    assert base["unigram"]["perplexity"] == pytest.approx(math.exp(-np.log(p).mean()))
    assert base["uniform"]["perplexity"] == pytest.approx(3.0)


@pytest.mark.parametrize("name", LM_MODELS)
def test_every_language_model_is_causal(name):
    torch.manual_seed(0)
    net = build_model(name, input_shape=(12,), n_outputs=20, kind="text", task="language_modeling")
    net.eval()
    x = torch.randint(0, 20, (2, 12))
    out = net(x)
    assert out.shape == (2, 12, 20)
    x2 = x.clone()
    x2[:, 8:] = (x2[:, 8:] + 1) % 20  # change the future
    out2 = net(x2)
    assert torch.allclose(out[:, :8], out2[:, :8], atol=1e-5)  # the past does not see it
    assert not torch.allclose(out[:, 8:], out2[:, 8:])
    net.train()
    torch.nn.functional.cross_entropy(net(x).transpose(1, 2), x).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_transformer_heads_must_divide_the_width():
    from methodo.errors import ConfigError

    with pytest.raises(ConfigError, match="d_model=30 must be a multiple of heads=4"):
        build_model("transformer", input_shape=(8,), n_outputs=5, kind="text", task="language_modeling", d_model=30)


def test_gru_learns_the_docs_beyond_the_unigram_baseline():
    """A few hundred steps on real text: the GRU uses context (perplexity below the unigram model)."""
    from methodo.seed import seed_everything

    seed_everything(0)
    torch.set_num_threads(1)
    text = "".join(python_doc_topics().values())[:60_000]
    x, y = windows(encode(text), 48)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n_train = int(0.9 * len(x))
    net = build_model("gru", input_shape=(48,), n_outputs=len(VOCAB), kind="text", task="language_modeling",
                      embed=32, hidden=128)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        for idx in torch.randperm(n_train, generator=g).split(32):
            loss = torch.nn.functional.cross_entropy(net(xt[idx]).transpose(1, 2), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        logp = net(xt[n_train:]).log_softmax(-1).gather(-1, yt[n_train:, :, None]).squeeze(-1)
    model = compute_metrics("language_modeling", logp, yt[n_train:], len(VOCAB))
    base = baseline_metrics("language_modeling", y[:n_train], y[n_train:], len(VOCAB), seed=0)
    assert model["perplexity"] < 0.8 * base["unigram"]["perplexity"], (model, base["unigram"])


def test_methodo_run_language_model_end_to_end(tmp_path):
    res = cli("run", str(EXAMPLES / "text_gru.yaml"), *TINY, "--out", str(tmp_path / "t"))
    assert res.returncode == 0, res.stderr
    assert "ood metrics (model | baselines)" in res.stdout and "sample (temperature" in res.stdout
    d = tmp_path / "t"
    s = json.loads((d / "summary.json").read_text())
    assert s["status"] == "finished" and s["task"] == "language_modeling" and s["dataset"] == "python_docs"
    assert set(s["metrics"]) == {"train", "val", "test", "ood"}
    for split in ("test", "ood"):
        m = s["metrics"][split]
        assert set(m) == {"perplexity", "bits_per_token"}
        assert m["bits_per_token"] == pytest.approx(math.log2(m["perplexity"]), rel=1e-6)
        lo, hi = s["intervals"][split]["perplexity"]
        assert lo <= m["perplexity"] <= hi
    assert s["baselines"]["uniform"]["perplexity"] == pytest.approx(97.0)
    assert set(s["extra_baselines"]["ood"]) == {"unigram", "uniform"}
    assert "scikit-learn dataset descriptions" in s["data"]["extra"]["ood"]["description"]
    assert len(s["sample"]["continuation"].replace("<unk>", "?")) == 200  # 200 sampled characters
    rows = list(csv.DictReader((d / "metrics.csv").open()))
    assert len(rows) == 2 and {"train_perplexity", "val_perplexity"} <= set(rows[0])
    assert float(rows[-1]["val_perplexity"]) == pytest.approx(math.exp(float(rows[-1]["val_loss"])), rel=1e-4)
    assert (d / "figures" / "perplexity.png").is_file()
    html = (d / "report.html").read_text()
    assert 'id="in-vs-out"' in html and "model (out-of-domain)" in html and "Sample (temperature" in html


def test_language_model_config_errors(tmp_path, capsys):
    for over, needle in (("model.name=mlp", "model.name: model 'mlp' does classification, forecasting, multilabel or regression, "
                                            "not language_modeling; choose 'gru' or 'transformer'"),
                         ("data.options.seq_len=1", "python_docs needs seq_len >= 2"),
                         ("train.early_stopping.monitor=val_accuracy", "choose one of")):
        code, _, err = cli_inproc(capsys, "run", str(EXAMPLES / "text_gru.yaml"), *TINY, over, "--out", str(tmp_path / "x"))
        assert code == 2, (over, err)
        assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "x").exists()
