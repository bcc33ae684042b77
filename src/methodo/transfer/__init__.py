"""Transfer strategies: what to freeze and which learning rate where, for a pretrained model.

A strategy (``transfer.strategy``, the ``STRATEGIES`` registry) takes the built model (pretrained
weights loaded) and returns a :class:`Plan`: it sets ``requires_grad`` on the model and gives the
training loop's seams their values (``param_groups``: discriminative LRs; ``on_epoch``: gradual
unfreezing). The loop itself knows nothing of transfer.

The model is cut into **blocks**, bottom-up, the head last (:func:`blocks`): the zoo's ``body``
layers; timm's own parameter groups (``group_matcher``: stem, stages, head); for Hugging Face
encoders the embeddings, each numbered layer, the pooler. Block ``k`` under the head trains at
``lr × lr_decay**k`` (ULMFiT's discriminative fine-tuning; the head's group is group 0, whose LR
the run logs).

Frozen normalization layers stay in evaluation mode while training (a forward pre-hook on the
model): a frozen backbone's batch-norm statistics do not drift with the new data.

Examples
--------
>>> import torch
>>> from methodo.transfer import STRATEGIES, plan
>>> from methodo.models import build_model
>>> net = build_model("mlp", input_shape=(4,), n_outputs=3, hidden=[8, 8])
>>> p = plan(net, "linear_probe")
>>> p.info["trainable_parameters"], p.info["total_parameters"]
(27, 139)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from methodo.errors import ConfigError
from methodo.registry import Registry

STRATEGIES = Registry("strategy")


@dataclass
class Plan:
    """A strategy's decisions: the loop's ``param_groups`` and ``on_epoch`` seams, and what to report."""

    strategy: str
    groups: list[dict] | None = None  # {"params", "lr_scale", "keep_frozen"?}: see param_groups
    on_epoch: Callable[[dict], object] | None = None
    at_epoch: Callable[[int], None] | None = None  # put the freezing of epoch E back (resume)
    info: dict = field(default_factory=dict)
    pretrained: dict | None = None  # what load_pretrained did
    adapter: object = None  # lora: the PEFT model (saves the adapter alone)

    def param_groups(self, lr: float) -> list[dict] | None:
        """The loop's ``param_groups`` for base LR ``lr`` (None: one group of every trainable parameter)."""
        if self.groups is None:
            return None
        return [{k: v for k, v in g.items() if k != "lr_scale"} | {"lr": lr * g["lr_scale"]} for g in self.groups]


# --------------------------------------------------------------------------- blocks


def blocks(model) -> list[tuple[str, list]]:
    """``[(name, parameters)]`` bottom-up, the head last; every parameter in exactly one block."""
    from methodo.models.backbones import head_names

    named = list(model.named_parameters())
    heads = head_names(model)
    is_head = lambda n: any(n == h or n.startswith(h + ".") for h in heads)  # noqa: E731
    order: dict[str, int] = {}
    if hasattr(model, "body") and hasattr(model, "head"):  # the zoo: one block per body layer with weights
        layer = {n: int(n.split(".")[1]) for n, _ in named if n.startswith("body.")}
        order = {n: i for i, n in enumerate(sorted(set(layer.values())))}
        key = lambda n: order[layer[n]]  # noqa: E731
    elif getattr(model, "pretrained_cfg", None) is not None and hasattr(model, "group_matcher"):
        from timm.models import group_parameters

        groups = group_parameters(model, model.group_matcher(coarse=True))
        gid = {n: g for g, names in groups.items() for n in names}
        key = lambda n: gid.get(n, 0)  # noqa: E731
    else:  # numbered layers (transformers' encoder.layer.N, h.N, layers.N): embeddings before, pooler after
        num = {n: int(m.group(1)) for n, _ in named if (m := re.search(r"\.(?:layer|layers|h|blocks)\.(\d+)\.", n))}
        top = max(num.values(), default=-1)
        seen_layer = False
        where = {}
        for n, _ in named:
            if n in num:
                seen_layer = True
                where[n] = num[n] + 1
            else:
                where[n] = 0 if not seen_layer else top + 2
        key = lambda n: where[n]  # noqa: E731
    by_block: dict[int, list] = {}
    names: dict[int, str] = {}
    head: list = []
    for n, p in named:
        if is_head(n):
            head.append(p)
            continue
        k = key(n)
        by_block.setdefault(k, []).append(p)
        names.setdefault(k, n.rsplit(".", 1)[0])
    out = [(names[k], by_block[k]) for k in sorted(by_block)]
    if head:
        out.append(("head", head))
    return out


def _count(params) -> int:
    return int(sum(p.numel() for p in params))


