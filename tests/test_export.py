"""`methodo export` (issue 14): ONNX checked in onnxruntime within 1e-5 for every registered model,
TorchScript, safetensors; the exported ONNX file used without methodo gives `methodo predict`'s numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import methodo
from methodo.config import validate
from methodo.registry import REGISTRIES

from conftest import cli_inproc

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# a small input per kind of data the models read (images divisible by the U-Net's levels)
_INPUTS = {"tabular": (6,), "image": (3, 16, 16), "text": (12,), "graph": (6, 10)}


# The dynamo exporter takes seconds per model: a table model and an image model in the fast suite, every
# other registered model with the slow checks (`make test-slow`), so a new model is covered by being registered.
_FAST = {"mlp", "cnn"}


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.name, marks=() if e.name in _FAST else pytest.mark.slow)
                                   for e in REGISTRIES.get("models").entries()])
def test_every_registered_model_exports_to_onnx_and_matches_pytorch(entry, tmp_path):
    from methodo.models import build_model
    from methodo.use.export import TOLERANCE, compare, export_onnx, run_onnx

    kind = entry.meta.get("inputs", ("image", "tabular"))[-1]
    torch.manual_seed(0)
    model = build_model(entry.name, input_shape=_INPUTS[kind], n_outputs=5, kind=kind).eval()
    shape = (9, *_INPUTS[kind])
    X = torch.randint(0, 5, shape) if kind == "text" else torch.randn(shape)
    export_onnx(model, X[:2], tmp_path / "m.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # one self-contained file (weights inside)
    check = compare(model, run_onnx, tmp_path / "m.onnx", X)  # another batch size than the example: dynamic
    assert check["passed"] and check["max_abs_diff"] <= TOLERANCE, check


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "iris"
    cfg = validate({"name": "iris", "data": {"source": "iris", "features": ["standard"]},
                    "model": {"name": "mlp", "hidden": [16]},
                    "train": {"epochs": 2, "progress": False, "batch_size": 16}, "track": {"mlflow": False},
                    "explain": {"enabled": False}, "evaluate": {"bootstrap": 20, "reference": False}})
    return methodo.run(cfg, out=out)


def test_onnx_export_is_usable_without_methodo(iris_run, tmp_path, capsys):
    import onnxruntime as ort
    import sklearn.datasets
    import skops.io as sio

    code, out, err = cli_inproc(capsys, "export", str(iris_run.run_dir), "--format", "onnx", "--out",
                                str(tmp_path / "exp"))
    assert code == 0, err
    exp = tmp_path / "exp"
    assert {p.name for p in exp.iterdir() if not p.name.startswith(".")} >= {
        "model.onnx", "preprocessing.json", "features.skops", "MODEL_CARD.md", "check.json"}
    check = json.loads((exp / "check.json").read_text())
    assert check["passed"] and check["max_abs_diff"] <= 1e-5 and check["inputs"].endswith("test rows of the run")
    assert "largest difference from PyTorch" in out
    # only numpy, skops and onnxruntime from here: the documented preprocessing, then the model
    pre = json.loads((exp / "preprocessing.json").read_text())
    X = sklearn.datasets.load_iris(as_frame=True).data[pre["columns"]].to_numpy(dtype=np.float64)
    pipe = sio.load(exp / "features.skops", trusted=sio.get_untrusted_types(file=exp / "features.skops"))
    Xt = np.asarray(pipe.transform(X), dtype=np.float32)
    sc = pre["scaling"]
    Xt = ((Xt - np.asarray(sc["mean"], np.float32).reshape(sc["shape"])) /
          np.asarray(sc["std"], np.float32).reshape(sc["shape"])).astype(np.float32)
    logits = ort.InferenceSession(str(exp / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": Xt})[0]
    proba = np.exp(logits - logits.max(1, keepdims=True))
    proba /= proba.sum(1, keepdims=True)
    want = methodo.load(iris_run.run_dir).predict_proba(sklearn.datasets.load_iris(as_frame=True).data)
    np.testing.assert_allclose(proba, want, atol=1e-5)
    assert pre["classes"] == ["setosa", "versicolor", "virginica"] and "softmax" in pre["outputs"]


def test_torchscript_and_safetensors_exports(iris_run, tmp_path, capsys):
    import sklearn.datasets

    X = sklearn.datasets.load_iris(as_frame=True).data
    want = methodo.load(iris_run.run_dir).predict_proba(X)
    code, out, err = cli_inproc(capsys, "export", str(iris_run.run_dir), "--format", "torchscript", "--out",
                                str(tmp_path / "ts"))
    assert code == 0, err
    assert json.loads((tmp_path / "ts" / "check.json").read_text())["max_abs_diff"] <= 1e-5
    scripted = torch.jit.load(str(tmp_path / "ts" / "model.pt"))
    x = methodo.load(iris_run.run_dir).model_input(methodo.load(iris_run.run_dir).chunks(X).__next__())
    np.testing.assert_allclose(scripted(x).softmax(1).detach().numpy(), want, atol=1e-6)
    code, out, err = cli_inproc(capsys, "export", str(iris_run.run_dir), "--format", "safetensors", "--out",
                                str(tmp_path / "st"))
    assert code == 0, err
    np.testing.assert_array_equal(methodo.load(tmp_path / "st").predict_proba(X), want)  # a folder methodo.load reads
    code, _, err = cli_inproc(capsys, "export", str(iris_run.run_dir), "--format", "pickle")
    assert code == 2 and "invalid choice: 'pickle'" in err
    code, _, err = cli_inproc(capsys, "export", str(iris_run.run_dir), "--format", "onnx", "--out", str(tmp_path / "st"))
    assert code == 2 and ("already holds a run" in err or "not empty" in err), err
