"""The NaN guard: non-finite loss or gradient → stop (naming epoch, step, tensor) or skip the batch;
checkpoints never hold a bad step; the CLI exits 3 with a failed summary."""

from __future__ import annotations

import json
import math

import pytest
import torch

from methodo.config import validate
from methodo.data import load_dataset, prepare
from methodo.train.checkpoint import load_checkpoint
from methodo.train.loop import NonFiniteLoss, fit

from conftest import EXAMPLES, FAST, cli


class Saboteur(torch.nn.Module):
    """An MLP that, on chosen training calls, makes its gradient (or its loss) non-finite.

    ``grad``: adds ``0 * sqrt(0 * w)``: the forward value is exactly 0, so the loss stays
    finite, but the backward pass computes inf * 0 = NaN in ``trap.w``.
    ``loss``: multiplies the output by NaN.
    """

    def __init__(self, bad_calls=(), kind="grad"):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        self.trap = torch.nn.Module()
        self.trap.w = torch.nn.Parameter(torch.ones(1))
        self.bad_calls, self.kind, self.calls = set(bad_calls), kind, 0

    def forward(self, x):
        out = self.body(x)
        if self.training:
            self.calls += 1
            if self.calls in self.bad_calls or "all" in self.bad_calls:
                if self.kind == "grad":
                    out = out + 0 * torch.sqrt(0 * self.trap.w)
                else:
                    out = out * float("nan")
        return out


def _setup(**train):
    cfg = validate({"data": {"source": "iris"}, "model": {"name": "mlp"}, "seed": 0,
                    "train": {"epochs": 4, "batch_size": 16, "progress": False, "early_stopping": None,
                              "optimizer": {"name": "sgd", "lr": 0.1}, **train}})
    return cfg, prepare(load_dataset(cfg.data), cfg.data, seed=0)


def test_non_finite_gradient_stops_at_that_step_and_names_the_tensor(tmp_path):
    cfg, data = _setup(nan_guard={"check_grads": True})
    steps = math.ceil(104 / 16)  # 7 batches per epoch (iris train split: 104 rows)
    net = Saboteur(bad_calls={steps * 2 + 3})  # epoch 3, step 3
    seen = {}

    def on_epoch(row):
        seen[row["epoch"]] = {k: v.clone() for k, v in net.state_dict().items()}

    with pytest.raises(NonFiniteLoss) as exc:
        fit(net, data, cfg.train, seed=0, ckpt_dir=tmp_path, on_epoch=on_epoch)
    e = exc.value
    assert (e.epoch, e.step, e.tensor) == (3, 3, "gradient of trap.w")
    assert "non-finite gradient of trap.w (nan) at epoch 3, step 3" == str(e)
    # nothing of the bad step reached the weights or the checkpoints: last and best are epoch 2's
    w, state, meta = load_checkpoint(tmp_path / "last.safetensors")
    assert meta["epoch"] == 2 and state["epoch"] == 2
    for k, v in seen[2].items():
        assert torch.equal(w[k], v), k
    best, _, best_meta = load_checkpoint(tmp_path / "best.safetensors")
    assert best_meta["epoch"] <= 2 and all(torch.isfinite(v).all() for v in best.values())
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_unchecked_gradient_is_caught_before_any_checkpoint(tmp_path):
    cfg, data = _setup()  # default: gradients unchecked (no clipping, policy stop)
    net = Saboteur(bad_calls={7 + 3})  # epoch 2, step 3
    # the NaN reaches trap.w, which no later loss uses: the weight check at the end of epoch 2 stops it
    with pytest.raises(NonFiniteLoss) as exc:
        fit(net, data, cfg.train, seed=0, ckpt_dir=tmp_path)
    assert (exc.value.epoch, exc.value.step, exc.value.tensor) == (2, 7, "weight trap.w")
    assert load_checkpoint(tmp_path / "last.safetensors")[2]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in load_checkpoint(tmp_path / "last.safetensors")[0].values())


