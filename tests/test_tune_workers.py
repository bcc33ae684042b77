"""Many workers on one study: PostgreSQL (the multi-machine storage) and SQLite; heartbeats and retries.

PostgreSQL comes from Debian's packages, started by ``scripts/ensure-postgres.sh`` (``make test`` exports its
DSN as ``METHODO_TEST_POSTGRES``). Without it the PostgreSQL tests are skipped, except under ``CI=true``,
where they fail. Each test uses a study name of its own, so they never see each other's trials.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import EXAMPLES, write_yaml

IRIS = str(EXAMPLES / "iris.yaml")
TINY = ["train.threads=1", "track.mlflow=false", "train.progress=false", "explain.enabled=false", "evaluate.bootstrap=0",
        "train.monitor.enabled=false"]
SPACE = "train.optimizer.lr: {float: [1.0e-3, 0.1], log: true}\nmodel.hidden: {choice: [[8], [16]]}\n"


@pytest.fixture(scope="module")
def postgres() -> str:
    dsn = os.environ.get("METHODO_TEST_POSTGRES")
    if not dsn:
        msg = "no PostgreSQL DSN in METHODO_TEST_POSTGRES; run: export METHODO_TEST_POSTGRES=$(bash scripts/ensure-postgres.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{msg} (CI=true: the PostgreSQL tests must run in CI)")
        pytest.skip(msg)
    import sqlalchemy

    from methodo.tune.study import driver_url

    try:
        with sqlalchemy.create_engine(driver_url(dsn), connect_args={"connect_timeout": 10}).connect():
            pass
    except Exception as exc:  # the server named by the DSN is not there
        pytest.fail(f"METHODO_TEST_POSTGRES={dsn}: cannot connect ({exc})")
    return dsn


def _tune(tmp_path, storage: str, study: str, *args: str, epochs: int = 3) -> subprocess.Popen:
    space = write_yaml(tmp_path / "space.yaml", SPACE)
    cmd = [sys.executable, "-m", "methodo", "tune", IRIS, *TINY, f"train.epochs={epochs}", "--space", str(space),
           "--storage", storage, "--study", study, "--out", str(tmp_path / f"out-{study}"), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _trials(storage: str, study: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from methodo.tune.study import driver_url

    return optuna.load_study(study_name=study, storage=driver_url(storage)).get_trials(deepcopy=False)


def _check_three_workers(tmp_path, storage: str):
    study = f"w3-{uuid.uuid4().hex[:8]}"
    proc = _tune(tmp_path, storage, study, "--workers", "3", "--trials", "9", "--pruner", "none")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    trials = _trials(storage, study)
    assert sorted(t.number for t in trials) == list(range(9))  # none lost, none duplicated, total == --trials
    assert all(t.state.name == "COMPLETE" for t in trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) >= 2, workers  # shared by the workers
    rec = json.loads((tmp_path / f"out-{study}" / "tune.json").read_text())
    assert rec["trials_counted"] == 9 and rec["counts"]["RUNNING"] == 0
    # every trial's config is different: no two workers ran the same trial
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 9


def _check_sigkill_is_retried(tmp_path, storage: str):
    """A worker SIGKILLed mid-trial: its heartbeat stops, another worker fails the trial and runs its retry;
    the study ends with --trials trials that count and none RUNNING."""
    study = f"kill-{uuid.uuid4().hex[:8]}"
    proc = _tune(tmp_path, storage, study, "--workers", "3", "--trials", "4", "--pruner", "none",
                 "--heartbeat", "1", epochs=120)
    victim = None
    deadline = time.time() + 300
    try:
        while victim is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                trials = _trials(storage, study)
            except Exception:  # the study is not created yet
                continue
            # a trial that trains: its values are sampled and its config stored
            running = [t for t in trials if t.state.name == "RUNNING" and "config" in t.user_attrs]
            if running:
                victim = running[0]
                pid = int(victim.user_attrs["worker"].rsplit(":", 1)[1])
                assert pid != proc.pid  # a worker process, not the command
                os.kill(pid, signal.SIGKILL)
        assert victim is not None, "no running trial seen"
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "ended by signal 9" in err
    trials = _trials(storage, study)
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    # the trial the killed worker was running when the signal came: the one seen RUNNING, or (when that
    # one finished in the instant between reading the study and the kill) the worker's next one
    killed = [t for t in trials if t.user_attrs.get("worker") == victim.user_attrs["worker"] and t.state.name == "FAIL"]
    assert len(killed) == 1, [(t.number, t.state.name) for t in trials]
    killed = killed[0]
    assert killed.number >= victim.number
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == killed.params
    rec = json.loads((tmp_path / f"out-{study}" / "tune.json").read_text())
    assert rec["trials_counted"] == 4 and rec["counts"]["retried"] == 1 and len(trials) == 5


def test_three_workers_share_one_postgresql_study(tmp_path, postgres):
    _check_three_workers(tmp_path, postgres)


def test_a_sigkilled_worker_trial_is_retried_on_postgresql(tmp_path, postgres):
    _check_sigkill_is_retried(tmp_path, postgres)


@pytest.mark.slow
def test_three_workers_share_one_sqlite_study(tmp_path):
    _check_three_workers(tmp_path, f"sqlite:///{tmp_path / 'tune.db'}")


@pytest.mark.slow
def test_a_sigkilled_worker_trial_is_retried_on_sqlite(tmp_path):
    _check_sigkill_is_retried(tmp_path, f"sqlite:///{tmp_path / 'tune.db'}")


def test_unreachable_postgresql_is_one_error_line(tmp_path):
    proc = _tune(tmp_path, "postgresql://nobody:secret@127.0.0.1:9/none", "x", "--trials", "2")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and err.startswith("error: --storage postgresql://nobody:***@127.0.0.1:9/none: "
                                                   "cannot open the study storage"), err
    assert "secret" not in err and err.count("\n") == 1
    assert not (tmp_path / "out-x").exists()
