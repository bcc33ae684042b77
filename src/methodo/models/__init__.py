"""Model registry: every model is built from the data's input shape and number of outputs.

Examples
--------
>>> from methodo.models import MODELS, build_model
>>> MODELS.names()
['cnn', 'ddpm', 'fcn', 'gcn', 'gin', 'gru', 'mlp', 'recurrent', 'resnet', 'tcn', 'text_rnn',
 'text_transformer', 'transformer', 'unet']
>>> net = build_model("mlp", input_shape=(4,), n_outputs=3)
>>> net(__import__("torch").zeros(2, 4)).shape
torch.Size([2, 3])
"""

from __future__ import annotations

from methodo.errors import ConfigError, choices, clip, short
from methodo.models import dense as _dense, language as _language  # they register their models
from methodo.models import sequence as _sequence  # noqa: I001
from methodo.models import text as _text  # noqa: I001
from methodo.models import graph as _graph  # noqa: I001
from methodo.models import diffusion as _diffusion  # noqa: I001
from methodo.models.zoo import MODELS
from methodo.registry import check_kwargs

del _dense, _language, _sequence, _text, _graph, _diffusion

# Families resolved by prefix (methodo.models.backbones); their libraries are imported when a name is resolved.


def _timm(rest: str):
    from methodo.models.backbones import timm_factory

    return timm_factory(rest)


def _hf(rest: str):
    from methodo.models.backbones import hf_factory

    return hf_factory(rest)


MODELS.register_prefix("timm", _timm,
                       help="any timm architecture, e.g. timm:resnet18 (`methodo list models --timm FILTER`)",
                       inputs=("image",), example="test_resnet")
MODELS.register_prefix("hf", _hf,
                       help="a Hugging Face sequence classifier from a local folder, a package that ships it, or the "
                            "HF cache, e.g. hf:sentence-transformers/all-MiniLM-L6-v2 (text_csv data)",
                       inputs=("text",), tasks=("classification",), example="sentence-transformers/all-MiniLM-L6-v2")

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


MAX_PARAMETERS = 2_000_000_000  # on the dummy input below; a model larger than this is a typo (width=1e9)
_DUMMY = {"tabular": (8,), "image": (3, 32, 32), "text": (16,), "graph": (8, 13)}  # input shape of the config-time build
_DUMMY_TEXT = {"tabular": "8-feature", "image": "3×32×32 image", "text": "16-token", "graph": "8-node graph"}
_DUMMY["series"] = (24, 1)
_DUMMY_TEXT["series"] = "24-step, 1-variable window"


def check_model_options(name: str, options: dict) -> None:
    """Names, types and values of a model's options, before any data is read.

    The options are checked against the factory's signature, then the model is built once on
    PyTorch's ``meta`` device (no memory) for a small dummy input, so the model's own argument
    checks (dropout in [0, 1), positive widths, ...) and PyTorch's run at config time. Raises
    ConfigError with ``key`` the option (the config loader adds ``model.``).
    """
    import torch

    entry = MODELS.entry(name)  # the config loader adds the key (model.name) to the message
    check_kwargs(entry.obj, options, reserved=_RESERVED, what=f"model {name!r}")
    kind = next(k for k in _DUMMY if k in entry.meta.get("inputs", ("image", "tabular")))
    try:
        with torch.device("meta"):
            net = entry.obj(input_shape=_DUMMY[kind], n_outputs=3, **options)
    except ConfigError:
        raise
    except (ValueError, TypeError, RuntimeError, OverflowError, ZeroDivisionError) as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"model {name!r} cannot be built with {short(options)}: {clip(msg, 200)}",
                          key=next(iter(options), None)) from None
    n = sum(p.numel() for p in net.parameters())
    if n > MAX_PARAMETERS:
        raise ConfigError(f"model {name!r} with {short(options)} has {n:.3g} parameters on a small "
                          f"{_DUMMY_TEXT[kind]} input, over the {MAX_PARAMETERS:.0e} limit; "
                          "check the widths", key=next(iter(options), None))


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
    import torch

    from methodo.data.sources import _available_memory

    try:
        with torch.device("meta"):  # size it first: an allocation failure is not a message
            n = sum(p.numel() for p in entry.obj(input_shape=tuple(input_shape), n_outputs=n_outputs,
                                                 **options).parameters())
        need, avail = 16 * n, _available_memory()  # weights, gradients and two optimizer moments, float32
        if avail is not None and need > avail:
            raise ConfigError(f"model.name: model {name!r} has {n:.3g} parameters for this data's "
                              f"{'×'.join(map(str, input_shape))} input: weights, gradients and optimizer state "
                              f"need about {need / 2**30:.1f} GiB, more than the {avail / 2**30:.1f} GiB available; "
                              "use a smaller model (model.hidden, model.width) or smaller inputs (data.image_size)")
        return entry.obj(input_shape=tuple(input_shape), n_outputs=n_outputs, **options)
    except ConfigError as exc:  # the model's own argument checks name the option
        if exc.key and not str(exc).startswith("model."):
            raise ConfigError(f"model.{exc.key}: {exc}", key=exc.key) from None
        raise