def _freeze_norms_hook(model, *, whole: bool = False, head=()) -> None:
    """Frozen modules stay in eval mode while the model trains: those with running statistics (batch
    norm), or with ``whole`` every frozen subtree and every parameter-free layer outside the ``head``
    modules (dropout off too: a linear probe's features are the backbone's deterministic ones, the
    same as the cached ones of :mod:`methodo.transfer.cache`)."""
    import torch

    in_head = {id(m) for h in head for m in h.modules()}

    def keep_frozen_eval(module, args):
        if not module.training:
            return
        for m in module.modules():
            own = list(m.parameters(recurse=whole))
            if own and not any(p.requires_grad for p in own) and (
                    whole or isinstance(m, torch.nn.modules.batchnorm._NormBase)):
                m.eval()
            elif whole and not own and id(m) not in in_head and not any(True for _ in m.children()):
                m.eval()  # a parameter-free layer between the frozen backbone and the head (a dropout)

    model.register_forward_pre_hook(keep_frozen_eval)


def _groups(bl: list[tuple[str, list]], decay: float, *, keep_frozen: bool = False) -> list[dict] | None:
    """Head first at the LR, block k under it at ``LR × decay**k`` (None when decay is 1)."""
    if decay >= 1:
        return None
    return [{"params": params, "lr_scale": decay ** depth, **({"keep_frozen": True} if keep_frozen else {})}
            for depth, (_, params) in enumerate(reversed(bl))]


def _info(model, strategy: str, bl, **extra) -> dict:
    total = _count(model.parameters())
    trainable = _count(p for p in model.parameters() if p.requires_grad)
    return {"strategy": strategy, "trainable_parameters": trainable, "total_parameters": total,
            "trainable_share": round(trainable / max(total, 1), 6), "blocks": len(bl), **extra}


# --------------------------------------------------------------------------- strategies


@STRATEGIES.register("none", help="train every weight at the optimizer's LR (what a model from scratch does)")
def none(model, *, lr_decay: float = 1.0, unfreeze_every: int = 1, **_) -> Plan:
    return Plan("none", info=_info(model, "none", blocks(model)))


@STRATEGIES.register("linear_probe", help="freeze the backbone, train the head only (a linear model on the "
                     "pretrained features)")
def linear_probe(model, *, lr_decay: float = 1.0, unfreeze_every: int = 1, **_) -> Plan:
    bl = blocks(model)
    if len(bl) < 2 or bl[-1][0] != "head":
        raise ConfigError("transfer.strategy: linear_probe needs a model with a separate head (its output layer); "
                          "this model has none that methodo can find")
    for _, params in bl[:-1]:
        for p in params:
            p.requires_grad_(False)
    from methodo.models.backbones import head_names

    heads = []
    for name in head_names(model):
        try:
            heads.append(model.get_submodule(name))
        except AttributeError:
            continue
    _freeze_norms_hook(model, whole=True, head=heads)
    return Plan("linear_probe", info=_info(model, "linear_probe", bl))


@STRATEGIES.register("finetune", help="train every weight; transfer.lr_decay < 1 gives lower LRs to lower blocks "
                     "(discriminative fine-tuning)")
def finetune(model, *, lr_decay: float = 1.0, unfreeze_every: int = 1, **_) -> Plan:
    bl = blocks(model)
    return Plan("finetune", groups=_groups(bl, lr_decay), info=_info(model, "finetune", bl, lr_decay=lr_decay))


@STRATEGIES.register("gradual_unfreeze", help="train the head first, then unfreeze one more block top-down every "
                     "transfer.unfreeze_every epochs (ULMFiT)")
