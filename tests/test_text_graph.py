"""Issue 18 (items 2 and 3): text classifiers from scratch (text_rnn, text_transformer) on MiniLM's offline
tokenizer with attention maps in the report; graph classification (gcn, gin) on generated graphs whose
label only the structure gives."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import EXAMPLES, cli_inproc, with_keys

import methodo
from methodo.config import validate


def _cfg(**over) -> dict:
    base = {"name": "t", "seed": 0, "train": {"epochs": 1, "batch_size": 32, "progress": False},
            "track": {"mlflow": False}, "evaluate": {"bootstrap": 0}}
    return with_keys(base, over)


# --------------------------------------------------------------------------- text


def test_the_shipped_tokenizer_has_the_vocabulary_the_text_models_size_their_embeddings_for():
    from methodo.models.backbones import _transformers, resolve_hf
    from methodo.models.text import TOKENIZER, VOCAB_SIZE

    tok = _transformers().AutoTokenizer.from_pretrained(str(resolve_hf(TOKENIZER)))
    assert len(tok) == VOCAB_SIZE and tok.pad_token_id == 0 and tok.cls_token_id == tok("a")["input_ids"][0]


def test_transformer_attention_is_a_distribution_over_the_real_tokens_only():
    from methodo.models import build_model

    torch.manual_seed(0)
    for pool in ("cls", "mean"):
        net = build_model("text_transformer", input_shape=(2, 10), n_outputs=3, kind="text", pool=pool, d_model=32)
        ids = torch.randint(1, 1000, (4, 10))
        mask = torch.ones(4, 10, dtype=torch.long)
        mask[0, 6:] = 0  # a padded text
        ids[0, 6:] = 0
        att = net.eval().attention(torch.stack([ids, mask], 1))
        assert att.shape == (4, 10) and torch.allclose(att.sum(1), torch.ones(4), atol=1e-5)
        assert float(att[0, 6:].abs().max()) == 0.0  # padding is never looked at
        # the padding does not change the prediction: the same text without padding scores the same
        short = torch.stack([ids[:1, :6], mask[:1, :6]], 1)
        full = torch.stack([ids[:1], mask[:1]], 1)
        assert torch.allclose(net(short), net(full), atol=1e-5)


def test_text_rnn_cell_choice_and_bad_cell_is_one_error_line(capsys):
    from methodo.models import build_model

    gru = build_model("text_rnn", input_shape=(2, 8), n_outputs=2, kind="text", cell="gru", embed=8, hidden=8)
    assert isinstance(gru.rnn, torch.nn.GRU)
    code, out, err = cli_inproc(capsys, "run", str(EXAMPLES / "text_rnn.yaml"), "model.cell=rnn")
    assert code == 2 and err.count("error:") == 1 and "model.cell" in err and "'lstm'" in err and "'gru'" in err


@pytest.fixture(scope="module")
def topics_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("topics") / "t.csv"
    subprocess.run([sys.executable, str(EXAMPLES / "text_topics.py"), "--out", str(path), "--per-class", "50"],
                   check=True, capture_output=True)
    return path


def test_text_transformer_run_records_attention_strips_and_predicts_new_text(topics_csv, tmp_path, capsys):
    res = methodo.run(validate(_cfg(**{
        "data": {"source": "text_csv", "path": str(topics_csv), "target": "label"},
        "model": {"name": "text_transformer", "d_model": 32, "heads": 2, "layers": 1, "max_length": 24},
        "train.epochs": 6, "train.optimizer": {"name": "adamw", "lr": 0.003}, "explain.n_images": 4})),
        out=tmp_path / "run")
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    ex = summary["explain"]
    assert ex["kind"] == "attention" and len(ex["examples"]) == 4 and (run / "figures" / "attention.png").is_file()
    for e in ex["examples"]:
        weights = [w for _, w in e["top_tokens"]]
        assert len(weights) == 3 and weights == sorted(weights, reverse=True) and 0 < weights[0] <= 1
        assert e["text"] and e["predicted"] in ("asyncio", "email", "http", "unittest")
    html = (run / "report.html").read_text()
    assert "Attention (test sentences)" in html and "Attention: which tokens" in html
    # honest comparison: the dummy baselines sit beside the model's numbers
    assert {"most_frequent", "stratified"} <= set(summary["baselines"])
    assert res.metrics["test"]["accuracy"] is not None
    # predict reads raw lines with the run's own tokenizer and max_length
    (tmp_path / "new.txt").write_text("Send the message to the mail server.\nRun the test case and check the result.\n")
    code, out, err = cli_inproc(capsys, "predict", str(run), str(tmp_path / "new.txt"))
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == '"line","predicted","p_asyncio","p_email","p_http","p_unittest"' and len(lines) == 3
    p = np.array([[float(v) for v in row.split(",")[2:]] for row in lines[1:]])
    assert np.allclose(p.sum(1), 1, atol=1e-5)


def test_text_rnn_beats_the_dummy_baselines_on_the_topics(topics_csv, tmp_path):
    res = methodo.run(validate(_cfg(**{
        "data": {"source": "text_csv", "path": str(topics_csv), "target": "label"},
        "model": {"name": "text_rnn", "cell": "gru", "embed": 32, "hidden": 32, "max_length": 32},
        "train.epochs": 8, "train.optimizer": {"name": "adamw", "lr": 0.005}, "explain.enabled": False})),
        out=tmp_path / "run")
    best_dummy = max(v["accuracy"] for v in res.summary["baselines"].values())
    assert res.metrics["test"]["accuracy"] > best_dummy + 0.1, (res.metrics["test"]["accuracy"], best_dummy)


# --------------------------------------------------------------------------- graphs


def test_graph_cycles_label_is_exactly_the_structure_and_features_carry_nothing():
    from methodo.data.graphs import make_graph_cycles, unpack

    X, y = make_graph_cycles(n=200, max_nodes=12, features=4, seed=3)
    adj, mask, feats = unpack(X, 12)
    nodes, edges = mask.sum(1), adj.sum((1, 2)) / 2
    assert ((edges >= nodes) == (y == 1)).all()  # connected: a cycle exactly when edges >= nodes
    assert (np.diagonal(adj, axis1=1, axis2=2) == 0).all() and (feats[mask == 0] == 0).all()
    # node counts and feature means are drawn alike in both classes
    assert abs(nodes[y == 0].mean() - nodes[y == 1].mean()) < 1.0


def _structure_blind_accuracy(X, y, train, test, n_nodes: int, seed: int) -> float:
    """Mean-pooled node features + an MLP: what a model that ignores the edges can do."""
    from sklearn.neural_network import MLPClassifier

    from methodo.data.graphs import unpack

    _, mask, feats = unpack(X, n_nodes)
    pooled = feats.sum(1) / mask.sum(1, keepdims=True)
    clf = MLPClassifier((32,), max_iter=500, random_state=seed).fit(pooled[train], y[train])
    return float(clf.score(pooled[test], y[test]))


def test_gin_beats_the_majority_and_a_structure_blind_baseline(tmp_path):
    """GIN (sum aggregation: it counts neighbours) tells trees from graphs with a cycle; a model reading only
    the mean-pooled node features cannot. (GCN does not learn this label: docs/architectures.md says why.)"""
    import csv

    from methodo.data import load_dataset

    data = {"source": "graph_cycles", "options": {"n": 300, "max_nodes": 12}}
    res = methodo.run(validate(_cfg(**{"data": data, "model": {"name": "gin", "hidden": 32, "layers": 3},
                                       "train.epochs": 15, "train.optimizer": {"name": "adam", "lr": 0.005}})),
                      out=tmp_path / "run")
    acc = res.metrics["test"]["accuracy"]
    majority = res.summary["baselines"]["most_frequent"]["accuracy"]
    ds = load_dataset(validate(_cfg(data=data, model={"name": "gin"})).data)
    rows = list(csv.DictReader((tmp_path / "run" / "splits.csv").open()))
    idx = {s: np.array([int(r["row"]) for r in rows if r["split"] == s]) for s in ("train", "test")}
    blind = _structure_blind_accuracy(ds.X, ds.y, idx["train"], idx["test"], 12, seed=0)
    assert acc >= majority + 0.25 and acc >= blind + 0.25, (acc, majority, blind)
    assert blind < 0.7  # the features alone say nearly nothing
    # the trained model answers on new graphs through the predictor (predict's CLI has no graph file format)
    from methodo.data.graphs import CLASSES, make_graph_cycles
    from methodo.use.predictor import load

    Xn, yn = make_graph_cycles(n=60, max_nodes=12, features=4, seed=7)
    assert (load(tmp_path / "run").predict(Xn) == np.array(CLASSES)[yn]).mean() >= 0.75


def test_data_inspect_reads_raw_text_and_finds_repeated_sentences(topics_csv, tmp_path, capsys):
    """The audit hashes raw texts (before any tokenizer): the same sentence twice is a duplicate."""
    lines = topics_csv.read_text().splitlines()
    (tmp_path / "dup.csv").write_text("\n".join(lines + lines[1:31]) + "\n")  # 30 sentences repeated
    (tmp_path / "t.yaml").write_text(f"data: {{source: text_csv, path: {tmp_path / 'dup.csv'}, target: label}}\n"
                                     "model: {name: text_rnn}\n")
    code, out, err = cli_inproc(capsys, "data", "inspect", str(tmp_path / "t.yaml"), "--json")
    assert code == 0, err
    found = {f["id"]: f for f in json.loads(out)["findings"]}
    across = found["duplicates_across_splits"]["evidence"]
    within = found["duplicates_within_split"]["evidence"]["duplicates"]
    # every repeated sentence is counted once: in its split, or across two
    assert sum(across[k] for k in ("train_val", "train_test", "val_test")) + sum(within.values()) == 30
