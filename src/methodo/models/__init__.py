"""Model registry: every model is built from the data's input shape and number of outputs.

Examples
--------
>>> from methodo.models import MODELS, build_model
>>> MODELS.names()
['cnn', 'mlp', 'resnet']
>>> net = build_model("mlp", input_shape=(4,), n_outputs=3)
>>> net(__import__("torch").zeros(2, 4)).shape
torch.Size([2, 3])
"""

from __future__ import annotations

from methodo.errors import ConfigError, choices
from methodo.models.zoo import MODELS
from methodo.registry import check_kwargs

__all__ = ["MODELS", "build_model", "check_model_options"]

_RESERVED = ("input_shape", "n_outputs")


def check_model_options(name: str, options: dict) -> None:
    fn = MODELS.get(name)  # the config loader adds the key (model.name) to the message
    check_kwargs(fn, options, reserved=_RESERVED, what=f"model {name!r}")


def build_model(name: str, *, input_shape: tuple[int, ...], n_outputs: int, kind: str = "tabular", **options):
    """Build the registered model ``name`` sized for the data."""
    entry = MODELS.entry(name, key="model.name")
    accepts = entry.meta.get("inputs", ("image", "tabular"))
    if kind not in accepts:
        fits = [e.name for e in MODELS.entries() if kind in e.meta.get("inputs", ("image", "tabular"))]
        raise ConfigError(
            f"model.name: model {name!r} needs {' or '.join(accepts)} data but the dataset is {kind}; "
            f"choose {choices(fits)}"
        )
    check_kwargs(entry.obj, options, reserved=_RESERVED, what=f"model {name!r}")
    return entry.obj(input_shape=tuple(input_shape), n_outputs=n_outputs, **options)
