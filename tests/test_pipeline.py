"""The whole pipeline: run dir contents, summary.json, MLflow tracking, failures, bundled results."""

from __future__ import annotations

import csv
import json

import pytest

import methodo
from methodo.config import load_config
from methodo.pipeline import RunResult
from methodo.train.checkpoint import load_checkpoint

from conftest import EXAMPLES, FAST, cli

SUMMARY_KEYS = {"status", "task", "dataset", "metrics", "baselines", "findings", "epochs_run", "best_epoch",
                "duration_s", "mlflow_run_id", "seed"}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "digits"
    return methodo.run(str(EXAMPLES / "digits.yaml"), overrides=["train.epochs=3", *FAST[1:]], out=out)


def test_python_api_returns_a_run_result_and_writes_the_run_dir(digits_run):
    res = digits_run
    assert isinstance(res, RunResult) and res.status == "finished"
    d = res.run_dir
    for name in ("config.yaml", "summary.json", "report.html", "metrics.csv", "predictions_test.csv",
                 "figures/learning_curves.png", "figures/confusion_matrix.png", "figures/roc.png",
                 "checkpoints/best.safetensors", "checkpoints/last.safetensors"):
        assert (d / name).is_file() and (d / name).stat().st_size > 0, name
    summary = json.loads((d / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary == json.loads(json.dumps(res.summary))
    assert set(summary["metrics"]) == {"train", "val", "test"}
    assert summary["metrics"]["test"]["accuracy"] > 0.8
    assert summary["baselines"]["most_frequent"]["accuracy"] < 0.15
    assert summary["epochs_run"] == 3 and 1 <= summary["best_epoch"] <= 3
    assert summary["seed"] == 0 and summary["task"] == "classification" and summary["dataset"] == "digits"
    assert sum(summary["data"]["splits"]["test"]["class_counts"].values()) == summary["data"]["splits"]["test"]["n"]
    rows = list(csv.DictReader((d / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"lr", "train_loss", "val_loss", "train_accuracy", "val_accuracy"} <= set(rows[0])


def test_resolved_config_is_saved_with_defaults(digits_run):
    cfg = methodo.load_config(digits_run.run_dir / "config.yaml")
    assert cfg.train.epochs == 3 and cfg.task == "classification"
    assert cfg.train.eval_batch_size == 1024 and cfg.track.mlflow is False


def test_checkpoints_load_safely_and_test_uses_best_weights(digits_run):
    import torch

    from methodo.data import load_dataset, prepare
    from methodo.models import build_model

    weights, state, meta = load_checkpoint(digits_run.run_dir / "checkpoints" / "best.safetensors")
    assert state is None and meta["epoch"] == digits_run.summary["best_epoch"]
    _, last_state, _ = load_checkpoint(digits_run.run_dir / "checkpoints" / "last.safetensors")
    assert last_state["epoch"] == 3 and "optimizer" in last_state
    net = build_model("cnn", input_shape=(1, 8, 8), n_outputs=10, kind="image", width=32, dropout=0.25)
    net.load_state_dict(weights)
    # the best weights, re-applied to the test split rebuilt from the saved config, give exactly the
    # predictions written in predictions_test.csv and the reported test accuracy
    cfg = load_config(digits_run.run_dir / "config.yaml")
    ds = load_dataset(cfg.data)
    X, y = prepare(ds, cfg.data, cfg.seed).tensors["test"]
    net.eval()
    with torch.no_grad():
        pred = net(X).argmax(1)
    rows = list(csv.DictReader((digits_run.run_dir / "predictions_test.csv").open()))
    assert [r["predicted"] for r in rows] == [ds.class_names[i] for i in pred.tolist()]
    assert [r["true"] for r in rows] == [ds.class_names[i] for i in y.tolist()]
    assert (pred == y).double().mean().item() == pytest.approx(digits_run.metrics["test"]["accuracy"])


def test_cli_and_api_give_the_same_numbers(tmp_path, digits_run):
    res = cli("run", str(EXAMPLES / "digits.yaml"), "train.epochs=3", *FAST[1:], "--out", str(tmp_path / "c"))
    assert res.returncode == 0, res.stderr
    assert "test metrics (model [95% bootstrap interval] | best dummy baseline)" in res.stdout and "findings:" in res.stdout
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["metrics"] == digits_run.summary["metrics"]  # deterministic: same seed, same numbers


def test_out_dir_holding_a_run_is_refused(digits_run):
    res = cli("run", str(EXAMPLES / "digits.yaml"), *FAST, "--out", str(digits_run.run_dir))
    assert res.returncode == 2 and "already holds a run" in res.stderr


def test_task_mismatch_and_monitor_errors_write_nothing(tmp_path):
    for over, needle in (("task=regression", "is a classification dataset"),
                         ("train.early_stopping.monitor=val_mae", "choose one of")):
        res = cli("run", str(EXAMPLES / "digits.yaml"), *FAST, over, "--out", str(tmp_path / "x"))
        assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr
        assert not (tmp_path / "x").exists()


def test_batch_larger_than_train_split_is_bad_input(tmp_path):
    res = cli("run", str(EXAMPLES / "digits.yaml"), *FAST, "train.batch_size=5000", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "train.batch_size=5000 is larger than the training split" in res.stderr
    assert not (tmp_path / "x").exists()


def test_diverging_run_fails_with_exit_3_and_finding(tmp_path):
    res = cli("run", str(EXAMPLES / "digits.yaml"), *FAST, "train.optimizer.lr=1e6", "--out", str(tmp_path / "d"))
    assert res.returncode == 3, res.stderr
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["findings"][0]["id"] == "non_finite_loss"
    assert summary["findings"][0]["evidence"]["step"] == 2
    assert (tmp_path / "d" / "report.html").is_file()


def test_regression_run(tmp_path):
    res = methodo.run(str(EXAMPLES / "diabetes.yaml"), ["train.epochs=5", *FAST[1:]], out=tmp_path / "r")
    assert res.status == "finished" and set(res.metrics["test"]) == {"mae", "rmse", "r2"}
    assert set(res.summary["baselines"]) == {"mean", "median"}
    assert (tmp_path / "r" / "figures" / "regression_fit.png").is_file()
    assert res.metrics["test"]["mae"] < res.summary["baselines"]["mean"]["mae"]


def test_csv_run(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    lines = ["f0,f1,f2,f3,target"] + [",".join(f"{v:.4f}" for v in r) + f",{t}" for r, t in zip(x, y)]
    (tmp_path / "d.csv").write_text("\n".join(lines))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: csv\ndata: {{source: csv, path: {tmp_path / 'd.csv'}, target: target}}\n"
                   "model: {name: mlp}\ntrain: {epochs: 15, optimizer: {name: adam, lr: 0.01}}\n")
    res = methodo.run(str(cfg), FAST[1:], out=tmp_path / "run")
    assert res.summary["dataset"] == "d" and res.metrics["test"]["accuracy"] > 0.9


# ---------------------------------------------------------------- MLflow


def _mlflow_client(tmp_path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_mlflow_run_has_params_epoch_metrics_and_artifacts(tmp_path):
    res = methodo.run(str(EXAMPLES / "digits.yaml"), ["train.epochs=2", "train.progress=false"], out=tmp_path / "m")
    assert (tmp_path / "mlflow.db").is_file()  # the embedded default store, in the working directory
    client = _mlflow_client(tmp_path)
    run = client.get_run(res.summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert (p["train.batch_size"], p["train.epochs"], p["train.optimizer.lr"], p["train.optimizer.momentum"],
            p["seed"], p["world_size"]) == ("64", "2", "0.05", "0.9", "0", "1")
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 2
    assert run.data.metrics["test_accuracy"] == pytest.approx(res.metrics["test"]["accuracy"])
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary.json", "report.html", "metrics.csv", "figures"} <= arts
    figs = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/learning_curves.png" in figs


def test_mlflow_run_is_failed_when_the_run_raises(tmp_path, monkeypatch):
    from methodo.report import plots

    def boom(*a, **k):
        raise RuntimeError("plotting exploded")

    monkeypatch.setattr(plots, "learning_curves", boom)
    with pytest.raises(RuntimeError, match="plotting exploded"):
        methodo.run(str(EXAMPLES / "digits.yaml"), ["train.epochs=1", "train.progress=false"], out=tmp_path / "f")
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert summary["status"] == "failed" and "plotting exploded" in summary["failure"]
    run = _mlflow_client(tmp_path).get_run(summary["mlflow_run_id"])
    assert run.info.status == "FAILED"


def test_a_runs_tracking_uri_does_not_leak_into_the_next_in_process_run(tmp_path):
    """mlflow.set_tracking_uri is process-wide and sets $MLFLOW_TRACKING_URI: a run with its own
    track.tracking_uri gives the caller's back, so the next run logs to ./mlflow.db again."""
    import os

    import mlflow

    other = tmp_path / "other"
    other.mkdir()
    a = methodo.run(str(EXAMPLES / "iris.yaml"), ["train.epochs=1", "train.progress=false", "evaluate.bootstrap=0",
                                                  f"track.tracking_uri=sqlite:///{other / 'mlflow.db'}"],
                    out=tmp_path / "a")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "other" not in mlflow.get_tracking_uri()
    b = methodo.run(str(EXAMPLES / "iris.yaml"), ["train.epochs=1", "train.progress=false", "evaluate.bootstrap=0"],
                    out=tmp_path / "b")
    assert _mlflow_client(other).get_run(a.summary["mlflow_run_id"]).info.status == "FINISHED"
    assert _mlflow_client(tmp_path).get_run(b.summary["mlflow_run_id"]).info.status == "FINISHED"


def test_diverged_run_is_failed_in_mlflow(tmp_path):
    res = cli("run", str(EXAMPLES / "digits.yaml"), "train.progress=false", "train.optimizer.lr=1e6",
              "--out", str(tmp_path / "d"), cwd=tmp_path)
    assert res.returncode == 3
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert _mlflow_client(tmp_path).get_run(summary["mlflow_run_id"]).info.status == "FAILED"


def test_train_threads_applies_to_its_run_only(tmp_path):
    """`train.threads` must not leak: a later in-process run with threads: null keeps the caller's count."""
    import torch

    import methodo

    before = torch.get_num_threads()
    methodo.run(EXAMPLES / "iris.yaml", overrides=[*FAST, "train.epochs=1", "train.threads=1",
                                                   "evaluate.bootstrap=0"], out=tmp_path / "r")
    assert torch.get_num_threads() == before