def gradual_unfreeze(model, *, lr_decay: float = 1.0, unfreeze_every: int = 1, **_) -> Plan:
    bl = blocks(model)
    if len(bl) < 2:
        raise ConfigError("transfer.strategy: gradual_unfreeze needs a model of at least two blocks")
    # every block is in the optimizer from the start (keep_frozen); torch skips a parameter without a gradient
    groups = _groups(bl, lr_decay, keep_frozen=True) or [
        {"params": [p for _, ps in reversed(bl) for p in ps], "lr_scale": 1.0, "keep_frozen": True}]
    top_down = list(reversed(bl))

    def at_epoch(epoch: int) -> None:
        """The blocks trained in ``epoch`` (1-based): the head, and one more every unfreeze_every epochs."""
        n = min(len(top_down), 1 + (epoch - 1) // unfreeze_every)
        for i, (_, params) in enumerate(top_down):
            for p in params:
                p.requires_grad_(i < n)

    def on_epoch(row: dict) -> None:
        at_epoch(int(row["epoch"]) + 1)

    at_epoch(1)
    _freeze_norms_hook(model)
    return Plan("gradual_unfreeze", groups=groups, on_epoch=on_epoch, at_epoch=at_epoch,
                info=_info(model, "gradual_unfreeze", bl, lr_decay=lr_decay, unfreeze_every=unfreeze_every,
                           all_unfrozen_at_epoch=1 + (len(bl) - 1) * unfreeze_every))


STRATEGIES.register_lazy("lora", "methodo.transfer.lora:lora", help="low-rank adapters (LoRA, through PEFT) on "
                         "a frozen model; the adapter is saved alone and merges for inference")


def plan(model, strategy: str, *, lr_decay: float = 1.0, unfreeze_every: int = 1, lora=None, family: str = "") -> Plan:
    """Apply ``strategy`` to ``model`` (freezing, adapters) and return its :class:`Plan`. LoRA wraps the
    model: use ``plan.adapter`` (the model to train) when it is set."""
    fn = STRATEGIES.get(strategy, key="transfer.strategy")
    return fn(model, lr_decay=lr_decay, unfreeze_every=unfreeze_every, lora=lora, family=family)


def setup(cfg, model, *, classes: list[str] | None = None):
    """The model to train and its :class:`Plan`: ``model.pretrained`` loaded (an ``hf:`` model's own
    weights when it is null; the head re-initialized when a run dir's classes are not ``classes``), then
    ``transfer.strategy`` applied. Returns ``(model, plan)``."""
    from methodo.models.backbones import load_pretrained

    source = cfg.model.pretrained
    if source is None and cfg.model.name.startswith("hf:"):
        source = model.folder
    loaded = None
    if source is not None and source != "scratch":
        loaded = load_pretrained(model, source, model_name=cfg.model.name, classes=classes).to_dict()
    t = cfg.transfer
    p = plan(model, t.strategy, lr_decay=t.lr_decay, unfreeze_every=t.unfreeze_every, lora=t.lora,
             family=cfg.model.name.partition(":")[0] if ":" in cfg.model.name else "zoo")
    p.pretrained = loaded
    return (p.adapter if p.adapter is not None else model), p


def load_run_model(rd, cfg, *, input_shape, n_outputs: int, kind: str):
    """A finished run's model with its best weights, for inference (``methodo embed``, ``merge``).

    A LoRA run is rebuilt as it was trained: the base model, its pretrained weights, and the saved
    adapter on top (``adapter/``), which gives the run's predictions exactly.
    """
    from methodo.models import build_model
    from methodo.models.backbones import load_pretrained
    from methodo.rundir import LAYOUT
    from methodo.train.checkpoint import load_checkpoint

    model = build_model(cfg.model.name, input_shape=tuple(input_shape), n_outputs=n_outputs, kind=kind,
                        **cfg.model.options)
    if cfg.transfer.strategy == "lora":
        source = cfg.model.pretrained if cfg.model.pretrained is not None or not cfg.model.name.startswith("hf:") \
            else model.folder
        if source not in (None, "scratch"):
            load_pretrained(model, source, model_name=cfg.model.name)
        if rd.has(f"{LAYOUT['adapter']}/adapter_config.json"):
            from methodo.transfer.lora import load_adapter

            return load_adapter(model, rd.file(LAYOUT["adapter"])).eval()
        model = plan(model, "lora", lora=cfg.transfer.lora).adapter
    model.load_state_dict(load_checkpoint(rd.file(f"{LAYOUT['checkpoints']}/best.safetensors"))[0])
    return model.eval()


def merge_run(run_dir) -> dict:
    """``methodo merge RUN_DIR``: fold a LoRA run's adapter into the weights; writes
    ``checkpoints/merged.safetensors`` (the base architecture's state dict, loadable without PEFT) and
    returns ``{file, bytes, max_abs_diff}`` (merged vs adapter outputs on the test split)."""
    import torch

    from methodo.config import load_config
    from methodo.errors import BadInput
    from methodo.evaluate.embeddings import _test_inputs
    from methodo.rundir import LAYOUT, RunDir
    from methodo.train.checkpoint import save_checkpoint

    rd = RunDir.open(run_dir, needs="config")
    cfg = load_config(rd.file(LAYOUT["config"]))
    if cfg.transfer.strategy != "lora" or not rd.has(f"{LAYOUT['adapter']}/adapter_config.json"):
        raise BadInput(f"merge {rd.path}: not a LoRA run with a saved adapter (transfer.strategy: lora, "
                       f"{LAYOUT['adapter']}/); other runs' weights are checkpoints/best.safetensors already")
    ds, _, X = _test_inputs(rd, cfg)
    from methodo.tasks import task_spec

    n_out = task_spec(ds.task).n_outputs(ds)
    model = load_run_model(rd, cfg, input_shape=X.shape[1:], n_outputs=n_out, kind=ds.kind)
    with torch.no_grad():
        before = model(X[:256])
        from methodo.transfer.lora import merge

        merged = merge(model).eval()
        after = merged(X[:256])
    path = save_checkpoint(rd.file(LAYOUT["merged"]), {k: v.contiguous() for k, v in merged.state_dict().items()},
                           meta={"merged_from": LAYOUT["adapter"]})
    return {"file": path, "bytes": path.stat().st_size, "max_abs_diff": float((before - after).abs().max())}
