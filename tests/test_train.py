"""Optimizers (all twelve), schedulers (each at its frequency), the loop, checkpoints, resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from methodo.config import validate
from methodo.data import load_dataset, prepare
from methodo.models import build_model
from methodo.train.checkpoint import load_checkpoint, save_checkpoint
from methodo.train.loop import NonFiniteLoss, fit
from methodo.train.optim import OPTIMIZERS


def _setup(source="iris", model="mlp", **train):
    train = {"epochs": 3, "batch_size": 16, "progress": False, **train}
    cfg = validate({"data": {"source": source}, "model": {"name": model, "hidden": [16]} if model == "mlp"
                    else {"name": model}, "train": train, "seed": 0})
    ds = load_dataset(cfg.data)
    data = prepare(ds, cfg.data, seed=0)
    torch.manual_seed(0)
    net = build_model(cfg.model.name, input_shape=ds.input_shape, n_outputs=data.n_outputs, kind=ds.kind,
                      **cfg.model.options)
    return cfg, data, net


def test_all_twelve_torch_optimizers_are_registered():
    assert OPTIMIZERS.names() == ["adadelta", "adagrad", "adam", "adamax", "adamw", "asgd", "lbfgs",
                                  "nadam", "radam", "rmsprop", "rprop", "sgd"]


LR = {"adadelta": 5.0, "lbfgs": 0.1, "rprop": 0.01, "sgd": 0.1, "asgd": 0.1, "adagrad": 0.05, "radam": 0.05}


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_trains(name):
    # L-BFGS is a full-batch method: give it the whole training split per step
    cfg, data, net = _setup(epochs=8, optimizer={"name": name, "lr": LR.get(name, 0.01)},
                            early_stopping=None, batch_size=104 if name == "lbfgs" else 32)
    res = fit(net, data, cfg.train, seed=0)
    chance = math.log(3)  # the cross-entropy of a uniform guess over iris' 3 classes
    last = res.history[-1]["train_loss"]
    assert math.isfinite(last) and last < 0.7 * chance, (name, last)
    assert res.history[-1]["val_accuracy"] > 0.6


# The scheduler contract over every registered scheduler is in test_schedules.py.


def test_per_step_and_per_epoch_stepping_in_the_loop():
    cfg, data, net = _setup(epochs=3, scheduler={"name": "onecycle"}, early_stopping=None)
    res = fit(net, data, cfg.train, seed=0)
    steps = math.ceil(len(data.indices["train"]) / 16)
    assert len(res.lrs) == 3 * steps
    assert len(set(res.lrs[:steps])) == steps  # changes every step within epoch 1
    assert max(res.lrs) == pytest.approx(0.01, rel=0.02)  # peak ≈ the optimizer lr (nearest step)
    cfg, data, net = _setup(epochs=4, scheduler={"name": "step", "step_size": 2, "gamma": 0.5}, early_stopping=None)
    res = fit(net, data, cfg.train, seed=0)
    assert [r["lr"] for r in res.history] == pytest.approx([0.01, 0.01, 0.005, 0.005])


def test_same_seed_same_weights_different_seed_different():
    def weights(seed):
        cfg, data, net = _setup(source="digits", model="cnn", epochs=2)
        torch.manual_seed(seed)
        fit(net, data, cfg.train, seed=seed)
        return torch.cat([p.detach().flatten() for p in net.parameters()])
    a, b, c = weights(0), weights(0), weights(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_early_stopping_stops_and_restores_best(tmp_path):
    cfg, data, net = _setup(epochs=60, optimizer={"name": "adam", "lr": 0.05},
                            early_stopping={"monitor": "val_loss", "patience": 3})
    res = fit(net, data, cfg.train, seed=0, ckpt_dir=tmp_path)
    assert res.stopped_early and res.epochs_run < 60
    assert res.epochs_run - res.best_epoch == 3
    best = min(r["val_loss"] for r in res.history)
    assert res.best_value == best == res.history[res.best_epoch - 1]["val_loss"]
    weights, state, meta = load_checkpoint(tmp_path / "best.safetensors")
    assert state is None and meta["epoch"] == res.best_epoch
    for k, v in net.state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_checkpoint_roundtrip_without_pickle(tmp_path):
    import random

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(5, 3)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": torch.get_rng_state(), "np": np.random.get_state(),
             "py": random.getstate(), "best": float("inf"), "history": [{"epoch": 1, "x": 0.5}]}
    p = save_checkpoint(tmp_path / "last.safetensors", net.state_dict(), state, {"epoch": 1})
    raw = p.read_bytes()
    assert b"pickle" not in raw and raw[8:9] == b"{"  # a safetensors JSON header, not a pickle
    w, s, meta = load_checkpoint(p)
    assert set(w) == set(net.state_dict()) and meta == {"epoch": 1}
    assert s["best"] == float("inf") and s["history"] == [{"epoch": 1, "x": 0.5}]
    assert torch.equal(s["optimizer"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    opt.load_state_dict(s["optimizer"])
    random.setstate(s["py"])
    np.random.set_state(s["np"])
    assert list(tmp_path.iterdir()) == [p]  # no temporary file left behind


def test_resume_is_bit_exact(tmp_path):
    cfg, data, net = _setup(source="digits", model="cnn", epochs=4, early_stopping=None,
                            optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9})
    torch.manual_seed(0)
    full = fit(net, data, cfg.train, seed=0, ckpt_dir=tmp_path / "a")  if (tmp_path / "a").mkdir() is None else None
    full_last = load_checkpoint(tmp_path / "a" / "last.safetensors")[0]

    cfg2, data2, net2 = _setup(source="digits", model="cnn", epochs=2, early_stopping=None,
                               optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9})
    (tmp_path / "b").mkdir()
    torch.manual_seed(0)
    fit(net2, data2, cfg2.train, seed=0, ckpt_dir=tmp_path / "b")
    cfg3, data3, net3 = _setup(source="digits", model="cnn", epochs=4, early_stopping=None,
                               optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9})
    torch.manual_seed(123)  # resume must restore every RNG itself
    resumed = fit(net3, data3, cfg3.train, seed=0, ckpt_dir=tmp_path / "b", resume_from=tmp_path / "b")
    res_last = load_checkpoint(tmp_path / "b" / "last.safetensors")[0]
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    for k in full_last:
        assert torch.equal(full_last[k], res_last[k]), k
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in full.history]


def test_exploding_loss_stops_within_one_step():
    cfg, data, net = _setup(source="digits", model="cnn", optimizer={"name": "sgd", "lr": 1e6})
    with pytest.raises(NonFiniteLoss) as exc:
        fit(net, data, cfg.train, seed=0)
    # step 1 is taken with lr=1e6; the loss of step 2 is already past the limit
    assert (exc.value.epoch, exc.value.step) == (1, 2) and exc.value.limit is not None


def test_nan_loss_stops_even_without_divergence_limit():
    cfg, data, net = _setup(divergence_factor=0)
    data.tensors["train"][0][5:] = float("nan")  # NaN inputs → NaN loss from the first batch that has them
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(NonFiniteLoss) as exc:
        fit(net, data, cfg.train, seed=0)
    assert exc.value.limit is None and math.isnan(exc.value.value)
    assert (exc.value.epoch, exc.value.step) == (1, 1)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # the bad step was not applied
