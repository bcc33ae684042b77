"""Nothing lost on a crash: kill-and-resume, atomic checkpoints, crash-safe tracking, hostile files."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import methodo
from methodo.errors import BadInput
from methodo.paths import safe_child
from methodo.train.checkpoint import load_checkpoint, save_checkpoint

from conftest import EXAMPLES, cli

# digits + CNN: epochs long enough (~0.3-1 s each) to be killed in the middle of one
KILLABLE = ["train.epochs=6", "train.progress=false", "track.mlflow=false", "evaluate.bootstrap=20",
            "train.early_stopping=null", "model.width=16"]


def _spawn(*args, cwd=None):
    return subprocess.Popen([sys.executable, "-m", "methodo", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)


def _wait_for(path: Path, proc, timeout=180):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() - t0 < timeout
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    res = cli("run", str(EXAMPLES / "digits.yaml"), *KILLABLE, "--out", str(out))
    assert res.returncode == 0, res.stderr
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_sigkill_at_a_random_step_then_resume_is_bit_exact(tmp_path, uninterrupted, seed):
    rng = random.Random(seed)
    out = tmp_path / "run"
    proc = _spawn("run", str(EXAMPLES / "digits.yaml"), *KILLABLE, "--out", str(out))
    _wait_for(out / "config.yaml", proc)
    if seed > 0:  # seed 0 is killed before the first epoch ends; the others somewhere in training
        _wait_for(out / "metrics.csv", proc)
    time.sleep(rng.uniform(0.0, 1.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((out / "summary.json").read_text())["status"] == "running"  # it really died mid-run
    res = cli("run", "--resume", str(out))
    assert res.returncode == 0, res.stderr
    a, b = json.loads((uninterrupted / "summary.json").read_text()), json.loads((out / "summary.json").read_text())
    assert b["status"] == "finished" and b["epochs_run"] == 6
    assert a["metrics"] == b["metrics"]
    wa = load_checkpoint(uninterrupted / "checkpoints" / "last.safetensors")[0]
    wb = load_checkpoint(out / "checkpoints" / "last.safetensors")[0]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (out / "metrics.csv").read_text() .count("\n") == 7


def test_killing_during_checkpoint_saves_never_leaves_a_torn_file(tmp_path):
    code = f"""
import torch, sys
from methodo.train.checkpoint import save_checkpoint
w = {{"w": torch.zeros(300_000)}}
print("ready", flush=True)
i = 0
while True:
    i += 1
    w["w"].fill_(i)
    save_checkpoint(r"{tmp_path}/last.safetensors", w, {{"step": i}}, {{"i": i}})
"""
    for attempt in range(8):
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        p.stdout.readline()
        time.sleep(0.3 + 0.17 * attempt)
        p.send_signal(signal.SIGKILL)
        p.wait()
        weights, state, meta = load_checkpoint(tmp_path / "last.safetensors")
        assert torch.all(weights["w"] == meta["i"]) and state["step"] == meta["i"]
    # left-over temporary files are named .last.safetensors.PID.tmp and never loaded
    assert all(f.name.startswith(".") or f.name == "last.safetensors" for f in tmp_path.iterdir())


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    code = f"""
import resource, torch
from methodo.errors import CheckpointWriteError
from methodo.train.checkpoint import save_checkpoint
p = r"{tmp_path}/last.safetensors"
save_checkpoint(p, {{"w": torch.ones(1000)}}, {{"epoch": 1}})
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))   # like `ulimit -f 20`
try:
    save_checkpoint(p, {{"w": torch.full((100_000,), 2.0)}}, {{"epoch": 2}})
