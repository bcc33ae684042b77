"""Shared fixtures. Every test runs in its own temporary working directory, so run dirs and the
default MLflow store (./mlflow.db) never land in the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

DEFAULT_THREADS = torch.get_num_threads()  # torch's default here (one per core), before anything changes it
# Under pytest-xdist (`make test` runs `-n auto`: one worker per core) each worker computes on one thread, and
# so do the subprocesses it starts: two workers × one thread keep the cores busy without the oversubscription
# that makes small trainings slow. Tests that compare bits with numbers recorded at another thread count set
# that count themselves (tests/test_golden.py).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_var] = "1"
    torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# Small and fast: a few epochs, no MLflow, no progress bar.
FAST = ["train.epochs=2", "track.mlflow=false", "train.progress=false"]

_TORCH_THREADS = torch.get_num_threads()  # torch's default on this machine, before any test changes it


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    # mlflow.set_tracking_uri (a test's own, or a run's track.tracking_uri) is process-wide: the next
    # test's run must log to its own ./mlflow.db, not to this test's store.
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(None)
    # A test that calls torch.set_num_threads must not change the float summation order (and so the
    # last digits of the metrics) of the tests after it: the CLI-vs-API equality test compares bits.
    if torch.get_num_threads() != _TORCH_THREADS:
        torch.set_num_threads(_TORCH_THREADS)


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    """Run `python -m methodo ARGS` in a subprocess; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "methodo", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)


def cli_inproc(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``methodo ARGS`` in this process (no interpreter start-up); returns (exit code, stdout, stderr)."""
    from methodo.cli import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse errors exit
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def with_keys(base: dict, over: dict) -> dict:
    """``base`` (a config as plain data) with each dotted key of ``over`` set, sections made as needed."""
    for k, v in over.items():
        node = base
        *path, last = k.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = v
    return base
