"""Hypergradient descent on the learning rate (Baydin et al. 2018): train.optimizer.hypergradient for SGD and Adam."""

from __future__ import annotations

import csv

import pytest
import torch

from conftest import EXAMPLES, FAST, cli_inproc


def _quadratic_lrs(name: str, lr: float, beta: float, steps: int = 40) -> tuple[list[float], torch.Tensor]:
    from methodo.train.optim import build_optimizer

    theta = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    opt = build_optimizer([theta], name, lr, {}, hypergradient=beta)
    lrs = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (theta ** 2).sum()).backward()  # f = ½‖θ‖², curvature 1: SGD is stable for lr < 2
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs, theta.detach()


def test_sgd_hd_raises_a_small_lr_and_lowers_an_oscillating_one():
    up, theta = _quadratic_lrs("sgd", 0.01, 0.01)
    assert up[-1] > 10 * up[0] and theta.abs().max() < 1e-3  # agreeing gradients: the LR grows, and it converges
    down, theta = _quadratic_lrs("sgd", 1.9, 0.01)
    assert down[-1] < 1.9 * 0.9 and theta.abs().max() < 1e-3  # lr 1.9 oscillates: the LR falls


def test_adam_hd_adapts_its_lr_and_plain_adam_does_not_move_it():
    from methodo.train.optim import build_optimizer

    lrs, _ = _quadratic_lrs("adam", 0.01, 1e-3)
    assert lrs[-1] != pytest.approx(0.01) and all(v >= 0 for v in lrs)
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], "adam", 0.01, {})
    assert type(opt) is torch.optim.Adam  # without hypergradient: torch's own class


def test_hypergradient_config_is_checked(capsys):
    from methodo.config import load_config

    cfg = load_config(EXAMPLES / "iris.yaml", ["train.optimizer.hypergradient.beta=0.001"])
    assert cfg.train.optimizer.hypergradient.beta == 0.001 and "hypergradient" not in cfg.train.optimizer.options
    assert "hypergradient" not in load_config(EXAMPLES / "iris.yaml").to_dict()["train"]["optimizer"]
    for overrides, expect in (
        (["train.optimizer.name=adamw", "train.optimizer.hypergradient.beta=0.1"], "applies to 'sgd' or 'adam'"),
        (["train.scheduler=cosine", "train.optimizer.hypergradient.beta=0.1"], "use train.scheduler.name=none"),
        (["train.optimizer.hypergradient.beta=-1"], "greater than 0"),
        (["train.optimizer.hypergradient.gamma=1"], "required key is missing"),
    ):
        code, _, err = cli_inproc(capsys, "run", str(EXAMPLES / "iris.yaml"), *FAST, *overrides)
        assert code == 2 and "train.optimizer.hypergradient" in err and expect in err, (overrides, err)


def test_a_run_with_hypergradient_logs_its_lr_trajectory(tmp_path):
    import methodo

    res = methodo.run(EXAMPLES / "iris.yaml", [*FAST, "train.threads=1", "train.epochs=4", "evaluate.bootstrap=0",
                                               "explain.enabled=false", "train.optimizer.name=sgd",
                                               "train.optimizer.lr=0.01", "train.optimizer.hypergradient.beta=0.01"],
                      out=tmp_path / "r")
    assert res.status == "finished"
    with open(res.run_dir / "steps.csv", newline="") as fh:
        lrs = [float(r["lr"]) for r in csv.DictReader(fh)]
    assert lrs[0] == 0.01 and len(set(lrs)) > len(lrs) // 2  # the LR moves at (nearly) every step
    assert max(lrs) > 0.01  # from a small LR, agreeing gradients raise it