except CheckpointWriteError as e:
    print("ERR", e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "ERR could not write checkpoint" in out.stdout and "File too large" in out.stdout
    assert "the previous last.safetensors is kept" in out.stdout
    weights, state, _ = load_checkpoint(tmp_path / "last.safetensors")
    assert state["epoch"] == 1 and torch.all(weights["w"] == 1)
    assert [f.name for f in tmp_path.iterdir()] == ["last.safetensors"]


def test_a_run_whose_checkpoint_cannot_be_written_fails_cleanly(tmp_path):
    res = subprocess.run(["bash", "-c", f"ulimit -f 150; exec {sys.executable} -m methodo run "
                          f"{EXAMPLES / 'digits.yaml'} train.epochs=2 train.progress=false track.mlflow=false "
                          f"--out {tmp_path / 'r'}"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 3, res.stderr
    assert "could not write checkpoint" in res.stderr and "Traceback" not in res.stderr
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "failed"


# ---------------------------------------------------------------- tracking


def _client(cwd: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")


def _iris(tmp_path, name="c"):
    p = tmp_path / f"{name}.yaml"
    p.write_text("name: c\ndata: {source: iris}\nmodel: {name: mlp, hidden: [8]}\n"
                 "train: {epochs: 2, progress: false}\nevaluate: {bootstrap: 0}\n")
    return p


def test_four_runs_started_at_once_on_a_fresh_store_all_succeed(tmp_path):
    """Four runs at once on one fresh SQLite store, and two more racing for one --out: every run that got
    a dir is recorded once, FINISHED; exactly one of the racers wins the dir, the other exits 2 unrecorded."""
    cfg = _iris(tmp_path)
    procs = [_spawn("run", str(cfg), "--out", str(tmp_path / f"r{i}"), cwd=tmp_path) for i in range(4)]
    racers = [_spawn("run", str(cfg), "--out", str(tmp_path / "same"), cwd=tmp_path) for _ in range(2)]
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0, 0, 0, 0], [p.stderr.read() for p in procs]
    raced = sorted((p.wait(timeout=300), p.stderr.read()) for p in racers)
    assert [c for c, _ in raced] == [0, 2] and "already holds a run" in raced[1][1], raced
    dirs = [tmp_path / f"r{i}" for i in range(4)] + [tmp_path / "same"]
    ids = {json.loads((d / "summary.json").read_text())["mlflow_run_id"] for d in dirs}
    assert len(ids) == 5
    stored = _client(tmp_path).search_runs(
        [e.experiment_id for e in _client(tmp_path).search_experiments()], max_results=100)
    assert sorted(r.info.run_id for r in stored) == sorted(ids)  # each run once, the loser not at all
    assert {r.info.status for r in stored} == {"FINISHED"}


def test_sigterm_marks_the_run_killed(tmp_path):
    proc = _spawn("run", str(EXAMPLES / "digits.yaml"), *KILLABLE[:1], "train.epochs=40", "train.progress=false",
                  "--out", str(tmp_path / "t"), cwd=tmp_path)
    _wait_for(tmp_path / "t" / "metrics.csv", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["status"] == "failed" and "SIGTERM" in summary["failure"]
    assert _client(tmp_path).get_run(summary["mlflow_run_id"]).info.status == "KILLED"


def test_after_sigkill_the_next_start_marks_the_stale_run_failed(tmp_path):
    proc = _spawn("run", str(EXAMPLES / "digits.yaml"), "train.epochs=40", "train.progress=false",
                  "--out", str(tmp_path / "k"), cwd=tmp_path)
    _wait_for(tmp_path / "k" / "metrics.csv", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_id = json.loads((tmp_path / "k" / "summary.json").read_text())["mlflow_run_id"]
    assert _client(tmp_path).get_run(run_id).info.status == "RUNNING"  # nobody could end it
    assert cli("run", str(_iris(tmp_path)), "--out", str(tmp_path / "next"), cwd=tmp_path).returncode == 0
    stale = _client(tmp_path).get_run(run_id)
    assert stale.info.status == "FAILED" and "died" in stale.data.tags["methodo.failure"]


# ---------------------------------------------------------------- hostile files


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_checkpoint_is_refused_and_runs_no_code(tmp_path):
    torch.save({"x": _Evil()}, tmp_path / "evil.safetensors")
    with pytest.raises(BadInput, match="pickle/torch.save file; methodo loads only safetensors"):
        load_checkpoint(tmp_path / "evil.safetensors")
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_resume_from_a_hostile_last_checkpoint_is_refused(tmp_path):
    out = tmp_path / "r"
    methodo.run(_iris(tmp_path), ["track.mlflow=false", "evaluate.bootstrap=0"], out=out)
    torch.save({"x": _Evil()}, out / "checkpoints" / "last.safetensors")
    res = cli("run", "--resume", str(out), cwd=tmp_path)
    assert res.returncode == 2 and "never unpickles" in res.stderr
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("mangle", ["truncate", "huge_header", "garbage", "empty"])
def test_broken_safetensors_fail_cleanly(tmp_path, mangle):
    p = save_checkpoint(tmp_path / "c.safetensors", {"w": torch.ones(1000)}, {"epoch": 1})
    raw = p.read_bytes()
    p.write_bytes({"truncate": raw[: len(raw) // 2],
                   "huge_header": (2**62).to_bytes(8, "little") + raw[8:],
                   "garbage": os.urandom(4096),
                   "empty": b""}[mangle])
    with pytest.raises(BadInput, match="not a valid methodo safetensors checkpoint"):
        load_checkpoint(p)


@pytest.mark.parametrize("name", ["../x.png", "/etc/passwd", "a/../../x", "%2e%2e/x", "%252e%252e%252fx",
                                  "..\\x", "~/x", "C:\\x", "a\x00b"])
def test_artifact_names_cannot_escape_the_run_dir(tmp_path, name):
    with pytest.raises(BadInput, match="would escape the run dir"):
        safe_child(tmp_path, name)


def test_symlink_escape_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "figures").symlink_to(tmp_path)
    with pytest.raises(BadInput):
        safe_child(tmp_path / "run", "figures/x.png")
    assert safe_child(tmp_path / "run", "x.png") == tmp_path / "run" / "x.png"


def test_divergence_mid_run_keeps_best_and_last_good_checkpoints(tmp_path):
    # the LR grows 1000× per epoch: epoch 1 trains fine, a later epoch explodes
    out = tmp_path / "d"
    res = cli("run", str(EXAMPLES / "digits.yaml"), "train.epochs=6", "train.progress=false", "track.mlflow=false",
              "train.scheduler.name=exponential", "train.scheduler.gamma=1000", "--out", str(out))
    assert res.returncode == 3 and "exploding loss" in res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["findings"][0]["id"] == "non_finite_loss"
    died_in = summary["findings"][0]["evidence"]["epoch"]
    assert died_in >= 2
    best, _, meta = load_checkpoint(out / "checkpoints" / "best.safetensors")
    last, state, _ = load_checkpoint(out / "checkpoints" / "last.safetensors")
    assert meta["epoch"] < died_in and state["epoch"] == died_in - 1  # written before the bad epoch
    assert all(torch.isfinite(v.float()).all() for v in list(best.values()) + list(last.values()))
