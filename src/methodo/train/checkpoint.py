"""Checkpoints that load without unpickling anything, written atomically.

A checkpoint is ONE safetensors file: the model's weights under their ``state_dict`` names, and,
for a resumable checkpoint, every other tensor of the training state (optimizer moments, RNG
states, ...) under ``_state.N`` keys, with the state's structure as JSON in the file's metadata.
``best.safetensors`` is plain weights; ``last.safetensors`` adds the state. Writes go to a
temporary file in the same folder, are fsynced, then renamed over the old file, so a crash at
any moment leaves the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from methodo.errors import BadInput, CheckpointWriteError

_STATE = "_state."
_META_KEY = "methodo_state"


def _flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able tree of ``obj`` with tensors moved into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = f"{_STATE}{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": _flatten(torch.from_numpy(obj.copy()), tensors)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": {k: _flatten(v, tensors) for k, v in obj.items()}}
        return {"__items__": [[_flatten(k, tensors), _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_flatten(v, tensors) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if isinstance(obj, float) and not np.isfinite(obj):
            return {"__float__": repr(obj)}
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint (only tensors and plain data)")


def _unflatten(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, list):
        return [_unflatten(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if "__ndarray__" in tree:
        return _unflatten(tree["__ndarray__"], tensors).numpy()
    if "__dict__" in tree:
        return {k: _unflatten(v, tensors) for k, v in tree["__dict__"].items()}
    if "__items__" in tree:
        return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in tree["__items__"]}
    if "__tuple__" in tree:
        return tuple(_unflatten(v, tensors) for v in tree["__tuple__"])
    if "__float__" in tree:
        return float(tree["__float__"])
    raise ValueError(f"unknown checkpoint node {sorted(tree)}")


def save_checkpoint(path: str | Path, weights: dict[str, torch.Tensor], state: Any = None,
                    meta: dict[str, Any] | None = None) -> Path:
    """Atomically write ``weights`` (+ optional training ``state`` and ``meta``) to ``path``."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in weights.items()}
    clash = [k for k in tensors if k.startswith(_STATE)]
    if clash:
        raise ValueError(f"weight name {clash[0]!r} collides with the reserved prefix {_STATE!r}")
    metadata = {"format": "methodo-1", "meta": json.dumps(meta or {})}
    if state is not None:
        extra: dict[str, torch.Tensor] = {}
        metadata[_META_KEY] = json.dumps(_flatten(state, extra))
        tensors.update(extra)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, SafetensorError) as exc:  # disk full, file size limit, unwritable dir
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).split(": ", 1)[-1]
        kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
        raise CheckpointWriteError(f"could not write checkpoint {path}: {why}; {kept}") from None
    finally:
        tmp.unlink(missing_ok=True)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], Any, dict[str, Any]]:
    """``(weights, state or None, meta)`` from a checkpoint written by :func:`save_checkpoint`.

    Only the safetensors format is read — a pickle (``torch.save``) file, a truncated file or a
    header that lies about its size is refused with :class:`~methodo.errors.BadInput`; nothing in
    the file can run code.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: checkpoint not found")
    head = path.read_bytes()[:8]
    if head[:2] in (b"\x80\x02", b"\x80\x04", b"\x80\x05") or head[:2] == b"PK":
        raise BadInput(f"{path}: this is a pickle/torch.save file; methodo loads only safetensors "
                       "checkpoints and never unpickles (unpickling can run arbitrary code)")
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            for k in fh.keys():
                tensors[k] = fh.get_tensor(k)
        weights = {k: v for k, v in tensors.items() if not k.startswith(_STATE)}
        state = None
        if _META_KEY in metadata:
            state = _unflatten(json.loads(metadata[_META_KEY]), tensors)
        meta = json.loads(metadata.get("meta", "{}"))
    except Exception as exc:  # SafetensorError, JSON errors, unknown nodes: all mean a bad file
        raise BadInput(f"{path}: not a valid methodo safetensors checkpoint ({str(exc).splitlines()[0]})") from None
    return weights, state, meta


def misfit(weights: dict, own: dict) -> tuple[str, str] | None:
    """How checkpoint ``weights`` fail to fit a model's ``own`` state dict (exactly its names and shapes):
    ``("shape", "NAME: missing|shape S, the model has SHAPE")`` or ``("extra", "NAME")`` (a weight the model
    lacks); ``None`` when they fit."""
    for k, v in own.items():
        if k not in weights or tuple(weights[k].shape) != tuple(v.shape):
            got = "missing" if k not in weights else f"shape {tuple(weights[k].shape)}"
            return "shape", f"{k}: {got}, the model has {tuple(v.shape)}"
    extra = sorted(set(weights) - set(own))
    return ("extra", extra[0]) if extra else None
