"""The trained model in MLflow, not only its numbers: a ``pyfunc`` model carrying its preprocessing.

At the end of a tracked run (``track.mlflow: true``) the pipeline logs:

- the model as an MLflow model named ``model`` (``runs:/RUN_ID/model``): a :class:`MethodoModel`
  (``mlflow.pyfunc.PythonModel``) whose artifact is a folder :func:`methodo.load` reads (the best
  weights, ``inputs.json``, ``preprocessor.json``, ``features.skops``, the model card), with its
  signature and an input example (the first training rows, raw), so
  ``mlflow.pyfunc.load_model("runs:/ID/model").predict(df)`` gives ``methodo predict``'s columns
  and numbers, and ``mlflow models serve`` serves it;
- the training split as an MLflow dataset input (name, source, digest, schema), context ``training``;
- with ``track.register: NAME``, the model registered in the MLflow Model Registry as ``NAME``.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from methodo.rundir import LAYOUT, RunDir

ARTIFACT = "model"  # the name of the logged model: runs:/RUN_ID/model
EXAMPLE_ROWS = 5


with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import mlflow.pyfunc


class MethodoModel(mlflow.pyfunc.PythonModel):
    """A methodo run's model as an MLflow pyfunc: raw inputs in, ``methodo predict``'s columns out
    (``predicted`` and the scores ``p_CLASS``), as a DataFrame. The inputs are checked by methodo
    (the columns, their types, the image shape) and by the logged signature, not by type hints."""

    _skip_type_hint_validation = True

    def load_context(self, context):
        _load_context(self, context)

    def predict(self, context, model_input, params=None):
        return _predict(self, model_input)


def _load_context(self, context) -> None:
    from methodo.use.predictor import load

    self.predictor = load(context.artifacts[ARTIFACT])


def _predict(self, model_input) -> pd.DataFrame:
    from methodo.use.inputs import Chunk
    from methodo.use.predict import output_table

    p = self.predictor
    if p.kind in ("image", "graph"):
        chunk = next(p.chunks(np.asarray(model_input, dtype=np.float32)))
    elif p.kind == "text":
        lines = model_input.iloc[:, 0].tolist() if isinstance(model_input, pd.DataFrame) else list(model_input)
        chunk = Chunk(np.asarray(lines, dtype=object), None, np.arange(len(lines)))
    else:
        chunk = next(p.chunks(model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)))
    table = output_table(p, chunk, p.scores_of(chunk))
    return table.to_pandas().drop(columns=[table.column_names[0]]).astype(
        {"predicted": str} if "predicted" in table.column_names and p.spec.has_classes else {})


def package(rd: RunDir, folder: Path) -> Path:
    """Copy what :func:`methodo.load` needs from the run dir into ``folder`` (the best weights as
    ``model.safetensors``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (LAYOUT["inputs"], LAYOUT["preprocessor"], LAYOUT["features"], LAYOUT["card"]):
        if rd.has(name):
            (folder / name).write_bytes(rd.read_bytes(name))
    (folder / "model.safetensors").write_bytes(rd.read_bytes(f"{LAYOUT['checkpoints']}/best.safetensors"))
    return folder


def example_input(prep, rows: int = EXAMPLE_ROWS):
    """The first training rows, raw (as ``methodo predict`` reads them)."""
    ds, train = prep.ds, prep.data.indices["train"][:rows]
    if ds.kind == "tabular":
        df = pd.DataFrame(ds.X[train].astype(np.float64), columns=list(ds.feature_names))
        for j, c in enumerate(ds.cat_names):
            df[c] = ds.cat[train, j]
        return df
    if ds.kind == "series":  # the pyfunc's inputs and outputs are tables and images (issue 14)
        raise NotImplementedError("a forecasting model is not packaged as an MLflow pyfunc yet; "
                                  "methodo.load(RUN_DIR).predict(windows) reads it")
    if ds.kind in ("image", "graph"):
        return np.ascontiguousarray(ds.X[train], dtype=np.float32)
    if "text" in ds.meta:  # labeled text: the raw texts the tokenizer step read
        return pd.DataFrame({"text": [str(t) for t in ds.meta["text"][train]]})
    from methodo.data.text import decode

    return pd.DataFrame({"text": [decode(x) for x in ds.X[train]]})


def training_dataset(prep):
    """The training split as an MLflow dataset (name, source, digest from its content, schema)."""
    import mlflow.data

    ds, cfg, train = prep.ds, prep.cfg, prep.data.indices["train"]
    source = str(Path(cfg.data.path).resolve()) if cfg.data.path else f"methodo:{cfg.data.source}"
    name = f"{ds.name} (train split)"
    if ds.kind == "tabular" and ds.cat is None:
        df = pd.DataFrame(ds.X[train], columns=list(ds.feature_names))
        target = cfg.data.target or "target"
        df[target] = ds.y[train] if ds.y.ndim == 1 else list(ds.y[train])
        return mlflow.data.from_pandas(df, source=_source(source), name=name, targets=target)
    return mlflow.data.from_numpy(np.ascontiguousarray(ds.X[train]), targets=np.ascontiguousarray(ds.y[train]),
                                  source=_source(source), name=name)


def _source(uri: str):
    """A dataset source MLflow can record: the data file or folder, else the registry name (a code source)."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.filesystem_dataset_source import FileSystemDatasetSource  # noqa: F401
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    try:
        return resolve_dataset_source(uri)
    except Exception:  # noqa: BLE001 - no source type claims "methodo:iris": record it as a code source
        return CodeDatasetSource(tags={"methodo.dataset": uri})


def log_model(prep, rd: RunDir, *, register: str | None = None) -> str:
    """Log the run's model (and its training data as a dataset input) to the active MLflow run; returns
    the model's URI. ``register``: also register it in the Model Registry under that name."""
    import contextlib
    import io
    import logging
    import os

    import mlflow
    import torch
    from mlflow.models import infer_signature

    from methodo.use.predictor import load

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in a run's log
    mlflow.log_input(training_dataset(prep), context="training")
    with tempfile.TemporaryDirectory() as tmp:
        folder = package(rd, Path(tmp) / ARTIFACT)
        example = example_input(prep)
        model = MethodoModel()
        model.predictor = load(folder)
        output = model.predict(None, example)
        signature = infer_signature(example, output)
        log = logging.getLogger("mlflow")
        level = log.level
        log.setLevel(logging.ERROR)  # MLflow warns about pickling a Python object: ours is a class of this module
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                info = mlflow.pyfunc.log_model(
                name=ARTIFACT, python_model=MethodoModel(), artifacts={ARTIFACT: str(folder)}, signature=signature,
                input_example=example,
                    pip_requirements=["methodo", f"torch=={torch.__version__.split('+')[0]}", "numpy", "pandas",
                                      "pyarrow", "scikit-learn", "skops", "safetensors", "pydantic", "pyyaml"])
            if register:
                with contextlib.redirect_stderr(io.StringIO()):  # "Successfully registered model ...": said below
                    version = mlflow.register_model(info.model_uri, register)
                print(f"registered the model as {register!r} version {version.version} in the MLflow Model Registry",
                      file=sys.stderr)
        finally:
            log.setLevel(level)
    return info.model_uri

