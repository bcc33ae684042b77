"""Reusing trained models (issue 13): timm and Hugging Face backbones, pretrained weights from files and run
dirs, transfer strategies, LoRA adapters, the scratch comparison and the transfer findings.

Tiny models only: timm's ``test_resnet`` with weights saved here, the MiniLM that ships in a package with a
few short texts, and methodo's own mlp on digits. Nothing downloads.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from conftest import with_keys

import methodo
from methodo.config import validate
from methodo.errors import ConfigError

FAST = ["track.mlflow=false", "train.progress=false", "explain.enabled=false", "evaluate.bootstrap=0"]


def _cfg(**over) -> dict:
    base = {"name": "t", "data": {"source": "digits"}, "model": {"name": "mlp", "hidden": [32, 16]},
            "train": {"epochs": 1, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.003}, "progress": False},
            "track": {"mlflow": False}, "explain": {"enabled": False}, "evaluate": {"bootstrap": 0}}
    return with_keys(base, over)


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory):
    """timm's test_resnet as ImageNet weights would be: 3 channels, 1000 classes (random, saved here)."""
    import timm
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    net = timm.create_model("test_resnet", num_classes=1000)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(d / "test_resnet.safetensors"))
    torch.save({"state_dict": net.state_dict()}, d / "test_resnet.pth")
    return d, net.state_dict()


# --------------------------------------------------------------------------- backbones and weights


def test_timm_names_are_checked_and_listed(capsys):
    from methodo.cli import main

    with pytest.raises(ConfigError, match=r"model.name.*unknown timm model 'resnet_18'.*'resnet18'"):
        validate(_cfg(**{"model": {"name": "timm:resnet_18"}}))
    assert main(["list", "models", "--timm", "resnet1*"]) == 0
    out = capsys.readouterr().out.split()
    assert "timm:resnet18" in out and all(n.startswith("timm:resnet1") for n in out)
    assert main(["list", "models", "--timm", "no-such-net*"]) == 2
    assert "error: list models --timm" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", ["safetensors", "pth"])
def test_pretrained_file_resets_the_head_and_adapts_the_input_conv(resnet_weights, suffix):
    from methodo.models import build_model
    from methodo.models.backbones import load_pretrained

    d, sd = resnet_weights
    net = build_model("timm:test_resnet", input_shape=(1, 8, 8), n_outputs=10, kind="image")
    info = load_pretrained(net, str(d / f"test_resnet.{suffix}"), model_name="timm:test_resnet")
    assert info.head_reset == ["fc.bias", "fc.weight"] and info.adapted == ["conv1.0.weight"]
    own = net.state_dict()
    assert torch.allclose(own["conv1.0.weight"], sd["conv1.0.weight"].sum(1, keepdim=True))  # 3 → 1 channel
    assert torch.equal(own["layer4.0.conv2.weight"], sd["layer4.0.conv2.weight"])
    assert own["fc.weight"].shape == (10, sd["fc.weight"].shape[1])


