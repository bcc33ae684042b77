"""Model registry: every model is built from the data's input shape and number of outputs.

Examples
--------
>>> from methodo.models import MODELS, build_model
>>> MODELS.names()
['cnn', 'fcn', 'gru', 'mlp', 'resnet', 'transformer', 'unet']
>>> net = build_model("mlp", input_shape=(4,), n_outputs=3)
>>> net(__import__("torch").zeros(2, 4)).shape
torch.Size([2, 3])
"""

from __future__ import annotations

from methodo.errors import ConfigError, choices
from methodo.models import dense as _dense, language as _language  # they register their models
from methodo.models.zoo import MODELS
from methodo.registry import check_kwargs

del _dense, _language

__all__ = ["MODELS", "build_model", "check_model_options", "check_model_task", "model_tasks"]

_RESERVED = ("input_shape", "n_outputs")


def _row_tasks() -> tuple[str, ...]:
    """The tasks of a model registered without ``tasks=``: those with one output vector per row."""
    from methodo.tasks import TASKS

    return tuple(e.name for e in TASKS.entries() if e.obj.per_row)


def model_tasks(name: str) -> tuple[str, ...]:
    return tuple(MODELS.entry(name).meta.get("tasks", _row_tasks()))


def check_model_task(name: str, task: str, kind: str | None = None) -> None:
    """A ConfigError (without the key) when model ``name`` cannot do ``task``; it names the models that can."""
    if name in MODELS and task not in model_tasks(name):
        fits = [n for n in MODELS.names() if task in model_tasks(n)
                and (kind is None or kind in MODELS.entry(n).meta.get("inputs", ("image", "tabular")))]
        does = model_tasks(name)
        does = " or ".join(does) if len(does) < 3 else ", ".join(does[:-1]) + " or " + does[-1]
        raise ConfigError(f"model {name!r} does {does}, not {task}; choose {choices(fits)}")


def check_model_options(name: str, options: dict) -> None:
    fn = MODELS.get(name)  # the config loader adds the key (model.name) to the message
    check_kwargs(fn, options, reserved=_RESERVED, what=f"model {name!r}")


def build_model(name: str, *, input_shape: tuple[int, ...], n_outputs: int, kind: str = "tabular",
                task: str | None = None, **options):
    """Build the registered model ``name`` sized for the data (and checked against ``task`` when given)."""
    entry = MODELS.entry(name, key="model.name")
    if task is not None:
        try:
            check_model_task(name, task, kind)
        except ConfigError as exc:
            raise ConfigError(f"model.name: {exc}") from None
    accepts = entry.meta.get("inputs", ("image", "tabular"))
    if kind not in accepts:
        fits = [e.name for e in MODELS.entries() if kind in e.meta.get("inputs", ("image", "tabular"))]
        raise ConfigError(
            f"model.name: model {name!r} needs {' or '.join(accepts)} data but the dataset is {kind}; "
            f"choose {choices(fits)}"
        )
    check_kwargs(entry.obj, options, reserved=_RESERVED, what=f"model {name!r}")
    return entry.obj(input_shape=tuple(input_shape), n_outputs=n_outputs, **options)
