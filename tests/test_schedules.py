"""The scheduler contract, run over every registered scheduler (and each with a warmup before it)."""

from __future__ import annotations

import math

import pytest
import torch

from methodo.config import validate
from methodo.data import load_dataset, prepare
from methodo.errors import ConfigError
from methodo.models import build_model
from methodo.train.loop import fit
from methodo.train.schedules import SCHEDULERS, build_schedule, check_scheduler_options

EPOCHS, SPE = 6, 5  # 6 epochs of 5 optimizer steps


def _opt():
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    return torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)


def _drive(sched, opt, epochs, monitored=lambda e: 1.0, start_epoch=1):
    """The loop's calling pattern: after_step per optimizer step, after_epoch per epoch; LRs used."""
    used = []
    for e in range(start_epoch, epochs + 1):
        for _ in range(SPE):
            used.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.after_step()
        sched.after_epoch(monitored(e))
    return used


@pytest.mark.parametrize("warmup", [{}, {"warmup_epochs": 1}], ids=["plain", "warmup"])
@pytest.mark.parametrize("name", SCHEDULERS.names())
def test_scheduler_contract(name, warmup):
    entry = SCHEDULERS.entry(name)
    assert entry.help and entry.meta["interval"] in ("step", "epoch", "plateau")
    check_scheduler_options(name, dict(warmup))  # its defaults validate
    # plateau sees a stalled monitor; the others a falling one
    mon = (lambda e: 1.0) if name == "plateau" else (lambda e: 1.0 / e)

    # 1. The LR used by every step is finite and positive.
    opt = _opt()
    full = _drive(build_schedule(opt, name, dict(warmup), epochs=EPOCHS, steps_per_epoch=SPE), opt, EPOCHS, mon)
    assert len(full) == EPOCHS * SPE
    assert all(math.isfinite(lr) and lr > 0 for lr in full), full

    # 2. state_dict round-trip: stop after 3 epochs, rebuild, load, continue: the same LR curve.
    opt_a = _opt()
    a = build_schedule(opt_a, name, dict(warmup), epochs=EPOCHS, steps_per_epoch=SPE)
    first = _drive(a, opt_a, 3, mon)
    state, opt_state = a.state_dict(), opt_a.state_dict()
    opt_b = _opt()
    b = build_schedule(opt_b, name, dict(warmup), epochs=EPOCHS, steps_per_epoch=SPE)
    opt_b.load_state_dict(opt_state)
    b.load_state_dict(state)
    rest = _drive(b, opt_b, EPOCHS, mon, start_epoch=4)
    assert first + rest == pytest.approx(full, rel=1e-12, abs=0)

    # 3. Per-step vs per-epoch semantics (after the warmup).
    w = SPE if warmup else 0
    epochs = [full[i:i + SPE] for i in range(w, len(full), SPE)]
    if entry.meta["interval"] in ("epoch", "plateau"):
        assert all(len(set(ep)) == 1 for ep in epochs), epochs  # constant within each epoch
    if entry.meta["interval"] == "step":
        assert len(set(epochs[0])) > 1, epochs[0]  # changes within the first epoch
    if name == "none":
        assert set(full[w:]) == {0.1}
    elif name == "plateau":
        assert min(full) < 0.1  # a stalled monitor lowers the LR
    else:
        assert len(set(full[w:])) > 1


@pytest.mark.parametrize("name", SCHEDULERS.names())
def test_warmup_rises_linearly_to_the_schedulers_start(name):
    opt = _opt()
    sched = build_schedule(opt, name, {"warmup_steps": 4, "warmup_start_factor": 0.2}, epochs=EPOCHS,
                           steps_per_epoch=SPE)
    start = sched.targets[0]  # the scheduler's own first LR
    used = _drive(sched, opt, 1)
    assert used[:5] == pytest.approx([start * f for f in (0.2, 0.4, 0.6, 0.8, 1.0)])