def test_clipping_turns_the_gradient_check_on():
    cfg, data = _setup(clip={"norm": 1.0}, epochs=1)
    with pytest.raises(NonFiniteLoss) as exc:
        fit(Saboteur(bad_calls={3}), data, cfg.train, seed=0)
    assert (exc.value.step, exc.value.tensor) == (3, "gradient of trap.w")


@pytest.mark.parametrize("kind", ["grad", "loss"])
def test_skip_policy_drops_bad_batches_and_finishes(kind):
    cfg, data = _setup(nan_guard={"policy": "skip"})
    net = Saboteur(bad_calls={2, 9, 10}, kind=kind)
    res = fit(net, data, cfg.train, seed=0)
    assert res.epochs_run == 4
    tensor = "gradient of trap.w" if kind == "grad" else "loss"
    assert res.skipped_batches == [{"epoch": 1, "step": 2, "tensor": tensor}, {"epoch": 2, "step": 2, "tensor": tensor},
                                   {"epoch": 2, "step": 3, "tensor": tensor}]
    assert len(res.lrs) == 4 * 7 - 3  # a skipped batch takes no optimizer step (nor scheduler step)
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert res.history[-1]["val_accuracy"] > 0.6


def test_skip_policy_gives_up_after_max_consecutive_skips():
    cfg, data = _setup(nan_guard={"policy": "skip", "max_skips": 4})
    net = Saboteur(bad_calls={"all"}, kind="loss")
    with pytest.raises(NonFiniteLoss) as exc:
        fit(net, data, cfg.train, seed=0)
    assert exc.value.step == 4 and "4 consecutive batches skipped" in str(exc.value)


def test_exploding_loss_stops_even_with_skip():
    cfg, data = _setup(nan_guard={"policy": "skip"}, optimizer={"name": "sgd", "lr": 1e6})
    torch.manual_seed(0)
    net = Saboteur()
    with pytest.raises(NonFiniteLoss) as exc:
        fit(net, data, cfg.train, seed=0)
    assert exc.value.epoch == 1 and exc.value.step <= 3


def test_cli_lr_1e6_on_digits_fails_with_exit_3(tmp_path):
    out = tmp_path / "d"
    res = cli("run", str(EXAMPLES / "digits.yaml"), *FAST, "explain.enabled=false", "train.optimizer.lr=1e6",
              "train.divergence_factor=0", "--out", str(out))
    assert res.returncode == 3, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("failed: training stopped: non-finite") and "at epoch 1, step" in line
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed"
    (f,) = summary["findings"]
    assert f["id"] == "non_finite_loss" and f["evidence"]["epoch"] == 1 and f["evidence"]["tensor"]
    assert f["evidence"]["lr"] == 1e6
    assert not (out / "checkpoints" / "best.safetensors").exists()  # no epoch finished: nothing saved
    assert "non_finite_loss" in (out / "report.html").read_text()


def test_steps_csv_epochs_account_for_skipped_batches(tmp_path):
    from types import SimpleNamespace

    from methodo.rundir import RunDir
    from methodo.stages import write_steps_csv

    res = SimpleNamespace(lrs=[0.1] * 5, losses=[1.0] * 5, grad_norms=[2.0] * 5, epochs_run=2,
                          skipped_batches=[{"epoch": 1, "step": 2, "tensor": "loss"}])
    write_steps_csv(RunDir(tmp_path), res, 48, SimpleNamespace(batch_size=16, accumulate=1))  # 3 batches/epoch
    rows = [line.split(",") for line in (tmp_path / "steps.csv").read_text().splitlines()]
    assert rows[0] == ["step", "epoch", "lr", "loss", "grad_norm"]
    assert [int(r[1]) for r in rows[1:]] == [1, 1, 2, 2, 2]  # epoch 1 took 2 steps: one batch skipped
    assert [float(r[4]) for r in rows[1:]] == [2.0] * 5
