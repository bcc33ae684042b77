"""DDP under torchrun: the same curve as one process, rank 0 alone writes, restarts resume, LR scaling."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import methodo
from methodo.errors import ConfigError
from methodo.train.distributed import check_batch, lr_factor, restart_target, shard_rows
from methodo.train.loop import batches_per_epoch

from conftest import EXAMPLES, cli, cli_inproc

# iris, MLP without dropout (no per-rank randomness), 5 epochs of 7 global batches of 16 rows: the last
# batch (104 rows = 6 × 16 + 8) splits 4 + 4 across two ranks
TINY = ["train.epochs=5", "train.batch_size=16", "train.progress=false", "evaluate.bootstrap=0",
        "explain.enabled=false", "evaluate.reference=false", "model.dropout=0"]
# Float tolerance of the 2-process curve against the 1-process one: DDP averages two half-batch gradients
# where one process takes the mean of the whole batch, so sums are added in another order (float32
# rounding, ~1e-7 relative per step).
ATOL = 1e-5


def _curve(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [{k: float(v) for k, v in row.items() if k != "time_s"} for row in csv.DictReader(fh)]


def test_shares_of_a_batch_are_the_one_process_batch():
    assert shard_rows(10, rank=0, world=4) + shard_rows(10, rank=1, world=4) + shard_rows(10, rank=2, world=4) \
        + shard_rows(10, rank=3, world=4) == [0, 4, 8, 1, 5, 9, 2, 6, 3, 7]
    # world 1: the one-process rule (a trailing 1-row batch dropped); world 2: a trailing batch must give
    # each rank 2 rows
    assert batches_per_epoch(65, 64) == 1 and batches_per_epoch(66, 64) == 2
    assert batches_per_epoch(67, 64, 2) == 1 and batches_per_epoch(68, 64, 2) == 2


def test_lr_scaling_rules():
    assert lr_factor("none", batch_size=256, world=4) == 1.0
    assert lr_factor("linear", batch_size=256, world=4) == 4.0
    assert lr_factor("sqrt", batch_size=256, world=4) == 2.0
    assert lr_factor("linear", batch_size=256, world=4, base_batch=128) == 2.0
    assert lr_factor("linear", batch_size=64, world=1) == 1.0  # one process, no base: nothing changes


def test_a_global_batch_that_does_not_split_is_bad_input(capsys):
    check_batch(64, 2)
    with pytest.raises(ConfigError, match=r"train.batch_size=65: .* multiple of 2; use 64 or 66"):
        check_batch(65, 2)
    code, _, err = cli_inproc(capsys, "run", str(EXAMPLES / "iris.yaml"), "train.batch_size=15", "--nproc", "2",
                              "--out", "r")
    assert code == 2 and err.strip().splitlines() == [err.strip()], err
    assert err.startswith("error: train.batch_size=15") and not Path("r").exists()
    code, _, err = cli_inproc(capsys, "run", str(EXAMPLES / "iris.yaml"), "--nproc", "0")
    assert code == 2 and err == "error: --nproc 0: give at least 1 process\n"


def test_lr_scaling_applies_in_one_process_with_a_base_batch(tmp_path):
    res = methodo.run(EXAMPLES / "iris.yaml", [*TINY, "train.epochs=1", "track.mlflow=false",
                                                "train.lr_scaling=linear", "train.lr_base_batch=8"], out=tmp_path / "r")
    assert _curve(res.run_dir)[0]["lr"] == pytest.approx(0.02)  # adam lr 0.01 × 16 / 8
    assert (tmp_path / "r" / "config.yaml").read_text().count("lr: 0.01") == 1  # the config keeps the rule, not the product
    assert "distributed" not in res.summary and res.summary["world_size"] == 1


def test_restart_target(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job1")
    out, resume = restart_target(None, None, name="demo")  # first attempt, no --out: chosen and noted
    assert resume is None and out.startswith("runs/demo-")
    assert json.loads(Path("runs/.torchrun-job1.json").read_text()) == {"run_dir": out}
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert restart_target(None, None, name="demo") == (out, None)  # restarted before the run dir existed
    Path(out).mkdir(parents=True)
    Path(out, "config.yaml").write_text("name: demo\n")
    assert restart_target(None, None, name="demo") == (None, out)  # restarted: resume it
    assert restart_target("given", None, name="demo") == ("given", None)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert restart_target(out, None, name="demo") == (None, out)  # a requeued Slurm job with --out DIR
    assert restart_target(None, "r", name="demo") == (None, "r")  # --resume always wins


def test_two_gloo_processes_give_the_one_process_curve(tmp_path):
    """2 CPU processes (gloo), global batch 16 = 2 × 8, against 1 process with batch 16: the same validation
    curve within ATOL; world size 2 in summary.json and in MLflow's params and tags; rank 0 alone wrote."""
    one = methodo.run(EXAMPLES / "iris.yaml", [*TINY, "track.mlflow=false"], out=tmp_path / "one")
    res = cli("run", str(EXAMPLES / "iris.yaml"), *TINY, "--nproc", "2", "--out", str(tmp_path / "two"),
              cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("run dir:") == 1  # rank 0 alone reports
    a, b = _curve(one.run_dir), _curve(tmp_path / "two")
    assert len(a) == len(b) == 5
    for ra, rb in zip(a, b):
        for k in ("lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert rb[k] == pytest.approx(ra[k], abs=ATOL), (ra["epoch"], k)
    s = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s["status"] == "finished" and s["world_size"] == 2
    assert s["distributed"] == {"world_size": 2, "backend": "gloo", "global_batch": 16, "per_rank_batch": 8,
                                "lr_scaling": "none", "lr_factor": 1.0, "lr": 0.01, "restarts": 0}
    assert s["metrics"]["test"]["accuracy"] == pytest.approx(one.metrics["test"]["accuracy"], abs=1e-9)
    assert [p.name for p in (tmp_path / "two").glob(".*.tmp")] == []
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(s["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["world_size"] == "2" and run.data.params["per_rank_batch"] == "8"
    assert run.data.tags["methodo.world_size"] == "2" and run.data.tags["methodo.backend"] == "gloo"


def test_a_stop_file_stops_after_the_epoch_and_the_run_resumes_bit_for_bit(tmp_path, monkeypatch, capsys):
    """What a Slurm job near its time limit does (SIGUSR1 → the batch script creates the stop file): stop
    after the epoch's checkpoint, exit 75, then --resume gives the uninterrupted run's numbers."""
    full = methodo.run(EXAMPLES / "iris.yaml", [*TINY, "track.mlflow=false"], out=tmp_path / "full")
    stop = tmp_path / "stop"
    stop.touch()
    monkeypatch.setenv("METHODO_STOP_FILE", str(stop))
    code, _, err = cli_inproc(capsys, "run", str(EXAMPLES / "iris.yaml"), *TINY, "track.mlflow=false", "--out",
                              str(tmp_path / "r"))
    assert code == 75, err
    assert f"stopped: stopped after epoch 1 on request (stop file {stop})" in err
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["status"] == "failed" and "StopRequested" in s["failure"]
    stop.unlink()
    code, _, err = cli_inproc(capsys, "run", "--resume", str(tmp_path / "r"))
    assert code == 0, err
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["status"] == "finished" and s["metrics"] == full.metrics
    assert _curve(tmp_path / "r") == _curve(full.run_dir)


def _worker(agent_pid: int, rank: int) -> int | None:
    """The pid of torchrun's worker of ``rank`` (a child of the agent whose environment says so)."""
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (p / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == agent_pid and f"RANK={rank}".encode() in env and b"LOCAL_RANK=%d" % rank in env:
            return int(p.name)
    return None


@pytest.mark.slow
def test_a_rank_killed_mid_epoch_restarts_the_group_from_the_last_checkpoint(tmp_path):
    """torchrun --max-restarts 1: SIGKILL rank 1 in the middle of epoch 2 or later; the group restarts,
    resumes the same run dir from its last checkpoint, and ends with the uninterrupted run's numbers."""
    args = [str(EXAMPLES / "digits.yaml"), "train.epochs=4", "train.progress=false", "track.mlflow=false",
            "evaluate.bootstrap=0", "explain.enabled=false", "train.early_stopping=null", "model.width=16",
            "--nproc", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = cli("run", *args, "--out", str(tmp_path / "full"), env=env, timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]
    out = tmp_path / "r"
    agent = subprocess.Popen([sys.executable, "-m", "methodo", "run", *args, "--max-restarts", "1", "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.time()
    while not (out / "metrics.csv").exists():
        assert agent.poll() is None and time.time() - t0 < 400, agent.stderr.read()
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    pid = _worker(agent.pid, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    err = agent.communicate(timeout=600)[1]
    assert agent.returncode == 0, err[-3000:]
    a = json.loads((tmp_path / "full" / "summary.json").read_text())
    b = json.loads((out / "summary.json").read_text())
    assert b["status"] == "finished" and b["resumed"] and b["distributed"]["restarts"] == 1
    assert b["epochs_run"] == 4 and b["metrics"] == a["metrics"]
    assert _curve(out) == _curve(tmp_path / "full")


@pytest.mark.slow  # two torchrun processes and a reference run: about 80 s; the ordinary DDP test runs always
def test_proximal_l1_under_two_gloo_processes_gives_the_one_process_run(tmp_path):
    """train.regularization.l1_method=proximal acts after the optimizer step on every rank alike (the same
    all-reduced gradients, the same group LR): the 2-process curve is the 1-process one within ATOL, and both
    end with weights at exactly 0.0."""
    from methodo.train.checkpoint import load_checkpoint

    reg = ["train.regularization.l1=0.05", "train.regularization.l1_method=proximal", "train.optimizer.lr=0.1",
           "track.mlflow=false"]
    one = methodo.run(EXAMPLES / "iris.yaml", [*TINY, *reg], out=tmp_path / "one")
    res = cli("run", str(EXAMPLES / "iris.yaml"), *TINY, *reg, "--nproc", "2", "--out", str(tmp_path / "two"),
              cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = _curve(one.run_dir), _curve(tmp_path / "two")
    assert len(a) == len(b) == 5
    for ra, rb in zip(a, b):
        for k in ("lr", "train_loss", "val_loss", "val_accuracy"):
            assert rb[k] == pytest.approx(ra[k], abs=ATOL), (ra["epoch"], k)
    zeros = []
    for run in (one.run_dir, tmp_path / "two"):
        weights = load_checkpoint(next(run.rglob("last.safetensors")))[0]
        zeros.append(sum(int((t == 0).sum()) for t in weights.values() if t.ndim >= 2))
    assert zeros[0] >= 10 and abs(zeros[0] - zeros[1]) <= 2, zeros


def test_the_step_losses_ride_in_ddps_gradient_all_reduce(tmp_path):
    """`Piggyback`: the loss sums a step agrees on are summed by DDP's last gradient all-reduce (no collective
    of their own); the gradients are those of DDP's default hook (each bucket averaged over the ranks)."""
    import torch
    import torch.distributed as dist

    from methodo.train.distributed import Dist, global_step, step_sums, wrap

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ctx = Dist(rank=0, world=1, local_rank=0, backend="gloo", device=torch.device("cpu"))
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        twin = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        twin.load_state_dict(model.state_dict())
        net = wrap(model, ctx)
        x = torch.randn(6, 4)
        for _ in range(2):  # the first backward builds DDP's buckets, the second runs on the rebuilt ones
            net.zero_grad()
            loss = net(x).pow(2).mean()
            pending = [(loss, 6, None, None)]
            net.piggyback.carry(step_sums(pending, ctx.device))
            loss.backward()
            summed = net.piggyback.take()
            assert summed is not None and summed.tolist() == pytest.approx([loss.item() * 6, 6.0], rel=1e-6)
            assert net.piggyback.take() is None  # taken once
            values, rows = global_step(ctx, pending, None, summed)
            assert values == pytest.approx([loss.item()], rel=1e-6) and rows[0][1] == 6
        twin(x).pow(2).mean().backward()
        for a, b in zip(model.parameters(), twin.parameters()):
            assert torch.allclose(a.grad, b.grad)
        # nothing carried: the hook is DDP's plain all-reduce, and take() has nothing
        net.zero_grad()
        net(x).sum().backward()
        assert net.piggyback.take() is None
    finally:
        dist.destroy_process_group()
