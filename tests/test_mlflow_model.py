"""The trained model in MLflow (issue 14): a pyfunc with signature and input example that predicts what
`methodo predict` does, the training data as a dataset input, `track.register`, and `mlflow models serve`
answering on localhost (started with bounded timeouts, always killed)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


import numpy as np
import pandas as pd
import pytest

import methodo
from methodo.config import validate

from conftest import ROOT


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A tracked iris run in its own SQLite store, its model registered as iris-model."""
    base = tmp_path_factory.mktemp("mlf")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    cfg = validate({"name": "iris", "data": {"source": "iris"}, "model": {"name": "mlp", "hidden": [16]},
                    "train": {"epochs": 2, "progress": False, "batch_size": 16},
                    "track": {"mlflow": True, "tracking_uri": uri, "register": "iris-model"},
                    "explain": {"enabled": False}, "evaluate": {"bootstrap": 20, "reference": False}})
    res = methodo.run(cfg, out=base / "iris")
    return res, uri


def _frame() -> pd.DataFrame:
    import sklearn.datasets

    return sklearn.datasets.load_iris(as_frame=True).data


def test_the_run_logs_a_pyfunc_model_its_dataset_and_a_registered_version(tracked, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    res, uri = tracked
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    run_id = res.record.mlflow_run_id
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    sig = model.metadata.signature
    assert [c.name for c in sig.inputs.inputs] == list(_frame().columns)
    assert [c.name for c in sig.outputs.inputs] == ["predicted", "p_setosa", "p_versicolor", "p_virginica"]
    assert model.metadata.saved_input_example_info is not None  # the input example travels with the model
    got = model.predict(_frame())
    want = methodo.load(res.run_dir).predict_proba(_frame())
    np.testing.assert_array_equal(got[["p_setosa", "p_versicolor", "p_virginica"]].to_numpy(), want)
    assert got["predicted"].tolist() == list(methodo.load(res.run_dir).predict(_frame()))
    inputs = MlflowClient(uri).get_run(run_id).inputs.dataset_inputs
    assert [(i.dataset.name, [t.value for t in i.tags]) for i in inputs] == [("iris (train split)", ["training"])]
    assert inputs[0].dataset.digest and json.loads(inputs[0].dataset.schema)
    versions = MlflowClient(uri).search_model_versions("name='iris-model'")
    assert [int(v.version) for v in versions] == [1] and versions[0].run_id == run_id
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(run_id)}
    assert "MODEL_CARD.md" in artifacts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_with_the_same_predictions(tracked, tmp_path):
    res, uri = tracked
    port = _free_port()
    # the server runs `uvicorn` from PATH: this interpreter's environment first
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT / "src"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                             f"runs:/{res.record.mlflow_run_id}/model", "--env-manager", "local", "-h", "127.0.0.1",
                             "-p", str(port), "-w", "1"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not answer within 180 s"
            time.sleep(0.5)
        rows = _frame().iloc[[0, 60, 120]]
        body = json.dumps({"dataframe_split": rows.to_dict(orient="split", index=False)}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read())["predictions"]
        want = methodo.load(res.run_dir).predict_proba(rows)
        assert [a["predicted"] for a in answer] == list(methodo.load(res.run_dir).predict(rows))
        np.testing.assert_allclose([[a[f"p_{c}"] for c in ("setosa", "versicolor", "virginica")] for a in answer],
                                   want, atol=1e-6)
    finally:  # the server and its uvicorn worker: the whole process group, always
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=20)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()



