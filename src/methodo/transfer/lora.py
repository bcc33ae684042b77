"""LoRA adapters through PEFT: the pretrained weights frozen, a low-rank update ``B·A`` trained beside
chosen layers, the head trained in full (PEFT's ``modules_to_save``).

The run saves the adapter alone (``adapter/``: PEFT's ``adapter_config.json`` and
``adapter_model.safetensors``, a small fraction of the model); :func:`load_adapter` puts it back on
the base model (rebuilt, pretrained weights loaded) and gives the run's predictions exactly;
:func:`merge` folds it into the weights for inference without PEFT (``methodo merge RUN_DIR``).
"""

from __future__ import annotations

from pathlib import Path

from methodo.errors import ConfigError


def _peft():
    try:
        import peft
    except ImportError:  # pragma: no cover - peft is a dependency
        raise ConfigError("transfer.strategy: lora needs the peft package: pip install peft") from None
    return peft


def default_targets(model, family: str) -> list[str]:
    """The layers LoRA adapts by default: attention query/value (BERT-like), ``qkv`` (ViTs), else every
    Linear and grouped-free Conv2d outside the head and the first convolution."""
    import torch

    from methodo.models.backbones import head_names

    heads = head_names(model)
    names = [n for n, _ in model.named_modules()]
    for wanted in (("query", "value"), ("q_proj", "v_proj"), ("qkv",)):
        found = [n for n in names if n.rsplit(".", 1)[-1] in wanted]
        if found:
            return sorted({n.rsplit(".", 1)[-1] for n in found})
    first = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    out = []
    for n, m in model.named_modules():
        if any(n == h or n.startswith(h + ".") for h in heads) or n == first:
            continue
        if isinstance(m, torch.nn.Linear) or (isinstance(m, torch.nn.Conv2d) and m.groups == 1 and n):
            out.append(n)
    if not out:
        raise ConfigError(f"transfer.lora.target_modules: model ({family}) has no Linear or Conv2d layer outside "
                          "its head to adapt; name the layers in transfer.lora.target_modules")
    return out


def lora(model, *, lora=None, family: str = "", **_):
    """The ``lora`` strategy: wrap ``model`` with PEFT adapters (see the module docstring)."""
    from methodo.models.backbones import head_names
    from methodo.transfer import Plan, _freeze_norms_hook, _info, blocks

    peft = _peft()
    r, alpha, dropout = (lora.r, lora.alpha, lora.dropout) if lora is not None else (8, 16.0, 0.0)
    targets = list(lora.target_modules) if lora is not None and lora.target_modules else default_targets(model, family)
    names = {n for n, _ in model.named_modules()}
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ConfigError(f"transfer.lora.target_modules: no layer named {missing[0]!r} in the model; e.g. "
                          f"{', '.join(sorted(n.rsplit('.', 1)[-1] for n in names if n)[:8])}")
    heads = [h for h in head_names(model) if h in names]
    n_blocks = len(blocks(model))
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                             modules_to_save=heads or None)
    try:
        wrapped = peft.get_peft_model(model, config)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ConfigError(f"transfer.lora: PEFT cannot adapt this model: {' '.join(str(exc).split())[:200]}") from None
    _freeze_norms_hook(wrapped)
    info = _info(wrapped, "lora", [None] * n_blocks,
                 lora={"r": r, "alpha": alpha, "dropout": dropout, "target_modules": targets, "head": heads})
    return Plan("lora", info=info, adapter=wrapped)


def save_adapter(model, rd) -> dict:
    """The adapter alone (PEFT's files) in the run dir's ``adapter/``, written atomically through the
    :class:`~methodo.rundir.RunDir`; ``{folder, bytes, files}``."""
    import tempfile

    from methodo.rundir import LAYOUT

    sub = LAYOUT["adapter"]
    rd.file(sub).mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        files = sorted(p for p in Path(tmp).iterdir() if p.is_file())
        for p in files:
            rd.write_bytes(f"{sub}/{p.name}", p.read_bytes())
        return {"folder": sub, "bytes": int(sum(p.stat().st_size for p in files)), "files": [p.name for p in files]}


def load_adapter(base, folder: Path):
    """The base model (pretrained weights loaded) with the adapter of ``folder`` on it, for inference."""
    peft = _peft()
    return peft.PeftModel.from_pretrained(base, str(folder), is_trainable=False)


def merge(model):
    """The adapter folded into the weights: a plain model of the base architecture (no PEFT at inference)."""
    return model.merge_and_unload()
