"""The LR range test: ramp, divergence stop, restoration, suggestions, CLI and lr=auto."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml

import methodo
from methodo.config import validate
from methodo.data import load_dataset, prepare
from methodo.models import build_model
from methodo.train.lr_find import lr_range_test, suggest, valley_index, zero_phase

from conftest import EXAMPLES, cli


def _setup(source="iris", model="mlp", **train):
    opts = {"name": model, "hidden": [16]} if model == "mlp" else {"name": model, "width": 8}
    cfg = validate({"data": {"source": source}, "model": opts, "seed": 0,
                    "train": {"batch_size": 16, "progress": False, **train}})
    ds = load_dataset(cfg.data)
    data = prepare(ds, cfg.data, seed=0)
    torch.manual_seed(0)
    net = build_model(cfg.model.name, input_shape=ds.input_shape, n_outputs=data.n_outputs, kind=ds.kind,
                      **cfg.model.options)
    return cfg, data, net


def test_ramp_is_exponential_and_stops_on_divergence():
    cfg, data, net = _setup(optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9},
                            lr_find={"start_lr": 1e-5, "end_lr": 1e3, "num_iter": 60})
    res = lr_range_test(net, data, cfg.train, seed=0)
    ratios = np.diff(np.log(res.lrs))
    np.testing.assert_allclose(ratios, math.log(1e8) / 59, rtol=1e-9)  # a constant factor per step
    assert res.diverged and len(res.lrs) < 60  # 1e3 with momentum blows up before the end
    assert res.smoothed[-1] > 4.0 * min(res.smoothed) or not math.isfinite(res.losses[-1])
    assert res.lrs[0] == pytest.approx(1e-5)
    for name, lr in res.suggestions.items():
        assert res.lrs[0] <= lr <= res.lrs[-1], name
    assert res.suggested_lr == res.suggestions["steepest"]


def test_model_optimizer_and_rngs_are_restored():
    cfg, data, net = _setup(source="digits", model="cnn", optimizer={"name": "adam", "lr": 0.01},
                            lr_find={"num_iter": 20, "end_lr": 1.0})
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    net(data.tensors["train"][0][:8]).sum().backward()
    opt.step()  # a non-empty optimizer state
    before_w = {k: v.clone() for k, v in net.state_dict().items()}  # incl. batch-norm running stats
    before_opt = opt.state_dict()
    before_exp_avg = [s["exp_avg"].clone() for s in opt.state.values()]
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    res = lr_range_test(net, data, cfg.train, seed=0, optimizer=opt)
    assert len(res.lrs) >= 5
    assert torch.equal(torch.rand(3), expected_draw)  # the RNG stream is where it was
    for k, v in net.state_dict().items():
        assert torch.equal(v, before_w[k]), k
    assert opt.param_groups[0]["lr"] == 0.01 and opt.state_dict()["param_groups"] == before_opt["param_groups"]
    assert all(torch.equal(a, s["exp_avg"]) for a, s in zip(before_exp_avg, opt.state.values()))


def test_suggestions_on_a_known_curve():
    # loss = 2 - tanh(log10(lr) + 2): falls fastest at lr = 1e-2, flat at both ends, then diverges
    lrs = list(np.logspace(-6, 1, 120))
    losses = [2 - math.tanh(math.log10(lr) + 2) + (0 if lr < 1 else 10 * (lr - 1)) for lr in lrs]
    s, curve = suggest(lrs, losses, beta=0.0)
    assert s["steepest"] == pytest.approx(1e-2, rel=0.15)
    lo = int(np.argmin(curve))
    assert s["min_div10"] == pytest.approx(lrs[lo] / 10)
    assert lrs[0] < s["valley"] < lrs[lo]
    assert valley_index([5.0, 4.0, 3.0, 2.0, 1.0, 3.0, 9.0]) == 1


def test_zero_phase_smoothing_does_not_lag():
    x = np.r_[np.ones(50), np.zeros(50)]  # a step down at index 50
    one_way, both = [], zero_phase(list(x), 0.9)
    avg = 0.0
    for i, v in enumerate(x):
        avg = 0.9 * avg + 0.1 * v
        one_way.append(avg / (1 - 0.9 ** (i + 1)))
    cross = lambda c: int(np.argmax(np.asarray(c) < 0.5))
    assert abs(cross(both) - 50) <= 1  # centred on the step
    assert cross(one_way) - 50 >= 5  # a one-way average trails it


def test_cli_lr_find_writes_json_and_plot_and_prints_the_lr(tmp_path):
    out = tmp_path / "lf"
    res = cli("lr-find", str(EXAMPLES / "iris.yaml"), "train.lr_find.num_iter=40", "--out", str(out))
    assert res.returncode == 0, res.stderr
    found = json.loads((out / "lr_find.json").read_text())
    assert found["suggestion"] == "steepest" and found["suggested_lr"] > 0
    assert set(found["suggestions"]) == {"steepest", "valley", "min_div10"}
    assert len(found["lrs"]) == len(found["losses"]) == len(found["centred"]) <= 40
    printed = [l for l in res.stdout.splitlines() if l.startswith("suggested_lr:")]
    assert printed and float(printed[0].split()[1]) == pytest.approx(found["suggested_lr"], rel=1e-3)
    png = (out / "lr_find.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    bad = cli("lr-find", str(EXAMPLES / "iris.yaml"), "train.lr_find.end_lr=1e-9")
    assert bad.returncode == 2 and "end_lr must be above start_lr" in bad.stderr


def test_lr_auto_trains_exactly_as_the_suggested_number(tmp_path):
    over = ["train.epochs=3", "track.mlflow=false", "train.progress=false", "explain.enabled=false",
            "train.lr_find.num_iter=40"]
    auto = methodo.run(str(EXAMPLES / "iris.yaml"), [*over, "train.optimizer.lr=auto"], out=tmp_path / "a")
    lr = auto.summary["lr_find"]["suggested_lr"]
    assert auto.summary["lr_find"]["applied_to"] == ["train.optimizer.lr"]
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert saved["train"]["optimizer"]["lr"] == lr  # the resolved number, so --resume does not re-run it
    assert (tmp_path / "a" / "figures" / "lr_find.png").is_file() and (tmp_path / "a" / "lr_find.json").is_file()
    assert 'id="lr-find"' in (tmp_path / "a" / "report.html").read_text()
    fixed = methodo.run(str(EXAMPLES / "iris.yaml"), [*over, f"train.optimizer.lr={lr!r}"], out=tmp_path / "b")
    assert auto.metrics == fixed.metrics  # the range test left no trace: same weights, same RNG
    assert auto.summary["timings"]["lr_find"] > 0 and "lr_find" not in fixed.summary["timings"]


def test_onecycle_max_lr_auto(tmp_path):
    over = ["train.epochs=2", "track.mlflow=false", "train.progress=false", "explain.enabled=false",
            "train.lr_find.num_iter=30", "train.scheduler={name: onecycle, max_lr: auto}"]
    res = methodo.run(str(EXAMPLES / "iris.yaml"), over, out=tmp_path / "o")
    lr = res.summary["lr_find"]["suggested_lr"]
    saved = yaml.safe_load((tmp_path / "o" / "config.yaml").read_text())
    assert saved["train"]["scheduler"]["max_lr"] == lr and saved["train"]["optimizer"]["lr"] == 0.01
    steps = [float(r.split(",")[2]) for r in (tmp_path / "o" / "steps.csv").read_text().splitlines()[1:]]
    assert max(steps) == pytest.approx(lr, rel=0.05)  # the one-cycle peak is the suggestion
