"""Resume with every stateful feature on, snapshot ensembles, SWA, weight monitoring and its findings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import methodo
from methodo import diagnose as dg
from methodo.config import validate
from methodo.data import load_dataset, prepare
from methodo.models import build_model
from methodo.train.checkpoint import load_checkpoint
from methodo.train.loop import fit
from methodo.train.monitor import WeightMonitor

from conftest import EXAMPLES, FAST


def _setup(epochs, augment=None, **train):
    cfg = validate({"data": {"source": "digits", **({"augment": augment} if augment else {})}, "model": {"name": "cnn", "width": 8}, "seed": 0,
                    "train": {"epochs": epochs, "batch_size": 64, "progress": False, "early_stopping": None,
                              "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, **train}})
    ds = load_dataset(cfg.data)
    data = prepare(ds, cfg.data, seed=0)
    X, y = data.tensors["train"]
    data.tensors["train"] = (X[:192], y[:192])  # small and fast: 3 batches per epoch
    torch.manual_seed(0)
    net = build_model("cnn", input_shape=ds.input_shape, n_outputs=10, kind="image", width=8)
    return cfg, data, net


EVERYTHING = dict(
    scheduler={"name": "cosine_restarts", "T_0": 1, "warmup_steps": 2},
    clip={"norm": 1.0}, regularization={"l2": 1e-4, "decoupled_wd": 0.01, "max_norm": 3.0, "l1": 1e-3,
                                         "l1_method": "proximal"},
    nan_guard={"policy": "skip"}, swa={"start": 3, "lr": 0.01, "anneal_epochs": 1}, accumulate=2,
    monitor={"every": 1},  # a record every epoch (auto would skip epochs of 2 steps; an interrupted run's
    # last epoch is recorded, so the histories compare only when every epoch is)
)


def test_resume_is_bit_exact_with_every_stateful_feature(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cfg, data, net = _setup(4, **EVERYTHING)
    torch.manual_seed(0)
    full = fit(net, data, cfg.train, seed=0, ckpt_dir=tmp_path / "a")
    cfg2, data2, net2 = _setup(2, **EVERYTHING)
    torch.manual_seed(0)
    fit(net2, data2, cfg2.train, seed=0, ckpt_dir=tmp_path / "b")  # "interrupted" after epoch 2
    cfg3, data3, net3 = _setup(4, **EVERYTHING)
    torch.manual_seed(99)  # resume restores every RNG itself
    resumed = fit(net3, data3, cfg3.train, seed=0, ckpt_dir=tmp_path / "b", resume_from=tmp_path / "b")
    a = load_checkpoint(tmp_path / "a" / "last.safetensors")
    b = load_checkpoint(tmp_path / "b" / "last.safetensors")
    for k in a[0]:
        assert torch.equal(a[0][k], b[0][k]), k
    for name in ("lrs", "losses", "grad_norms", "monitor", "skipped_batches", "snapshots", "schedule"):
        assert a[1][name] == b[1][name], name
    # warmup 2 steps, then cycles of 2 steps (1 epoch = 3 batches / accumulate 2): ends at steps 4 and 6;
    # SWALR owns the LR from epoch 4 on, so no cycle runs there
    assert [(s["epoch"], s["step"]) for s in full.snapshots] == [(2, 4), (3, 6)]
    assert [(s["epoch"], s["step"]) for s in resumed.snapshots] == [(2, 4), (3, 6)]
    for s, t in zip(full.snapshots, resumed.snapshots):
        assert all(torch.equal(s["weights"][k], t["weights"][k]) for k in s["weights"])
    assert full.swa_epochs == resumed.swa_epochs == 2
    assert all(torch.equal(full.swa_weights[k], resumed.swa_weights[k]) for k in full.swa_weights)
    assert [r["val_loss"] for r in full.history] == [r["val_loss"] for r in resumed.history]


def test_resume_is_bit_exact_with_augmentation(tmp_path):
    """The augmentation generator is part of the saved state: a resumed run draws the same crops and flips."""
    aug = [{"rotation": {"degrees": 15}}, {"random_resized_crop": {"scale": [0.7, 1.0]}}]
    weights = {}
    for run, epochs, resume in (("a", 3, False), ("b", 1, False), ("b", 3, True)):
        cfg, data, net = _setup(epochs, augment=aug, monitor={"enabled": False})
        assert data.augment is not None and data.augment.steps
        torch.manual_seed(0 if not resume else 99)
        (tmp_path / run).mkdir(exist_ok=True)
        fit(net, data, cfg.train, seed=0, ckpt_dir=tmp_path / run, resume_from=tmp_path / run if resume else None)
        weights[run] = load_checkpoint(tmp_path / run / "last.safetensors")[0]
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])


def test_swa_averages_weights_and_owns_the_lr_from_its_start():
    cfg, data, net = _setup(5, swa={"start": 3, "lr": 0.005, "anneal_epochs": 1}, monitor={"enabled": False})
    snaps = {}
    res = fit(net, data, cfg.train, seed=0,
              on_epoch=lambda row: snaps.__setitem__(row["epoch"], {k: v.clone() for k, v in net.state_dict().items()}))
    assert res.swa_epochs == 3
    # the averaged parameters are the mean of epochs 3, 4, 5's parameters
    key = "head.weight"
    mean = sum(snaps[e][key] for e in (3, 4, 5)) / 3
    torch.testing.assert_close(res.swa_weights[key], mean)
    # SWALR starts annealing after epoch 3 (epoch 4 still at 0.05) and reaches the SWA LR for epoch 5
    assert [r["lr"] for r in res.history][2:] == pytest.approx([0.05, 0.05, 0.005])
    # batch-norm statistics were recomputed for the averaged weights
    assert not torch.equal(res.swa_weights["body.0.1.running_mean"], snaps[5]["body.0.1.running_mean"])


def test_snapshot_ensemble_and_swa_in_the_report(tmp_path):
    res = methodo.run(str(EXAMPLES / "iris.yaml"),
                      [*FAST[1:], "train.epochs=4", "explain.enabled=false", "train.early_stopping=null",
                       "train.scheduler={name: cosine_restarts, T_0: 2}", "train.swa={start: 3}"],
                      out=tmp_path / "s")
    ens = res.summary["ensembles"]
    assert ens["snapshot"]["members"] == 2 and ens["snapshot"]["epochs"] == [2, 4]
    assert ens["swa"]["epochs_averaged"] == 2
    for name in ("snapshot", "swa"):
        assert 0.6 < ens[name]["metrics"]["test"]["accuracy"] <= 1.0
    ckpts = {p.name for p in (tmp_path / "s" / "checkpoints").iterdir()}
    assert {"snapshot_1.safetensors", "snapshot_2.safetensors", "swa.safetensors"} <= ckpts
    html = (tmp_path / "s" / "report.html").read_text()
    assert 'id="ensembles"' in html and "snapshot ensemble (2 members, epochs 2, 4)" in html
    # the snapshot ensemble's test accuracy is that of the mean of its members' probabilities
    from methodo.evaluate import compute_metrics
    from methodo.train.swa import ensemble_predict

    net = build_model("mlp", input_shape=(4,), n_outputs=3, hidden=(32,))
    cfg = methodo.load_config(tmp_path / "s" / "config.yaml")
    data = prepare(load_dataset(cfg.data), cfg.data, seed=0)
    ws = [load_checkpoint(tmp_path / "s" / "checkpoints" / f"snapshot_{k}.safetensors")[0] for k in (1, 2)]
    X = data.tensors["test"][0]
    p = ensemble_predict(net, ws, X, task="classification")
    singles = []
    for w in ws:
        net.load_state_dict(w)
        net.eval()
        singles.append(net(X).softmax(1).detach().numpy())
    np.testing.assert_allclose(p, (singles[0] + singles[1]) / 2, rtol=1e-5)
    assert compute_metrics("classification", p, data.raw_y["test"], 3) == ens["snapshot"]["metrics"]["test"]


def test_snapshot_ensemble_needs_cycles():
    from methodo.errors import ConfigError

    with pytest.raises(ConfigError, match="snapshot ensembles need cycles"):
        methodo.load_config(EXAMPLES / "digits.yaml", ["train.snapshot_ensemble=true"])


def test_monitor_records_quantiles_and_dead_units():
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with torch.no_grad():
        net[0].bias[:3] = -100.0  # three units that can never fire
    x = torch.randn(64, 4)
    net(x).sum().backward()
    mon = WeightMonitor(net)
    row = mon.record(1, net, x)
    assert row["dead_relu"] == {"1": pytest.approx(3 / 8)}
    w = net[0].weight.detach().flatten()
    q = row["layers"]["0.weight"]["w_q"]
    assert q[0] == pytest.approx(float(w.min())) and q[-1] == pytest.approx(float(w.max()))
    assert q[3] == pytest.approx(float(w.quantile(0.5)))
    assert row["layers"]["2.weight"]["g_rms"] == pytest.approx(float(net[2].weight.grad.pow(2).mean().sqrt()))
    assert "0.bias" not in row["layers"]


@pytest.mark.parametrize("every,epochs,early,expected", [
    ("auto", 9, None, [0, 4, 8, 9]),  # 16 steps per epoch: every ⌈64 / 16⌉ = 4 epochs, and the last
    (3, 7, None, [0, 3, 6, 7]),
    (1, 3, None, [0, 1, 2, 3]),
    # early stopping between two records: the epoch it stops at is recorded too (probe forward)
    (4, 30, {"monitor": "val_loss", "patience": 1, "min_delta": 10.0}, [0, 2]),
])
def test_monitor_records_every_k_epochs_and_the_last(every, epochs, early, expected):
    cfg, data, net = _setup(epochs, monitor={"every": every}, early_stopping=early)
    X, y = data.tensors["train"]
    data.tensors["train"] = (torch.cat([X] * 6)[:1024], torch.cat([y] * 6)[:1024])  # 16 batches of 64
    res = fit(net, data, cfg.train, seed=0)
    assert [m["epoch"] for m in res.monitor] == expected
    assert all(m["dead_relu"] for m in res.monitor)  # every record counts dead units, the first and last too
    assert all("g_q" in st for m in res.monitor[1:] for st in m["layers"].values())
    assert res.monitor[-1]["epoch"] == res.history[-1]["epoch"] == len(res.history)


def test_monitor_every_is_validated():
    from methodo.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train\.monitor\.every"):
        methodo.load_config(EXAMPLES / "digits.yaml", ["train.monitor.every=0"])
    assert methodo.load_config(EXAMPLES / "digits.yaml", ["train.monitor.every=5"]).train.monitor.every == 5


def test_monitoring_changes_nothing_in_training():
    runs = []
    for on in (True, False):
        cfg, data, net = _setup(2, monitor={"enabled": on})
        fit(net, data, cfg.train, seed=0)
        runs.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert torch.equal(*runs)


def _mon(epochs_w, epochs_g=None, dead=None):
    rows = []
    for e, w in enumerate(epochs_w):
        layers = {"a.weight": {"w_q": [0] * 7, "w_rms": w[0]}, "b.weight": {"w_q": [0] * 7, "w_rms": w[1]}}
        if epochs_g and e > 0:
            layers["a.weight"]["g_rms"], layers["b.weight"]["g_rms"] = epochs_g[e - 1]
        rows.append({"epoch": e, "layers": layers, "dead_relu": dead or {}})
    return rows


@pytest.mark.parametrize("monitor,expected", [
    (_mon([(1, 1), (1.1, 0.9), (1.2, 0.9)], [(1e-2, 1e-2), (1e-2, 1e-2)], {"r": 0.1}), set()),
    (_mon([(1, 1), (5, 1), (30, 1)], [(1e-2, 1e-2), (1e-2, 1e-2)]), {"exploding_weights"}),
    (_mon([(1, 1), (0.1, 1), (0.005, 1)], [(1e-2, 1e-2), (1e-2, 1e-2)]), {"vanishing_weights"}),
    (_mon([(1, 1), (1, 1), (1, 1)], [(1e-2, 1e-2), (1e3, 1e-2)]), {"exploding_gradients"}),
    (_mon([(1, 1), (1, 1), (1, 1)], [(1e-2, 1e-2), (1e-9, 1e-2)]), {"vanishing_gradients"}),
    (_mon([(1, 1), (1, 1)], [(1e-2, 1e-2)], {"body.2": 0.95}), {"dead_relu"}),
])
def test_monitor_findings(monitor, expected):
    found = {f.id for f in dg.diagnose(dg.Facts(task="classification", monitor=monitor))}
    assert found & {"exploding_weights", "vanishing_weights", "exploding_gradients", "vanishing_gradients",
                    "dead_relu"} == expected
    for f in dg.diagnose(dg.Facts(task="classification", monitor=monitor)):
        if f.id in expected:
            assert f.evidence["layer"] and f.action


def test_exploding_weights_found_in_a_real_run(tmp_path):
    # Adam at lr=1 on iris: the head's weights grow tens of times over their initial size
    res = methodo.run(str(EXAMPLES / "iris.yaml"),
                      [*FAST[1:], "train.epochs=3", "explain.enabled=false", "train.optimizer={name: adam, lr: 1.0}",
                       "train.early_stopping=null", "train.monitor.every=1"], out=tmp_path / "d")
    mon = json.loads((tmp_path / "d" / "monitor.json").read_text())
    assert [m["epoch"] for m in mon] == [0, 1, 2, 3]  # epoch 0: the initialization
    assert set(mon[1]["layers"]) == {"body.1.weight", "head.weight"} and "body.2" in mon[1]["dead_relu"]
    found = {f["id"]: f for f in res.findings}
    assert "exploding_weights" in found, res.findings
    ev = found["exploding_weights"]["evidence"]
    assert ev["growth"] > 10 and ev["growth"] == pytest.approx(
        mon[-1]["layers"][ev["layer"]]["w_rms"] / mon[0]["layers"][ev["layer"]]["w_rms"], rel=1e-3)
    assert (tmp_path / "d" / "figures" / "weights.png").stat().st_size > 10_000
    assert "Weight and gradient distributions" in (tmp_path / "d" / "report.html").read_text()
