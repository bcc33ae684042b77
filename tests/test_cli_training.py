"""`methodo list schedulers|optimizers|regularizers|explainers` and the lr-find command line."""

from __future__ import annotations

import pytest

from methodo.explain import EXPLAINERS
from methodo.train.optim import OPTIMIZERS
from methodo.train.regularize import REGULARIZERS
from methodo.train.schedules import SCHEDULERS

from conftest import cli


@pytest.mark.parametrize("what,registry,tag", [
    ("schedulers", SCHEDULERS, "[per "), ("optimizers", OPTIMIZERS, ""),
    ("regularizers", REGULARIZERS, "acts at:"), ("explainers", EXPLAINERS, ""),
])
def test_list_shows_every_entry_with_its_help(what, registry, tag, capsys):
    from methodo.cli import main

    assert main(["list", what]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [l.split()[0] for l in lines] == registry.names()
    for line, entry in zip(lines, registry.entries()):
        assert entry.help in line and tag in line
    if what == "regularizers":
        assert any("train.clip.norm" in l for l in lines) and any("train.regularization.l1" in l for l in lines)
    if what == "schedulers":
        for name in ("step", "multistep", "exponential", "linear", "cyclic", "onecycle", "cosine",
                     "cosine_restarts", "plateau"):
            assert name in registry


def test_lr_find_help_and_bad_input():
    res = cli("lr-find", "--help")
    assert res.returncode == 0 and "suggested_lr" in res.stdout and "--out" in res.stdout
    res = cli("lr-find", "nope.yaml")
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "config file not found" in res.stderr


@pytest.mark.parametrize("overrides,needles", [
    (["train.optimizer.name=lbfgs", "train.accumulate=2"], ["train.accumulate", "lbfgs"]),
    (["train.optimizer.name=lbfgs", "train.optimizer.lr=auto"], ["train.optimizer.lr", "closure"]),
    (["train.accumulate=0"], ["train.accumulate", "greater than or equal to 1"]),
    (["train.snapshot_ensemble=true"], ["train.snapshot_ensemble", "cosine_restarts"]),
    (["train.clip.norm=-1"], ["train.clip.norm", "greater than 0"]),
    (["train.nan_guard.policy=ignore"], ["train.nan_guard.policy", "'stop'", "'skip'"]),
    (["train.scheduler={name: cyclic, mode: zigzag}"], ["train.scheduler", "mode must be"]),
    (["train.precision=fp16"], ["train.precision", "'bf16'"]),
])
def test_training_config_errors_name_the_key(overrides, needles):
    import methodo
    from methodo.errors import ConfigError

    from conftest import EXAMPLES

    with pytest.raises(ConfigError) as exc:
        methodo.load_config(EXAMPLES / "iris.yaml", overrides)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("override ")
    for n in needles:
        assert n in msg, (n, msg)


def test_training_config_error_on_the_command_line_is_exit_2(tmp_path):
    from conftest import EXAMPLES

    res = cli("run", str(EXAMPLES / "iris.yaml"), "train.optimizer.name=lbfgs", "train.clip.norm=1",
              "--out", str(tmp_path / "x"))
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "train.clip.norm" in lines[0] and "lbfgs" in lines[0]
    assert not (tmp_path / "x").exists()


def test_mlflow_gets_the_per_step_series(tmp_path):
    import methodo
    from mlflow.tracking import MlflowClient

    from conftest import EXAMPLES

    res = methodo.run(str(EXAMPLES / "iris.yaml"), ["train.epochs=2", "train.progress=false", "explain.enabled=false",
                                                    "train.clip.norm=0.5"], out=tmp_path / "m")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    rid = res.summary["mlflow_run_id"]
    steps = res.summary["training"]["optimizer_steps"]
    for name in ("step_lr", "step_loss", "step_grad_norm"):
        hist = client.get_metric_history(rid, name)
        assert sorted(m.step for m in hist) == list(range(1, steps + 1)), name
    csv_norms = [float(l.split(",")[4]) for l in (tmp_path / "m" / "steps.csv").read_text().splitlines()[1:]]
    logged = [m.value for m in sorted(client.get_metric_history(rid, "step_grad_norm"), key=lambda m: m.step)]
    assert logged == pytest.approx(csv_norms, rel=1e-5)


def test_mlflow_gets_a_capped_long_series_at_real_steps_and_steps_csv(tmp_path, monkeypatch):
    """A long run sends each per-step series as SERIES_POINTS evenly spaced steps (one log_batch), their
    own values, first and last step included; steps.csv (every step) is uploaded with the run."""
    from mlflow.tracking import MlflowClient

    from methodo.rundir import RunDir
    from methodo.track import SERIES_POINTS, MlflowTracker

    monkeypatch.chdir(tmp_path)  # the store's artifacts
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker("long-series", uri)
    tracker.start({"train.epochs": 2}, {"methodo.run_name": "long"})
    n = 5470
    loss = [1.0 / (1 + i) for i in range(n)]
    tracker.log_series({"step_loss": loss, "step_lr": [1e-3] * n})
    rd = RunDir.create(tmp_path / "run", name="long")
    rd.write_text("steps.csv", "step,epoch,lr,loss,grad_norm\r\n")
    tracker.finish("FINISHED", rd)
    client = MlflowClient(tracking_uri=uri)
    hist = sorted(client.get_metric_history(tracker.run_id, "step_loss"), key=lambda m: m.step)
    assert len(hist) == SERIES_POINTS and (hist[0].step, hist[-1].step) == (1, n)
    assert all(m.value == pytest.approx(loss[m.step - 1]) for m in hist)
    assert "steps.csv" in [a.path for a in client.list_artifacts(tracker.run_id)]
