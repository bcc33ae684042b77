"""Using a trained model: ``methodo.load``, ``methodo predict``, ``methodo evaluate`` (with drift checks),
``methodo export`` and the model card.

- :mod:`methodo.use.schema`: ``inputs.json``, what the model takes and gives (written by ``methodo run``);
- :mod:`methodo.use.inputs`: new inputs read and checked against it (CSV streamed in blocks, images, text);
- :mod:`methodo.use.predictor`: :class:`~methodo.use.predictor.Predictor` (``methodo.load``);
- :mod:`methodo.use.predict`: ``methodo predict``;
- :mod:`methodo.use.drift`: the training statistics saved at run time (``drift.json``) and the drift findings;
- :mod:`methodo.use.evaluate`: ``methodo evaluate`` (``evaluation.json``, ``evaluate.html``);
- :mod:`methodo.use.card`: ``MODEL_CARD.md``;
- :mod:`methodo.use.export`: ``methodo export`` (ONNX, TorchScript, safetensors);
- :mod:`methodo.use.mlflow_model`: the run's model as an MLflow pyfunc model.
"""

from __future__ import annotations

__all__ = ["load"]


def load(run_dir, *, device: str = "cpu"):
    """The trained model of ``run_dir`` with its preprocessing; see :class:`methodo.use.predictor.Predictor`."""
    from methodo.use.predictor import load as _load

    return _load(run_dir, device=device)
