"""`methodo slurm`: the sbatch script, and its payload run under a fake Slurm (shims for srun and scontrol)."""

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

from conftest import EXAMPLES, cli_inproc

IRIS = [str(EXAMPLES / "iris.yaml"), "train.epochs=5", "train.batch_size=16", "train.progress=false",
        "track.mlflow=false", "evaluate.bootstrap=0", "explain.enabled=false", "evaluate.reference=false"]


def _script(capsys, *args: str) -> str:
    code, out, err = cli_inproc(capsys, "slurm", *args)
    assert code == 0, err
    return out


def test_jean_zay_style_script(capsys):
    s = _script(capsys, str(EXAMPLES / "digits.yaml"), "train.epochs=3", "--nodes", "2", "--gpus-per-node", "4",
                "--account", "abc@v100", "--qos", "qos_gpu-t3", "--constraint", "v100-32g", "--time", "20:00:00",
                "--modules", "pytorch-gpu/py3/2.4.0", "--max-restarts", "2")
    sbatch = [ln.split("#", 2)[1].split()[1] for ln in s.splitlines() if ln.startswith("#SBATCH")]
    assert sbatch == ["--job-name=digits-cnn", "--nodes=2", "--ntasks-per-node=1", "--gres=gpu:4",
                      "--cpus-per-task=40", "--hint=nomultithread", "--account=abc@v100", "--qos=qos_gpu-t3",
                      "--time=20:00:00", "--constraint=v100-32g", "--output=digits-cnn-%j.out",
                      "--error=digits-cnn-%j.out", "--requeue", "--signal=B:USR1@120"]
    assert "module purge\nmodule load pytorch-gpu/py3/2.4.0\n" in s and "export OMP_NUM_THREADS=10" in s
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST"' in s and '--node-rank="$SLURM_NODEID"' in s
    assert "--nproc-per-node=4" in s and "--max-restarts=2" in s and "scontrol requeue" in s
    assert "run " + str(EXAMPLES / "digits.yaml") + ' train.epochs=3 --out "$METHODO_RUN_DIR"' in s
    assert subprocess.run(["bash", "-n"], input=s, text=True).returncode == 0


def test_generic_cpu_script_and_cpu_arithmetic(capsys):
    s = _script(capsys, str(EXAMPLES / "iris.yaml"), "--procs-per-node", "4", "--cpus-per-proc", "2")
    assert "#SBATCH --cpus-per-task=8" in s and "--gres" not in s and "module" not in s
    assert "export OMP_NUM_THREADS=2" in s and "gloo" in s


@pytest.mark.parametrize("args, message", [
    (["--time", "two hours"], "error: --time 'two hours': use Slurm's forms"),
    (["--account", "a b"], "error: --account 'a b': one word"),
    (["--nodes", "0"], "error: --nodes 0: must be at least 1"),
    (["--gpus-per-node", "2", "--procs-per-node", "3"], "error: --procs-per-node 3: more processes than GPUs"),
    (["--gpus-per-node", "3"], "error: train.batch_size=16: the global batch is split across the 3 processes"),
])
def test_bad_options_are_one_error_line(capsys, args, message):
    code, out, err = cli_inproc(capsys, "slurm", str(EXAMPLES / "iris.yaml"), *args)
    assert code == 2 and out == "" and err.startswith(message) and err.count("\n") == 1, err


def _shims(tmp_path: Path) -> dict:
    """Fake Slurm commands on PATH: srun runs its command once (one node), scontrol knows one host and notes
    requeues, sbatch answers like sbatch."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "srun").write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    (bin_ / "scontrol").write_text(f'#!/bin/bash\nif [ "$1" = show ]; then echo localhost; '
                                   f'else echo "$@" >> {tmp_path}/scontrol.log; fi\n')
    (bin_ / "sbatch").write_text(f'#!/bin/bash\ncat > {tmp_path}/submitted.sh\necho "Submitted batch job 4242"\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    job = random.randint(1, 19_999)  # the rendezvous port is 20000 + job ID mod 20000
    return {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "SLURM_JOB_ID": str(job),
            "SLURM_JOB_NODELIST": "node01", "SLURM_NNODES": "1", "SLURM_NODEID": "0", "OMP_NUM_THREADS": "1"}


def test_submit_with_sbatch(tmp_path, capsys, monkeypatch):
    env = _shims(tmp_path)
    monkeypatch.setenv("PATH", env["PATH"])
    code, out, _ = cli_inproc(capsys, "slurm", str(EXAMPLES / "iris.yaml"), "--submit")
    assert code == 0 and out == "Submitted batch job 4242\n"
    assert (tmp_path / "submitted.sh").read_text().startswith("#!/bin/bash\n")
    monkeypatch.setenv("PATH", "/nonexistent")
    code, out, err = cli_inproc(capsys, "slurm", str(EXAMPLES / "iris.yaml"), "--submit")
    assert code == 2 and err.startswith("error: --submit: sbatch is not on PATH")


def test_the_script_runs_under_a_fake_slurm_with_two_processes(tmp_path, capsys):
    """The generated script itself, run by bash with Slurm's environment for 1 node and shims for srun and
    scontrol: torchrun starts 2 gloo processes, the run finishes with world size 2 in its Slurm run dir."""
    script = tmp_path / "job.sh"
    script.write_text(_script(capsys, *IRIS, "--procs-per-node", "2", "--cpus-per-proc", "1"))
    env = _shims(tmp_path)
    res = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = tmp_path / "runs" / f"iris-mlp-slurm-{env['SLURM_JOB_ID']}"
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["status"] == "finished" and s["world_size"] == 2 and s["epochs_run"] == 5
    assert s["distributed"]["per_rank_batch"] == 8 and s["distributed"]["backend"] == "gloo"
    assert not (tmp_path / "scontrol.log").exists()  # no requeue


@pytest.mark.slow
def test_sigusr1_near_the_time_limit_requeues_and_the_requeued_job_resumes(tmp_path, capsys):
    """SIGUSR1 to the batch script (Slurm's --signal=B:USR1@S): the run stops after its epoch's checkpoint, the
    script requeues the job; the requeued job (SLURM_RESTART_COUNT=1) resumes the run dir and finishes."""
    script = tmp_path / "job.sh"
    script.write_text(_script(capsys, *IRIS, "train.epochs=200", "train.early_stopping=null", "--procs-per-node",
                              "2", "--cpus-per-proc", "1"))
    env = _shims(tmp_path)
    run_dir = tmp_path / "runs" / f"iris-mlp-slurm-{env['SLURM_JOB_ID']}"
    proc = subprocess.Popen(["bash", str(script)], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (run_dir / "metrics.csv").exists():
        assert proc.poll() is None and time.time() - t0 < 600, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    err = proc.communicate(timeout=600)[1]
    assert proc.returncode == 0, err[-3000:]
    assert "requeueing job" in err and (tmp_path / "scontrol.log").read_text() == f"requeue {env['SLURM_JOB_ID']}\n"
    first = json.loads((run_dir / "summary.json").read_text())
    assert first["status"] == "failed" and "StopRequested" in first["failure"]
    res = subprocess.run(["bash", str(script)], cwd=tmp_path, env={**env, "SLURM_RESTART_COUNT": "1"},
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["status"] == "finished" and s["resumed"] and s["epochs_run"] == 200 and s["world_size"] == 2
    assert s["distributed"]["restarts"] == 1
