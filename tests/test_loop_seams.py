"""The loop's structure: TrainState round trip, the three seams of `fit` (param_groups, extra_loss,
on_epoch that stops), and regularizers that work from config by registration alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from methodo.config import validate
from methodo.data import load_dataset, prepare
from methodo.errors import BadInput, ConfigError
from methodo.train.checkpoint import load_checkpoint, save_checkpoint
from methodo.train.loop import fit
from methodo.train.regularize import REGULARIZERS, register_regularizer
from methodo.train.state import TrainState


def _setup(**train):
    base = {"epochs": 3, "batch_size": 32, "progress": False, "early_stopping": None,
            "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}}
    cfg = validate({"data": {"source": "iris"}, "model": {"name": "mlp"}, "seed": 0, "train": {**base, **train}})
    data = prepare(load_dataset(cfg.data), cfg.data, seed=0)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    return cfg, data, net


# --------------------------------------------------------------------------- TrainState


def _filled_state() -> TrainState:
    """A TrainState with a non-default value in every field."""
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(1, 2)).sum().backward()
    opt.step()
    values = dict(
        epoch=3, optimizer=opt.state_dict(), schedule={"warmup": {"step": 4}, "scheduler": {"last_epoch": 2}},
        rng_torch=torch.get_rng_state(), rng_numpy=np.random.get_state(), rng_python=__import__("random").getstate(),
        rng_shuffle=torch.Generator().manual_seed(5).get_state(), rng_augment=torch.Generator().manual_seed(6).get_state(),
        stopper_best=0.25, stopper_bad_epochs=2, history=[{"epoch": 1, "val_loss": 0.5}], lrs=[0.1, 0.05],
        losses=[1.0, float("nan")], grad_norms=[2.0, float("inf")], skipped_batches=[{"epoch": 1, "step": 2, "tensor": "loss"}],
        consecutive_skips=1, best_epoch=2, best_value=0.25, first_loss=1.5,
        monitor=[{"epoch": 0, "layers": {}, "dead_relu": {}}], swa={"n_averaged": 1, "avg": {"w": torch.ones(2)}},
        snapshots=[{"epoch": 1, "step": 4, "file": "snapshot_1.safetensors"}],
    )
    assert set(values) == {f.name for f in dataclasses.fields(TrainState)}, "a new field: give it a value here"
    state = TrainState(**values)
    for f in dataclasses.fields(TrainState):  # every field differs from its default
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        assert repr(getattr(state, f.name)) != repr(default), f.name
    return state


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and a != a:
        return b != b
    return a == b and type(a) is type(b)


def test_every_train_state_field_survives_save_and_load(tmp_path):
    state = _filled_state()
    snap_w = {"w": torch.arange(3.0)}
    save_checkpoint(tmp_path / "snapshot_1.safetensors", snap_w)
    state.snapshots[0]["weights"] = snap_w
    weights = {"layer.weight": torch.randn(2, 2)}
    state.save(tmp_path / "last.safetensors", weights)
    w, back = TrainState.load(tmp_path / "last.safetensors")
    assert torch.equal(w["layer.weight"], weights["layer.weight"])
    for f in dataclasses.fields(TrainState):
        assert _same(getattr(state, f.name), getattr(back, f.name)), f.name
    # the file keeps the flat layout the checkpoint always had (pipeline reads state["history"])
    _, tree, meta = load_checkpoint(tmp_path / "last.safetensors")
    assert list(tree) == [f.name for f in dataclasses.fields(TrainState)] and meta == {"epoch": 3}


def test_a_checkpoint_of_another_layout_is_a_clear_bad_input(tmp_path):
    save_checkpoint(tmp_path / "last.safetensors", {"w": torch.ones(1)}, {"epoch": 1, "weird": 2})
    with pytest.raises(BadInput, match="missing keys.*unknown keys: \\['weird'\\]"):
        TrainState.load(tmp_path / "last.safetensors")
    save_checkpoint(tmp_path / "best.safetensors", {"w": torch.ones(1)})
    with pytest.raises(BadInput, match="weights-only"):
        TrainState.load(tmp_path / "best.safetensors")


def test_resume_through_train_state_is_bit_exact(tmp_path):
    cfg, data, net = _setup(epochs=4, regularization={"l2": 1e-3})
    full = fit(net, data, cfg.train, seed=0)
    cfg2, data2, net2 = _setup(epochs=2, regularization={"l2": 1e-3})
    fit(net2, data2, cfg2.train, seed=0, ckpt_dir=tmp_path)
    cfg3, data3, net3 = _setup(epochs=4, regularization={"l2": 1e-3})
    torch.manual_seed(123)
    resumed = fit(net3, data3, cfg3.train, seed=0, ckpt_dir=tmp_path, resume_from=tmp_path)
    assert full.losses == resumed.losses and full.lrs == resumed.lrs
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), net3.state_dict().values()))


def _parts(seed_shift: int):
    """Live objects of a run (optimizer, schedule, RNGs, early stopping, monitor, SWA), advanced a little."""
    from types import SimpleNamespace

    from methodo.config import SWAConfig
    from methodo.train.loop import EarlyStopping
    from methodo.train.monitor import WeightMonitor
    from methodo.train.schedules import build_schedule
    from methodo.train.state import Parts
    from methodo.train.swa import SWA

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = build_schedule(opt, "cosine", {"warmup_steps": 2}, epochs=3, steps_per_epoch=2)
    stopper = EarlyStopping("val_loss", "min", 3, 0.0)
    watcher, swa = WeightMonitor(net), SWA(net, opt, SWAConfig(start=1), 3)
    parts = Parts(optimizer=opt, schedule=sched, shuffle=torch.Generator().manual_seed(1), stopper=stopper,
                  augment=SimpleNamespace(generator=torch.Generator().manual_seed(2)), watcher=watcher, swa=swa)
    for k in range(1 + seed_shift):  # advance every part differently per seed_shift
        net(torch.ones(2, 3)).sum().backward()
        opt.step()
        sched.after_step()
        stopper.improved(1.0 / (k + 1))
        watcher.record(k, net)
        swa.after_epoch(net)
        torch.randperm(5, generator=parts.shuffle)
        torch.rand(1, generator=parts.augment.generator)
        torch.rand(1), np.random.rand(), __import__("random").random()
    return parts


def test_restore_puts_back_everything_capture_took():
    """capture and restore list the same live state: capture → disturb → restore → capture is unchanged."""
    a = TrainState()
    parts = _parts(0)
    a.capture(parts)
    a = TrainState.from_dict(_roundtrip(a.to_dict()))
    other = _parts(2)  # the same objects, further along
    a.restore(other)
    b = TrainState()
    b.capture(other)
    for f in dataclasses.fields(TrainState):
        assert _same(getattr(a, f.name), getattr(b, f.name)), f.name


def _roundtrip(tree):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(Path(d) / "x.safetensors", {}, tree)
        return load_checkpoint(Path(d) / "x.safetensors")[1]


# --------------------------------------------------------------------------- seams


def test_frozen_layer_is_unchanged_and_not_given_to_the_optimizer(monkeypatch):
    cfg, data, net = _setup(regularization={"decoupled_wd": 0.1, "max_norm": 0.5}, clip={"norm": 0.1})
    net[0].requires_grad_(False)
    frozen = {k: v.clone() for k, v in net[0].state_dict().items()}
    head = net[2].weight.detach().clone()
    seen = {}
    import methodo.train.loop as loop

    real = loop.build_optimizer

    def spy(params, *a, **k):
        opt = real(params, *a, **k)
        seen["ids"] = {id(p) for g in opt.param_groups for p in g["params"]}
        return opt

    monkeypatch.setattr(loop, "build_optimizer", spy)
    fit(net, data, cfg.train, seed=0)
    assert all(torch.equal(frozen[k], v) for k, v in net[0].state_dict().items())  # not decayed nor max-normed
    assert not torch.equal(head, net[2].weight)
    assert seen["ids"] == {id(p) for p in net[2].parameters()}


def test_param_groups_give_discriminative_learning_rates(monkeypatch):
    cfg, data, net = _setup(epochs=1)
    groups = lambda m: [{"params": m[0].parameters(), "lr": 0.01}, {"params": m[2].parameters()}]  # noqa: E731
    import methodo.train.loop as loop

    made = []
    real = loop.build_optimizer
    monkeypatch.setattr(loop, "build_optimizer", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    res = fit(net, data, cfg.train, seed=0, param_groups=groups)
    (opt,) = made
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.1]
    assert [g["momentum"] for g in opt.param_groups] == [0.9, 0.9]  # train.optimizer options for every group
    assert set(res.lrs) == {0.01}  # the logged LR is group 0's
    with pytest.raises(ConfigError, match="no trainable"):
        fit(net, data, cfg.train, seed=0, param_groups=[{"params": []}])


def test_default_groups_give_the_same_numbers_as_an_explicit_single_group():
    cfg, data, net = _setup(epochs=2)
    a = fit(net, data, cfg.train, seed=0)
    cfg, data, net2 = _setup(epochs=2)
    b = fit(net2, data, cfg.train, seed=0, param_groups=[{"params": list(net2.parameters())}])
    assert a.losses == b.losses


def test_extra_loss_changes_gradients_not_the_logged_loss():
    cfg, data, net = _setup(epochs=1)
    base = fit(net, data, cfg.train, seed=0)
    cfg, data, net2 = _setup(epochs=1)
    calls = []

    def extra(model, out, xb, yb):
        calls.append(out.shape[0])
        return 10.0 * out.pow(2).mean()

    res = fit(net2, data, cfg.train, seed=0, extra_loss=extra)
    assert len(calls) == len(res.lrs) and calls[0] == 32
    assert res.losses[0] == base.losses[0]  # same weights at step 1: the logged loss is the data loss alone
    assert res.losses[1:] != base.losses[1:]  # ... and the extra term changed the steps


def test_extra_loss_with_rows_gets_the_batch_row_indices_also_when_sampled():
    """A ``rows`` parameter brings the batch's indices into the training tensor: per-row values cached
    before training (a teacher's soft targets) line up with the batch, shuffled or drawn with replacement."""
    for sampled in (False, True):
        cfg, data, net = _setup(epochs=2)
        if sampled:
            data.sample_weights = torch.ones(len(data.tensors["train"][1]), dtype=torch.float64)
        Xtr = data.tensors["train"][0]
        seen = []

        def extra(model, out, xb, yb, rows):
            assert torch.equal(Xtr[rows], xb) and torch.equal(data.tensors["train"][1][rows], yb)
            seen.append(rows.clone())
            return out.sum() * 0.0

        fit(net, data, cfg.train, seed=0, extra_loss=extra)
        every = torch.cat(seen)
        assert len(seen) > 2 and len(every) >= len(Xtr) and every.max() < len(Xtr)
        if not sampled:  # a permutation per epoch: each row once per epoch
            assert sorted(torch.cat(seen[:len(seen) // 2]).tolist()) == list(range(len(Xtr)))


def test_on_epoch_can_stop_training(tmp_path):
    cfg, data, net = _setup(epochs=5)
    rows = []
    res = fit(net, data, cfg.train, seed=0, ckpt_dir=tmp_path,
              on_epoch=lambda row: rows.append(row["epoch"]) or row["epoch"] == 2)
    assert res.epochs_run == 2 and rows == [1, 2]
    assert res.stopped_by == "callback" and not res.stopped_early
    assert load_checkpoint(tmp_path / "last.safetensors")[1]["epoch"] == 2


def test_early_stopping_is_recorded_in_stopped_by():
    cfg, data, net = _setup(epochs=30, optimizer={"name": "sgd", "lr": 5.0},
                            early_stopping={"monitor": "val_loss", "patience": 1})
    res = fit(net, data, cfg.train, seed=0)
    assert res.stopped_early and res.stopped_by == "early_stopping" and res.epochs_run < 30


# --------------------------------------------------------------------------- regularizer registry


@pytest.fixture
def shrink():
    """A regularizer registered for this test only: scales the weights by (1 - value) after each step."""

    @torch.no_grad()
    def shrink_weights(weights, value):
        for w in weights:
            w.mul_(1.0 - value)

    register_regularizer("shrink", shrink_weights, stage="after_step", help="test: shrink weights", example=0.5)
    yield
    del REGULARIZERS._entries["shrink"]


def test_a_registered_regularizer_is_usable_from_config_and_applied_at_its_stage(shrink):
    cfg, data, net = _setup(epochs=1, regularization={"shrink": 0.5})
    assert cfg.train.regularization.shrink == 0.5
    fit(net, data, cfg.train, seed=0)
    # after the last step each weight matrix was halved; biases untouched (weights of dim >= 2 only)
    cfg0, data0, net0 = _setup(epochs=1)
    fit(net0, data0, cfg0.train, seed=0)
    assert net[0].weight.abs().mean() < 0.2 * net0[0].weight.abs().mean()
    with pytest.raises(ConfigError, match="train.regularization.shrink"):
        validate({"data": {"source": "iris"}, "model": {"name": "mlp"}, "train": {"regularization": {"shrink": -1}}})


def test_unknown_regularization_key_names_the_choices():
    with pytest.raises(ConfigError, match="train.regularization.l3.*'l1'.*'max_norm'"):
        validate({"data": {"source": "iris"}, "model": {"name": "mlp"}, "train": {"regularization": {"l3": 0.1}}})


@pytest.mark.parametrize("key", ["decoupled_wd", "max_norm"])
def test_lbfgs_refuses_step_stage_regularizers(key):
    with pytest.raises(ConfigError, match=f"train.regularization.{key}.*lbfgs"):
        validate({"data": {"source": "iris"}, "model": {"name": "mlp"},
                  "train": {"optimizer": {"name": "lbfgs", "lr": 0.1}, "regularization": {key: 0.1}}})


# --------------------------------------------------------------------------- overhead


def test_one_host_read_per_optimizer_step(monkeypatch):
    """The step loop reads one value from the device per step (the loss, for the guard); the score
    is summed on the device and read once per epoch (a regression guard for per-step syncs)."""
    cfg, data, net = _setup(epochs=3, batch_size=16, monitor={"enabled": False})
    reads = {"n": 0}
    for name in ("item", "__float__", "tolist", "__bool__"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, **k):
            reads["n"] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    res = fit(net, data, cfg.train, seed=0)
    steps, epochs = len(res.lrs), res.epochs_run
    assert steps == 3 * 7
    # per epoch: the train score, the validation loss and score, the weight check (+ slack for one more)
    assert reads["n"] <= steps + 5 * epochs, reads["n"]