def test_each_scheduler_in_the_loop_steps_at_its_frequency():
    cfg = validate({"data": {"source": "iris"}, "model": {"name": "mlp", "hidden": [8]},
                    "train": {"epochs": 3, "batch_size": 16, "progress": False, "early_stopping": None}})
    data = prepare(load_dataset(cfg.data), cfg.data, seed=0)
    steps = math.ceil(len(data.indices["train"]) / 16)
    for name in SCHEDULERS.names():
        interval = SCHEDULERS.entry(name).meta["interval"]
        tc = cfg.train.model_copy(update={"scheduler": cfg.train.scheduler.model_validate({"name": name})})
        torch.manual_seed(0)
        net = build_model("mlp", input_shape=(4,), n_outputs=3, hidden=(8,))
        res = fit(net, data, tc, seed=0)
        assert len(res.lrs) == 3 * steps, name
        per_epoch = [res.lrs[i * steps:(i + 1) * steps] for i in range(3)]
        if interval == "step":
            e = per_epoch[0]
            assert all(a != b for a, b in zip(e, e[1:])), (name, e)  # a new LR at every step
        else:
            assert all(len(set(e)) == 1 for e in per_epoch), name
        assert [r["lr"] for r in res.history] == [e[-1] for e in per_epoch]  # the report's LR column


def test_cyclic_modes_and_cosine_restart_cycles():
    shapes = {}
    for mode in ("triangular", "triangular2", "exp_range"):
        opt = _opt()
        s = build_schedule(opt, "cyclic", {"mode": mode, "step_size_up": 5, "gamma": 0.9}, epochs=EPOCHS,
                           steps_per_epoch=SPE)
        lrs = _drive(s, opt, EPOCHS)
        shapes[mode] = lrs
        assert min(lrs) == pytest.approx(0.01)  # base_lr = lr/10
        if mode != "exp_range":
            assert lrs[5] == pytest.approx(0.1)  # first peak = the optimizer lr
    assert shapes["triangular"][15] == pytest.approx(0.1)  # second peak: same height
    assert shapes["triangular2"][15] == pytest.approx(0.01 + 0.09 / 2)  # halved
    # exp_range: the amplitude decays as gamma**step
    assert shapes["exp_range"][5] == pytest.approx(0.01 + 0.09 * 0.9**5)
    assert shapes["exp_range"][15] == pytest.approx(0.01 + 0.09 * 0.9**15)
    opt = _opt()
    s = build_schedule(opt, "cosine_restarts", {"T_0": 2}, epochs=EPOCHS, steps_per_epoch=SPE)
    lrs = _drive(s, opt, EPOCHS)
    restarts = [i for i in range(1, len(lrs)) if lrs[i] > lrs[i - 1]]
    assert restarts == [10, 20]  # a new cycle every 2 epochs of 5 steps
    opt = _opt()
    s = build_schedule(opt, "cosine_restarts", {"T_0": 1, "T_mult": 2, "warmup_steps": 3}, epochs=EPOCHS,
                       steps_per_epoch=SPE)
    ends = [i + 1 for i in range(EPOCHS * SPE) if s.after_step()]
    assert ends == [3 + 5, 3 + 5 + 10]  # after the warmup: cycles of 5 then 10 steps


@pytest.mark.parametrize("name,options,needle", [
    ("cyclic", {"mode": "zigzag"}, "mode must be"),
    ("cosine", {"warmup_epochs": -1}, "warmup_epochs must be an integer"),
    ("step", {"warmup_start_factor": 2.0}, "warmup_start_factor"),
    ("cosine_restarts", {"T_0": 0.5}, "T_0"),
    ("onecycle", {"max_lr": "fast"}, "max_lr"),
])
def test_bad_scheduler_options_are_config_errors(name, options, needle):
    with pytest.raises(ConfigError) as exc:
        check_scheduler_options(name, options)
    assert needle in str(exc.value) or needle == exc.value.key
