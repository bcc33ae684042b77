"""Regularization and clipping: a contract over every registered regularizer, then each in the loop."""

from __future__ import annotations

import math

import pytest
import torch

from methodo.config import RegularizationConfig, ClipConfig, validate
from methodo.errors import ConfigError
from methodo.data import load_dataset, prepare
from methodo.models import build_model
from methodo.train.loop import fit
from methodo.train.regularize import REGULARIZERS, Regularization, decayed, grad_norm, soft_threshold_

CONFIG_FIELDS = {"train.regularization": RegularizationConfig.model_fields, "train.clip": ClipConfig.model_fields}


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(6, 3))


def _snapshot(net):
    return [p.detach().clone() for p in net.parameters()]


def _apply(name: str, strength: float):
    """Apply regularizer ``name`` at ``strength`` in its stage; returns (net, before, observed value)."""
    entry = REGULARIZERS.entry(name)
    net = _net()
    x, y = torch.randn(8, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    net(x).sum().backward() if entry.meta["stage"] == "gradient" else None
    before = _snapshot(net)
    stage = entry.meta["stage"]
    if stage == "loss":
        return net, before, float(entry.obj(decayed(net), strength).detach())
    if stage == "before_step":
        entry.obj(decayed(net), strength, lr=0.5)
    elif stage == "after_step":
        entry.obj(decayed(net), strength if strength else 1e9)  # 0 would zero the weights: "off" is no call
    elif stage == "model":
        entry.obj(net, strength)
        return net, before, net[2].p
    elif stage == "criterion":
        confident = torch.nn.functional.one_hot(y, 3).float() * 10  # right and sure of it
        return net, before, float(entry.obj(confident, y, strength))
    elif stage == "gradient":
        g_before = [p.grad.clone() for p in net.parameters()]
        pre = entry.obj(list(net.parameters()), strength if strength else 1e9)
        return net, g_before, float(pre)
    return net, before, None


@pytest.mark.parametrize("name", REGULARIZERS.names())
def test_regularizer_contract(name):
    entry = REGULARIZERS.entry(name)
    # 1. documented: help text, a stage, and the config key that turns it on
    assert entry.help and entry.meta["stage"] in ("loss", "criterion", "model", "gradient", "before_step", "after_step")
    section, key = entry.meta["key"].rsplit(".", 1)
    assert key in CONFIG_FIELDS[section], entry.meta["key"]
    assert CONFIG_FIELDS[section][key].description
    # 2. off (strength 0) changes nothing; on (its example strength) changes what its stage acts on
    net0, before0, v0 = _apply(name, 0.0)
    net1, before1, v1 = _apply(name, entry.meta["example"])
    stage = entry.meta["stage"]
    if stage == "loss":
        assert v0 == 0.0 and v1 > 0
    elif stage in ("before_step", "after_step"):
        assert all(torch.equal(a, b) for a, b in zip(before0, net0.parameters()))
        changed = [not torch.equal(a, b) for a, b in zip(before1, net1.parameters())]
        assert any(changed)
        # only weights of dim >= 2 are touched, never biases
        assert not any(c for c, p in zip(changed, net1.parameters()) if p.ndim < 2)
    elif stage == "model":
        assert v0 == 0.0 and v1 == entry.meta["example"]
    elif stage == "criterion":
        assert v1 > v0  # smoothing penalizes confident logits
    elif stage == "gradient":
        grads0 = [p.grad for p in net0.parameters()]
        assert all(torch.equal(a, b) for a, b in zip(before0, grads0))
        assert v1 == pytest.approx(v0) and v1 > 0  # the pre-clip norm is returned either way
        assert any(not torch.equal(a, p.grad) for a, p in zip(before1, net1.parameters()))


def test_penalty_values_and_decoupled_decay_formula():
    net = _net()
    W = decayed(net)
    assert len(W) == 2  # the two Linear weights, not the biases
    l1 = REGULARIZERS.get("l1")(W, 0.01).detach()
    l2 = REGULARIZERS.get("l2")(W, 0.01).detach()
    assert float(l1) == pytest.approx(0.01 * sum(float(w.detach().abs().sum()) for w in W), rel=1e-6)
    assert float(l2) == pytest.approx(0.005 * sum(float(w.detach().pow(2).sum()) for w in W), rel=1e-6)
    before = [w.clone() for w in W]
    REGULARIZERS.get("decoupled_wd")(W, 0.1, lr=0.5)
    for b, w in zip(before, W):
        torch.testing.assert_close(w, b * (1 - 0.05))


def test_max_norm_bounds_every_unit():
    w = torch.nn.Parameter(torch.randn(5, 3, 3, 3) * 4)
    REGULARIZERS.get("max_norm")([w], 1.5)
    norms = w.detach().flatten(1).norm(dim=1)
    assert norms.max() <= 1.5 + 1e-5 and norms.min() > 0


def test_decoupled_wd_equals_adamw():
    """Our decoupled decay before an Adam step is AdamW's, to float precision."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 3, bias=False)
    b.load_state_dict(a.state_dict())
    oa = torch.optim.AdamW(a.parameters(), lr=0.1, weight_decay=0.2)
    ob = torch.optim.Adam(b.parameters(), lr=0.1)
    for _ in range(5):
        x = torch.randn(4, 3)
        for net, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            net(x).pow(2).sum().backward()
        oa.step()
        REGULARIZERS.get("decoupled_wd")([b.weight], 0.2, lr=0.1)
        ob.step()
    torch.testing.assert_close(a.weight, b.weight)


def _setup(**train):
    cfg = validate({"data": {"source": "iris"}, "model": {"name": "mlp", "hidden": [16], "dropout": 0.0},
                    "seed": 0, "train": {"epochs": 3, "batch_size": 16, "progress": False,
                                         "early_stopping": None, **train}})
    ds = load_dataset(cfg.data)
    data = prepare(ds, cfg.data, seed=0)
    torch.manual_seed(0)
    net = build_model("mlp", input_shape=ds.input_shape, n_outputs=3, hidden=(16,), dropout=0.0)
    return cfg, data, net


def _weight_rms(net):
    return math.sqrt(sum(float(w.detach().pow(2).sum()) for w in decayed(net)) / sum(w.numel() for w in decayed(net)))


@pytest.mark.parametrize("reg", [{"l2": 0.5}, {"l1": 0.05}, {"decoupled_wd": 2.0}, {"max_norm": 0.3}])
def test_each_regularizer_shrinks_weights_in_the_loop(reg):
    cfg, data, net = _setup(optimizer={"name": "sgd", "lr": 0.1})
    fit(net, data, cfg.train, seed=0)
    plain = _weight_rms(net)
    cfg, data, net = _setup(optimizer={"name": "sgd", "lr": 0.1}, regularization=reg)
    res = fit(net, data, cfg.train, seed=0)
    assert _weight_rms(net) < 0.9 * plain, reg
    if "max_norm" in reg:
        for w in decayed(net):
            assert w.detach().flatten(1).norm(dim=1).max() <= 0.3 + 1e-5
    assert math.isfinite(res.history[-1]["train_loss"])


def test_dropout_and_label_smoothing_from_config():
    cfg, data, net = _setup(regularization={"dropout": 0.35, "label_smoothing": 0.2},
                            optimizer={"name": "adam", "lr": 0.05}, epochs=15)
    res = fit(net, data, cfg.train, seed=0)
    rates = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates and set(rates) == {0.35}
    # the smoothed training loss cannot go below the entropy of the smoothed target ...
    on, off = 1 - 0.2 + 0.2 / 3, 0.2 / 3
    floor = -(on * math.log(on) + 2 * off * math.log(off))
    assert min(r["train_loss"] for r in res.history) > floor - 1e-6
    # ... while the validation loss is the plain cross-entropy, which can
    assert min(r["val_loss"] for r in res.history) < floor


@pytest.mark.parametrize("clip", [{"norm": 0.05}, {"value": 0.001}])
def test_clipping_logs_the_pre_clip_norm_every_step(clip):
    cfg, data, net = _setup(optimizer={"name": "sgd", "lr": 0.5}, clip=clip)
    res = fit(net, data, cfg.train, seed=0)
    assert len(res.grad_norms) == len(res.lrs) > 0  # one pre-clip norm per optimizer step
    assert all(math.isfinite(g) and g > 0 for g in res.grad_norms)
    if "norm" in clip:
        assert sum(g > 0.05 for g in res.grad_norms) > len(res.grad_norms) // 2  # logged before clipping
    # the step applied is bounded by the clip: SGD without momentum moves each weight by lr * clipped grad
    cfg, data, net = _setup(optimizer={"name": "sgd", "lr": 0.5}, clip=clip, epochs=1)
    w0 = [p.detach().clone() for p in net.parameters()]
    tc = cfg.train.model_copy(update={"batch_size": 104})  # one full batch: one step
    fit(net, data, tc, seed=0)
    delta = [p.detach() - a for p, a in zip(net.parameters(), w0)]
    if "norm" in clip:
        total = math.sqrt(sum(float(d.pow(2).sum()) for d in delta))
        assert total <= 0.5 * 0.05 * (1 + 1e-4)
    else:
        assert max(float(d.abs().max()) for d in delta) <= 0.5 * 0.001 * (1 + 1e-4)


def test_grad_norm_matches_torch():
    net = _net()
    net(torch.randn(4, 4)).sum().backward()
    ref = torch.nn.utils.clip_grad_norm_(net.parameters(), 1e9)
    assert float(grad_norm(list(net.parameters()))) == pytest.approx(float(ref))


# --------------------------------------------------------------------------- L1: penalty or proximal


def _prox(l1: float, method: str = "proximal"):
    return Regularization(torch.nn.Linear(1, 1), RegularizationConfig(l1=l1, l1_method=method), ClipConfig())


def test_soft_threshold_formula_with_each_group_lr():
    """One proximal step, λ = 0.25, by hand: w ← sign(w)·max(|w| − lr·λ, 0) with each group's own LR
    (0.5 → threshold 0.125, 0.25 → 0.0625); biases and other 1-D parameters are not touched."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2), torch.nn.Linear(2, 3))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.75, -0.0625, 0.125], [-0.5, 0.0, 1.0]]))
        net[2].weight.copy_(torch.tensor([[0.75, -0.0625], [0.125, -0.5], [0.0, -1.0]]))
        net[0].bias.copy_(torch.tensor([0.01, -0.01]))  # below both thresholds: zeroed if it were touched
    reg = Regularization(net, RegularizationConfig(l1=0.25, l1_method="proximal"), ClipConfig())
    assert reg.has_prox and reg.has_after and not reg.has_penalty  # the L1 term left the loss
    opt = torch.optim.SGD([{"params": net[0].parameters(), "lr": 0.5},
                           {"params": [*net[1].parameters(), *net[2].parameters()], "lr": 0.25}])
    reg.bind(opt)
    ones = [p.detach().clone() for p in (net[0].bias, net[1].weight, net[1].bias, net[2].bias)]
    for p in net.parameters():
        p.grad = torch.zeros_like(p)  # the SGD step moves nothing: what changes is the proximal step's
    opt.step()
    reg.after_step()
    assert torch.equal(net[0].weight.detach(), torch.tensor([[0.625, 0.0, 0.0], [-0.375, 0.0, 0.875]]))
    assert torch.equal(net[2].weight.detach(), torch.tensor([[0.6875, 0.0], [0.0625, -0.4375], [0.0, -0.9375]]))
    after = (net[0].bias, net[1].weight, net[1].bias, net[2].bias)
    assert all(torch.equal(a, b.detach()) for a, b in zip(ones, after))  # biases, LayerNorm: untouched
    w = torch.tensor([0.5, -0.05, 0.0, -0.3])
    soft_threshold_([w], 0.0)  # threshold 0: no change
    assert torch.equal(w, torch.tensor([0.5, -0.05, 0.0, -0.3]))


def test_a_zero_weight_stays_zero_while_its_gradient_is_below_lambda():
    """At w = 0 the proximal step is a dead zone of width lr·λ around the SGD step −lr·g: the weight stays
    exactly 0.0 when |g| < λ (for any LR), and moves by lr·(|g| − λ) when |g| > λ."""
    lam, lr = 0.1, 0.5
    w = torch.nn.Parameter(torch.zeros(1, 4))
    reg = Regularization(torch.nn.Sequential(), RegularizationConfig(l1=lam, l1_method="proximal"), ClipConfig())
    reg.weights = [w]
    opt = torch.optim.SGD([w], lr=lr)
    reg.bind(opt)
    for g in ([0.09, -0.09, 0.0, 0.05], [0.09, -0.05, 0.0001, -0.0999]):  # every |g| < λ, twice
        w.grad = torch.tensor([g])
        opt.step()
        reg.after_step()
        assert torch.equal(w.detach(), torch.zeros(1, 4)), g
    w.grad = torch.tensor([[0.25, -0.25, 0.0, 0.0]])
    opt.step()
    reg.after_step()
    assert torch.equal(w.detach(), torch.tensor([[-0.075, 0.075, 0.0, 0.0]]))  # ∓lr·(0.25 − 0.1)


def test_proximal_l1_gives_exact_zeros_where_the_penalty_does_not():
    """The same run (iris, SGD, λ = 0.05, 3 epochs), L1 as a loss penalty and as a proximal step: the penalty
    leaves no weight at exactly 0.0, the proximal step zeroes many; the default is the penalty, bit for bit."""
    runs = {}
    for method in ("penalty", "proximal", None):
        reg = {"l1": 0.05, **({"l1_method": method} if method else {})}
        cfg, data, net = _setup(optimizer={"name": "sgd", "lr": 0.1}, regularization=reg)
        res = fit(net, data, cfg.train, seed=0)
        runs[method] = (torch.cat([w.detach().flatten() for w in decayed(net)]), net, res)
    pen, prox, default = runs["penalty"][0], runs["proximal"][0], runs[None][0]
    assert pen.numel() == prox.numel() == 4 * 16 + 16 * 3
    assert int((pen == 0).sum()) == 0
    assert int((prox == 0).sum()) >= 15  # measured: 20 of 112
    assert torch.equal(default, pen)
    biases = [p for p in runs["proximal"][1].parameters() if p.ndim < 2]
    assert all(int((b == 0).sum()) == 0 for b in biases)  # the proximal step leaves biases alone
    # the logged train_loss is the data loss either way (no penalty added to it); both learn
    assert all(math.isfinite(r[2].history[-1]["train_loss"]) for r in runs.values())
    assert runs["proximal"][2].history[-1]["train_loss"] < runs["proximal"][2].history[0]["train_loss"]


def test_proximal_l1_needs_l1_and_off_is_nothing():
    assert not _prox(0.0).has_prox and not _prox(0.0).has_after  # proximal without a strength: no step
    assert _prox(0.1, "penalty").has_penalty and not _prox(0.1, "penalty").has_prox
    reg = _prox(0.1)
    with pytest.raises(RuntimeError, match="bind"):
        reg.after_step()


@pytest.mark.parametrize("value", ["lasso", "Proximal", 1, None])
def test_l1_method_error_names_the_key_and_the_choices(value):
    with pytest.raises(ConfigError) as exc:
        validate({"data": {"source": "iris"}, "model": {"name": "mlp"},
                  "train": {"regularization": {"l1": 0.1, "l1_method": value}}})
    msg = str(exc.value)
    assert "\n" not in msg and "train.regularization.l1_method" in msg
    assert "'penalty'" in msg and "'proximal'" in msg, msg


def test_lbfgs_refuses_proximal_l1_but_not_the_penalty():
    base = {"data": {"source": "iris"}, "model": {"name": "mlp"}}
    with pytest.raises(ConfigError, match="train.regularization.l1_method.*lbfgs"):
        validate({**base, "train": {"optimizer": {"name": "lbfgs", "lr": 0.1},
                                    "regularization": {"l1": 0.1, "l1_method": "proximal"}}})
    validate({**base, "train": {"optimizer": {"name": "lbfgs", "lr": 0.1}, "regularization": {"l1": 0.1}}})


def test_proximal_step_reads_the_lr_the_optimizer_has_now():
    """The group LRs are read at each step, not when bound: a scheduler's LR and a resume's
    ``load_state_dict`` (which replaces the optimizer's group dicts) are honoured."""
    w = torch.nn.Parameter(torch.tensor([[1.0, -1.0]]))
    reg = Regularization(torch.nn.Sequential(), RegularizationConfig(l1=0.5, l1_method="proximal"), ClipConfig())
    reg.weights = [w]
    opt = torch.optim.SGD([w], lr=0.5)
    reg.bind(opt)
    saved = opt.state_dict()
    saved["param_groups"][0]["lr"] = 0.25
    opt.load_state_dict(saved)  # as a resume does: new group dicts
    w.grad = torch.zeros_like(w)
    opt.step()
    reg.after_step()
    assert torch.equal(w.detach(), torch.tensor([[0.875, -0.875]]))  # threshold 0.25 · 0.5
    opt.param_groups[0]["lr"] = 0.5  # as a scheduler does
    opt.step()
    reg.after_step()
    assert torch.equal(w.detach(), torch.tensor([[0.625, -0.625]]))