def test_pretrained_that_does_not_fit_names_the_weight(resnet_weights, tmp_path):
    from methodo.models import build_model
    from methodo.models.backbones import load_pretrained

    d, _ = resnet_weights
    vit = build_model("timm:test_vit", input_shape=(3, 16, 16), n_outputs=3, kind="image")
    with pytest.raises(ConfigError, match=r"model.pretrained: .* has no weight '.*' that model 'timm:test_vit'"):
        load_pretrained(vit, str(d / "test_resnet.safetensors"), model_name="timm:test_vit")
    with pytest.raises(ConfigError, match=r"model.pretrained: .*not found.*nothing is downloaded"):
        validate(_cfg(**{"model.pretrained": str(tmp_path / "missing.safetensors")}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"holds no weights: put model.safetensors"):
        validate(_cfg(**{"model.pretrained": str(tmp_path / "empty")}))


def test_pretrained_normalization_comes_from_the_backbone():
    from methodo.models.backbones import pretrained_normalization, timm_config

    mean, std, expects = pretrained_normalization("timm:resnet18", "weights.safetensors", 1)
    cfg = timm_config("resnet18")
    assert mean == [pytest.approx(sum(cfg["mean"]) / 3)] and expects["channels"] == 3 and expects["size"] == [224, 224]
    assert pretrained_normalization("timm:resnet18", "weights.safetensors", 3)[0] == list(cfg["mean"])
    assert pretrained_normalization("timm:resnet18", None, 3) is None  # no weights: scaling fitted on train


def test_hf_minilm_from_its_package_tokenizes_and_loads():
    from methodo.models import build_model
    from methodo.models.backbones import load_pretrained, resolve_hf, tokenize

    folder = resolve_hf("sentence-transformers/all-MiniLM-L6-v2")
    assert (folder / "model.safetensors").is_file()
    X = torch.from_numpy(tokenize(["a short sentence", "another one, a little longer"], folder, 12))
    assert X.shape == (2, 2, 12) and X[0, 1].sum() < X[1, 1].sum()  # attention masks follow the lengths
    net = build_model("hf:sentence-transformers/all-MiniLM-L6-v2", input_shape=(2, 12), n_outputs=3, kind="text",
                      max_length=12).eval()
    info = load_pretrained(net, str(folder), model_name="hf:x")
    assert info.kind == "hf" and info.loaded > 100 and info.head_reset == ["hf.classifier.weight", "hf.classifier.bias"]
    with torch.no_grad():
        assert net(X).shape == (2, 3)
    with pytest.raises(ConfigError, match=r"not found offline.*huggingface/hub/models--nobody--nothing"):
        resolve_hf("nobody/nothing")


# --------------------------------------------------------------------------- strategies in the loop


def _tiny_images(n=96, seed=0):
    from types import SimpleNamespace

    from methodo.data.preprocess import Preprocessor

    g = torch.Generator().manual_seed(seed)
    X, y = torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 3
    X[y == 1, :, :4] += 0.5
    return SimpleNamespace(tensors={"train": (X[:64], y[:64]), "val": (X[64:], y[64:])}, task="classification",
                           preprocessor=Preprocessor())


def _train_cfg(epochs):
    return validate(_cfg(**{"train.epochs": epochs, "train.batch_size": 16, "train.monitor": {"enabled": False},
                            "train.optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}})).train


def test_linear_probe_keeps_the_frozen_backbone_and_its_batch_norm_statistics():
    from methodo.models import build_model
    from methodo.train.loop import fit
    from methodo.transfer import plan

    torch.manual_seed(0)
    net = build_model("timm:test_resnet", input_shape=(1, 8, 8), n_outputs=3, kind="image")
    p = plan(net, "linear_probe")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fit(net, _tiny_images(), _train_cfg(2), seed=0)
    changed = {k for k, v in net.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {"fc.weight", "fc.bias"}  # running means and variances of the frozen BN did not move
    assert p.info["trainable_parameters"] == net.fc.weight.numel() + net.fc.bias.numel()


def test_gradual_unfreeze_opens_one_block_per_epoch_top_down_and_lr_decay_lowers_lower_blocks(monkeypatch):
    from methodo.models import build_model
    from methodo.train import loop
    from methodo.train.loop import fit
    from methodo.transfer import blocks, plan

    torch.manual_seed(0)
    net = build_model("mlp", input_shape=(1, 8, 8), n_outputs=3, hidden=[16, 8])
    p = plan(net, "gradual_unfreeze", lr_decay=0.5)
    names = {id(q): n for n, q in net.named_parameters()}
    assert [g["lr"] for g in p.param_groups(0.08)] == [0.08, 0.04, 0.02]  # head, block below, lowest
    assert [b[0] for b in blocks(net)] == ["body.1", "body.4", "head"]
    seen = []

    def snapshot(row):
        seen.append({n for n, q in net.named_parameters() if not torch.equal(start[n], q)})
        p.on_epoch(row)

    start = {n: q.detach().clone() for n, q in net.named_parameters()}
    made = []
    real = loop.build_optimizer
    monkeypatch.setattr(loop, "build_optimizer", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    fit(net, _tiny_images(), _train_cfg(3), seed=0, param_groups=p.param_groups(0.08), on_epoch=snapshot)
    assert seen[0] == {"head.weight", "head.bias"}
    assert seen[1] == seen[0] | {"body.4.weight", "body.4.bias"}
    assert seen[2] == seen[1] | {"body.1.weight", "body.1.bias"}
    assert sum(len(g["params"]) for g in made[0].param_groups) == len(names)  # every block in from the start


# --------------------------------------------------------------------------- runs: own run reuse, LoRA, scratch


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "pre"
    methodo.run(validate(_cfg()), out=out)
    return out


def test_run_dir_reuse_with_lora_saves_a_small_adapter_that_reproduces_the_test_predictions(pretrain_run, tmp_path):
    from methodo.cli import main
    from methodo.config import load_config
    from methodo.evaluate.embeddings import _test_inputs
    from methodo.rundir import RunDir
    from methodo.transfer import load_run_model

    res = methodo.run(validate(_cfg(**{"model.pretrained": str(pretrain_run), "transfer.strategy": "lora",
                                        "transfer.lora": {"r": 2}})), out=tmp_path / "lora")
    t = res.summary["transfer"]
    assert t["strategy"] == "lora" and t["pretrained"]["kind"] == "run" and t["pretrained"]["loaded"] == 6  # same classes: the head too
    assert t["trainable_parameters"] < 0.5 * t["total_parameters"]
    adapter = tmp_path / "lora" / "adapter"
    assert t["adapter"]["bytes"] == sum(f.stat().st_size for f in adapter.iterdir())
    assert (adapter / "adapter_model.safetensors").stat().st_size < (
        tmp_path / "lora" / "checkpoints" / "best.safetensors").stat().st_size
    # the base model + the saved adapter give the run's own test probabilities, to the file's last digit
    rd = RunDir.open(tmp_path / "lora")
    cfg = load_config(rd.file("config.yaml"))
    ds, rows, X = _test_inputs(rd, cfg)
    model = load_run_model(rd, cfg, input_shape=X.shape[1:], n_outputs=10, kind="image")
    with torch.no_grad():
        proba = torch.softmax(model(X), 1).numpy()
    saved = list(csv.DictReader(open(tmp_path / "lora" / "predictions_test.csv")))
    cols = [c for c in saved[0] if c.startswith("p_")]
    assert [[f"{v:.6f}" for v in r] for r in proba] == [[s[c] for c in cols] for s in saved]
    assert main(["merge", str(tmp_path / "lora")]) == 0
    assert (tmp_path / "lora" / "checkpoints" / "merged.safetensors").is_file()


def test_run_dir_of_another_shape_is_an_error_naming_the_weight(pretrain_run, tmp_path, capsys):
    from methodo.cli import main

    import yaml

    out, config = tmp_path / "bad", tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_cfg()))
    rc = main(["run", str(config), f"model.pretrained={pretrain_run}", "model.hidden=[32,8]", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and not out.exists()
    assert "model.pretrained" in err[0] and "'body.4.bias' has shape (16,), model 'mlp' has (8,)" in err[0]


def test_finetune_from_own_run_compares_with_scratch_and_probes_the_features(pretrain_run, tmp_path):
    res = methodo.run(validate(_cfg(**{"model.pretrained": str(pretrain_run), "transfer.strategy": "finetune",
                                        "transfer.compare_scratch": True})), out=tmp_path / "ft")
    t = res.summary["transfer"]
    assert t["scratch"]["parameters"] == t["total_parameters"] and t["scratch"]["epochs_run"] == 1
    assert 0 <= t["scratch"]["metrics"]["accuracy"] <= 1 and "scratch" in res.summary["timings"]
    assert 0.5 < t["probe"]["val"] <= 1  # the pretrained features already separate digits
    assert t["expects"] == {"channels": 1, "source": "run", "mean": t["data"]["mean"], "std": t["data"]["std"]}
    # a pretrained start on the same digits beats one epoch from scratch
    assert res.metrics["test"]["accuracy"] > t["scratch"]["metrics"]["accuracy"]
    assert "pretrained_not_helping" not in [f["id"] for f in res.findings]


def test_transfer_checks_explain_themselves_with_numbers():
    from methodo.diagnose import Facts, diagnose

    f = Facts(task="classification", metrics={"test": {"accuracy": 0.6}}, intervals={"accuracy": [0.5, 0.7]},
              transfer={"strategy": "finetune", "scratch": {"metrics": {"accuracy": 0.65}},
                        "expects": {"channels": 3, "size": [224, 224], "mean": [0.45], "std": [0.23]},
                        "data": {"channels": 1, "size": [8, 8], "mean": [0.3], "std": [0.38]}})
    found = {x.id: x for x in diagnose(f)}
    assert found["pretrained_not_helping"].evidence["scratch"] == 0.65
    dm = found["domain_mismatch"].evidence
    assert dm["expected_channels"] == 3 and dm["data_channels"] == 1 and dm["size_ratio"] == pytest.approx(8 / 224, 1e-3)
    f.intervals = {"accuracy": [0.66, 0.8]}  # better than scratch beyond its interval
    assert "pretrained_not_helping" not in {x.id for x in diagnose(f)}


@pytest.mark.slow
def test_text_csv_with_minilm_linear_probe_learns(tmp_path):
    import subprocess
    import sys

    from conftest import EXAMPLES

    subprocess.run([sys.executable, str(EXAMPLES / "text_topics.py"), "--out", str(tmp_path / "t.csv"), "--per-class", "40"],
                   check=True, capture_output=True)
    res = methodo.run(validate(_cfg(**{
        "data": {"source": "text_csv", "path": str(tmp_path / "t.csv"), "target": "label"},
        "model": {"name": "hf:sentence-transformers/all-MiniLM-L6-v2", "max_length": 32},
        "transfer.strategy": "linear_probe", "train.epochs": 3, "train.batch_size": 16,
        "train.optimizer": {"name": "adamw", "lr": 0.05}})), out=tmp_path / "run")
    assert res.metrics["test"]["accuracy"] > 0.5  # 4 classes: chance is 0.25
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["transfer"]["trainable_share"] < 0.001
    assert np.isfinite(res.summary["transfer"]["epoch_time_s"])


# --------------------------------------------------------------------------- linear probe on cached features


def test_linear_probe_on_cached_features_gives_the_same_numbers_in_less_time_per_epoch(tmp_path):
    """transfer.cache_features: the frozen backbone runs once; the head trains on its features with the same
    batches, so losses, weights and test probabilities match the uncached run to float rounding, and an epoch
    no longer pays the backbone's forward pass."""
    from methodo.train.checkpoint import load_checkpoint

    over = {"model": {"name": "cnn", "width": 16}, "transfer.strategy": "linear_probe", "train.epochs": 3,
            "train.batch_size": 32, "train.optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}
    runs = {}
    for cache in (False, True):
        out = tmp_path / f"cache-{cache}"
        methodo.run(validate(_cfg(**over, **{"transfer.cache_features": cache})), out=out)
        runs[cache] = (json.loads((out / "summary.json").read_text()), out)
    (plain, plain_dir), (cached, cached_dir) = runs[False], runs[True]
    info = cached["transfer"]["cached_features"]
    assert info["used"] and info["rows"] == plain["data"]["splits"]["train"]["n"] + plain["data"]["splits"]["val"]["n"]
    assert "cached_features" not in plain["transfer"]
    rows = lambda d: list(csv.DictReader((d / "metrics.csv").open()))  # noqa: E731
    a, b = rows(plain_dir), rows(cached_dir)
    for k in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
        np.testing.assert_allclose([float(r[k]) for r in b], [float(r[k]) for r in a], rtol=1e-4, atol=1e-5)
    wa = load_checkpoint(plain_dir / "checkpoints" / "best.safetensors")[0]
    wb = load_checkpoint(cached_dir / "checkpoints" / "best.safetensors")[0]
    assert wa.keys() == wb.keys()  # the whole model's checkpoint, as without caching
    assert info["shape"] == [wa["head.weight"].shape[1]]  # what enters the head
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)
    pa = np.loadtxt(plain_dir / "predictions_test.csv", delimiter=",", skiprows=1, usecols=range(3, 13))
    pb = np.loadtxt(cached_dir / "predictions_test.csv", delimiter=",", skiprows=1, usecols=range(3, 13))
    np.testing.assert_allclose(pb, pa, atol=1e-4)


def test_cached_probe_runs_the_backbone_once_and_an_epoch_costs_a_fraction():
    """The backbone's forward passes are counted (not timed): once over train + val with the cache, every
    batch of every epoch without; the epoch's CPU time (this process's, less sensitive to a shared machine
    than wall time) drops with them."""
    import time

    from methodo import stages
    from methodo.train.loop import fit
    from methodo.transfer.cache import cached_probe

    cfg = validate(_cfg(**{"model": {"name": "cnn", "width": 32}, "transfer.strategy": "linear_probe",
                           "train.epochs": 3, "train.batch_size": 32, "train.monitor": {"enabled": False}}))
    cpu, rows = {}, {}
    for cache in (False, True):
        prep = stages.prepare(cfg)
        seen = []
        prep.model.body.register_forward_hook(lambda m, i, o: seen.append(len(i[0])))
        model, data = prep.model, prep.data
        if cache:
            model, data, info = cached_probe(model, data, cfg.train)
            assert info["used"]
        t0 = time.process_time()
        fit(model, data, cfg.train, seed=0)
        cpu[cache] = (time.process_time() - t0) / cfg.train.epochs
        rows[cache] = sum(seen)
    n_train, n_val = len(prep.data.tensors["train"][1]), len(prep.data.tensors["val"][1])
    assert n_train + n_val <= rows[True] <= n_train + n_val + 4  # the cache: each row once (+ a 2-row check, twice)
    assert rows[False] >= cfg.train.epochs * (n_train - cfg.train.batch_size + n_val)  # every epoch
    assert cpu[True] < 0.5 * cpu[False], cpu


def test_features_are_not_cached_when_the_batches_are_augmented(tmp_path):
    s = methodo.run(validate(_cfg(**{"transfer.strategy": "linear_probe", "data.augment": ["flip"]})),
                    out=tmp_path / "aug").summary
    assert s["transfer"]["cached_features"] == {
        "used": False, "reason": "the training batches are augmented (data.augment): each epoch's inputs differ"}


def test_part_of_a_dataset_pretrains_the_other_part_with_the_head_reset_for_other_classes(tmp_path, capsys):
    """data.options.classes keeps some classes of a dataset (relabeled in the order given); reusing a run dir
    trained on other classes of the same number re-initializes the head all the same (other classes)."""
    from methodo.cli import main

    pre = tmp_path / "pre"
    methodo.run(validate(_cfg(**{"data.options": {"classes": [0, 1, 2]}})), out=pre)
    s = json.loads((pre / "summary.json").read_text())
    assert s["data"]["classes"] == ["0", "1", "2"] and s["data"]["n"] < 600
    for classes, reset in (([3, 4, 5], ["head.bias", "head.weight"]), ([0, 1, 2], None)):
        out = tmp_path / f"b{classes[0]}"
        methodo.run(validate(_cfg(**{"data.options": {"classes": classes}, "model.pretrained": str(pre)})), out=out)
        p = json.loads((out / "summary.json").read_text())["transfer"]["pretrained"]
        assert p["kind"] == "run" and p.get("head_reset") == reset
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(_cfg()))
    assert main(["run", str(cfg), "data.options.classes=[3, 11]", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "error: data.options.classes: 11 is not a class of dataset 'digits'" in err and not (tmp_path / "bad").exists()


def test_hf_layers_and_width_build_a_smaller_model_of_the_same_tokenizer():
    from methodo.models import build_model

    name = "hf:sentence-transformers/all-MiniLM-L6-v2"
    small = build_model(name, input_shape=(2, 16), n_outputs=4, kind="text", max_length=16, layers=1, width=64)
    cfg = small.hf.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads) == (1, 64, 256, 2)
    assert cfg.vocab_size == 30522  # the same tokenizer's vocabulary
    with pytest.raises(ConfigError, match="model.width: width 50 is not a multiple of 32"):
        validate(_cfg(**{"model": {"name": name, "width": 50}}))
