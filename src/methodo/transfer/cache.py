"""A linear probe on cached features: the frozen backbone runs once, the head trains on its outputs.

With ``transfer.strategy: linear_probe`` the backbone is frozen and in evaluation mode, so its output
for a row never changes: computing it every epoch (forward through a pretrained network for a linear
head) is wasted work. :func:`cached_probe` runs the model once over the training and validation
tensors, keeps what enters the head (a forward pre-hook on the head module), and gives the loop the
head alone over those features: same batches (the same seeded permutation, the same rows), same
optimizer, same numbers up to float rounding (features computed in other batch sizes), and an epoch
costs the head's work only.

The head trains inside :class:`HeadOnFeatures`, whose ``state_dict`` is the whole model's: the loop's
checkpoints, best weights and resume are those of the uncached run, so ``best.safetensors`` loads into
the model as always and the later stages (predict, evaluate, explain) use the whole model.

Not cached (the loop runs the whole model, as before): augmented batches (each epoch's inputs
differ), SWA, a head that is not one module taking one tensor, a model whose output is not its head's
(checked on a batch), or features over ``MAX_BYTES``. ``summary.json`` → ``transfer.cached_features``
says which, and why.
"""

from __future__ import annotations

import time

import torch

MAX_BYTES = 4 * 1024 ** 3  # features of train + val kept in memory at most


class HeadOnFeatures(torch.nn.Module):
    """The head over cached features; ``state_dict``/``load_state_dict`` are the whole model's (its weights
    are the ones trained, in place), so checkpoints and resume are those of the uncached run."""

    def __init__(self, full: torch.nn.Module, head: torch.nn.Module):
        super().__init__()
        self.head = head
        object.__setattr__(self, "full", full)  # not a submodule: parameters(), train(), to() are the head's

    def forward(self, features):
        return self.head(features)

    def state_dict(self, *args, **kwargs):
        return self.full.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.full.load_state_dict(state_dict, strict=strict, assign=assign)


def _head_module(model):
    from methodo.models.backbones import head_names

    found = []
    for name in head_names(model):
        try:
            found.append(model.get_submodule(name))
        except AttributeError:
            continue
    return found[0] if len(found) == 1 else None


@torch.no_grad()
def features(model, head, X, *, batch_size: int, device) -> torch.Tensor:
    """What enters ``head`` when ``model`` (eval mode) reads ``X``, batch by batch."""
    got: list = []

    def grab(module, args):
        got.append(args[0].detach())

    handle = head.register_forward_pre_hook(grab)
    try:
        out = []
        for s in range(0, len(X), batch_size):
            got.clear()
            model(X[s:s + batch_size].to(device))
            if len(got) != 1 or not torch.is_tensor(got[0]):
                raise ValueError("the head is called more than once, or on something other than one tensor")
            out.append(got[0])
        return torch.cat(out) if out else torch.zeros(0)
    finally:
        handle.remove()


def cached_probe(model, data, tcfg):
    """``(model to train, data to train on, info)``: the head over the cached train/val features when they can
    be cached (see the module docstring), else the model and data as they are, with ``info["used"]`` False and
    the reason."""
    import dataclasses

    from methodo.train.loop import resolve_device

    def skip(reason: str):
        return model, data, {"used": False, "reason": reason}

    if data.augment is not None:
        return skip("the training batches are augmented (data.augment): each epoch's inputs differ")
    if tcfg.swa is not None:
        return skip("train.swa averages the whole model")
    head = _head_module(model)
    if head is None:
        return skip("no single head module to feed")
    device = resolve_device(tcfg.device)
    Xtr, ytr = data.tensors["train"]
    Xva, yva = data.tensors["val"]
    t0 = time.perf_counter()
    was_training = model.training
    model.to(device).eval()
    try:
        probe = features(model, head, Xtr[:2], batch_size=2, device=device)
        with torch.no_grad():
            same = torch.allclose(head(probe).float(), model(Xtr[:2].to(device)).float(), atol=1e-5, rtol=1e-4)
        if not same:
            return skip("the model's output is not its head's output")
        per_row = probe[0].numel() * probe.element_size()
        if per_row * (len(Xtr) + len(Xva)) > MAX_BYTES:
            return skip(f"the features would take {per_row * (len(Xtr) + len(Xva)) / 1e9:.1f} GB")
        bs = tcfg.eval_batch_size
        Ftr = features(model, head, Xtr, batch_size=bs, device=device)
        Fva = features(model, head, Xva, batch_size=bs, device=device)
    except ValueError as exc:
        return skip(str(exc))
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - t0
    fdata = dataclasses.replace(data, tensors={**data.tensors, "train": (Ftr, ytr), "val": (Fva, yva)},
                                train_inputs=None)
    info = {"used": True, "rows": int(len(Ftr) + len(Fva)), "shape": list(Ftr.shape[1:]),
            "bytes": int(per_row * (len(Ftr) + len(Fva))), "seconds": round(seconds, 4)}
    return HeadOnFeatures(model, head), fdata, info
