"""Precision and speed options: gradient accumulation, bf16 autocast, channels_last, torch.compile."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from methodo.config import validate
from methodo.data import load_dataset, prepare
from methodo.models import build_model
from methodo.train.loop import fit


def _setup(source="iris", model="mlp", **train):
    opts = {"name": "mlp", "hidden": [16], "dropout": 0.0} if model == "mlp" else {"name": model, "width": 8}
    cfg = validate({"data": {"source": source}, "model": opts, "seed": 0,
                    "train": {"epochs": 2, "batch_size": 16, "progress": False, "early_stopping": None,
                              "monitor": {"enabled": False}, "optimizer": {"name": "sgd", "lr": 0.1}, **train}})
    ds = load_dataset(cfg.data)
    data = prepare(ds, cfg.data, seed=0)
    if model != "mlp":
        X, y = data.tensors["train"]
        data.tensors["train"] = (X[:128], y[:128])
    torch.manual_seed(0)
    net = build_model(cfg.model.name, input_shape=ds.input_shape, n_outputs=data.n_outputs, kind=ds.kind,
                      **cfg.model.options)
    return cfg, data, net


def _flat(net):
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_accumulating_two_batches_of_16_equals_one_batch_of_32():
    cfg, data, a = _setup(batch_size=32)
    ra = fit(a, data, cfg.train, seed=0)
    cfg, data, b = _setup(batch_size=16, accumulate=2)
    rb = fit(b, data, cfg.train, seed=0)
    # iris train: 104 rows = 3 groups of 32 (2 × 16) + one of 8: 4 optimizer steps per epoch either way
    assert len(ra.lrs) == len(rb.lrs) == 8
    torch.testing.assert_close(_flat(a), _flat(b), rtol=1e-5, atol=1e-6)
    assert rb.losses == pytest.approx(ra.losses, rel=1e-5)


def test_accumulation_counts_optimizer_steps_for_the_scheduler():
    cfg, data, net = _setup(batch_size=16, accumulate=3, scheduler={"name": "onecycle"}, epochs=3)
    res = fit(net, data, cfg.train, seed=0)
    assert len(res.lrs) == 3 * math.ceil(7 / 3)  # 7 batches → 3 optimizer steps per epoch
    assert max(res.lrs) == pytest.approx(0.1, rel=0.05)  # one-cycle reached its peak within the run


def test_bf16_autocast_runs_the_forward_in_bfloat16():
    cfg, data, net = _setup(precision="bf16", epochs=3, optimizer={"name": "adam", "lr": 0.01})
    dtypes = set()
    net.body[1].register_forward_hook(lambda m, i, o: dtypes.add(o.dtype) if m.training else None)
    res = fit(net, data, cfg.train, seed=0)
    assert dtypes == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in net.parameters())  # master weights stay fp32
    assert math.isfinite(res.history[-1]["train_loss"]) and res.history[-1]["val_accuracy"] > 0.6


def test_channels_last_gives_the_same_training():
    cfg, data, a = _setup(source="digits", model="cnn", channels_last=True)
    fit(a, data, cfg.train, seed=0)
    assert a.body[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    cfg, data, b = _setup(source="digits", model="cnn")
    fit(b, data, cfg.train, seed=0)
    torch.testing.assert_close(_flat(a), _flat(b), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                    reason="torch.compile on CPU needs a C compiler")
def test_compile_trains_like_eager():
    cfg, data, a = _setup(compile=True, epochs=1, batch_size=52)  # 2 equal batches: one graph
    fit(a, data, cfg.train, seed=0)
    cfg, data, b = _setup(epochs=1, batch_size=52)
    fit(b, data, cfg.train, seed=0)
    torch.testing.assert_close(_flat(a), _flat(b), rtol=1e-4, atol=1e-5)
    assert not any(k.startswith("_orig_mod") for k in a.state_dict())  # weights saved unprefixed
