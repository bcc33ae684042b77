"""All twelve ``torch.optim`` optimizers by name, with their options checked before a run starts.

Examples
--------
>>> from methodo.train.optim import OPTIMIZERS
>>> len(OPTIMIZERS)
12
"""

from __future__ import annotations

import re

from methodo.errors import ConfigError
from methodo.registry import Registry, check_kwargs

OPTIMIZERS = Registry("optimizer")

# name → (torch.optim class name, help). LBFGS re-evaluates the loss through a closure.
_TORCH = {
    "adadelta": ("Adadelta", "Adadelta: per-parameter rates from running averages of updates"),
    "adagrad": ("Adagrad", "Adagrad: rates shrink with the sum of squared gradients"),
    "adam": ("Adam", "Adam: momentum + RMS scaling (coupled L2 weight decay)"),
    "adamw": ("AdamW", "AdamW: Adam with decoupled weight decay"),
    "adamax": ("Adamax", "Adamax: Adam with the infinity norm"),
    "asgd": ("ASGD", "averaged SGD"),
    "lbfgs": ("LBFGS", "L-BFGS quasi-Newton (steps with a closure; full-batch friendly)"),
    "nadam": ("NAdam", "Adam with Nesterov momentum"),
    "radam": ("RAdam", "rectified Adam (variance warm-up built in)"),
    "rmsprop": ("RMSprop", "RMSprop: rates from a running average of squared gradients"),
    "rprop": ("Rprop", "resilient backprop: sign-based steps (full-batch)"),
    "sgd": ("SGD", "stochastic gradient descent, with momentum / Nesterov options"),
}
for _name, (_cls, _help) in _TORCH.items():
    OPTIMIZERS.register(_name, _cls, help=_help, closure=_name == "lbfgs")


def _cls(name: str, key: str | None = "train.optimizer.name"):
    import torch.optim

    return getattr(torch.optim, OPTIMIZERS.get(name, key=key))


def check_optimizer_options(name: str, options: dict) -> None:
    """Raise ``ConfigError`` (with the option as ``key``) for options ``name`` refuses.

    Builds the optimizer once over a dummy parameter so torch's own range checks
    (e.g. ``momentum=-1``) are reported before anything runs.
    """
    import torch

    cls = _cls(name, key=None)  # the config loader adds the key to the message
    check_kwargs(cls.__init__, options, reserved=("params", "lr"), what=f"optimizer {name!r}")
    try:
        cls([torch.zeros(1, requires_grad=True)], lr=0.1, **_coerce(options))
    except (ValueError, TypeError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0]
        key = next((k for k in options if re.search(rf"\b{k}\b", msg, re.I)), None)
        raise ConfigError(f"optimizer {name!r} refuses this value: {msg}", key=key) from None


def _coerce(options: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}


HYPERGRADIENT = ("sgd", "adam")  # optimizers train.optimizer.hypergradient applies to (Baydin et al. 2018)


def hypergradient_class(base):
    """``base`` (torch's SGD or Adam) with hypergradient descent on its learning rate (Baydin et al. 2018,
    "Online learning rate adaptation with hypergradient descent").

    Before each step, every parameter group's LR moves against the gradient of the loss with respect to
    the LR itself::

        h_t = g_t · Δ_{t-1} / lr_{t-1}      (Δ_{t-1} = θ_t − θ_{t-1}: the last update, per unit of LR)
        lr_t = max(0, lr_{t-1} − β · h_t)   (β: hypergradient_beta)

    For SGD, Δ/lr = −(momentum buffer or gradient); for Adam, −m̂/(√v̂ + ε): SGD-HD and Adam-HD of the
    paper. Consecutive gradients that agree (h < 0) raise the LR, oscillation (h > 0) lowers it. The
    last update of each parameter is kept in the optimizer's state (``hd_delta``), so a resumed run
    continues the adaptation.
    """

    class Hypergradient(base):
        def __init__(self, params, lr, *, hypergradient_beta: float, **options):
            super().__init__(params, lr=lr, **options)
            for g in self.param_groups:
                g.setdefault("hypergradient_beta", float(hypergradient_beta))

        @torch_no_grad()
        def step(self, closure=None):
            import torch

            before = []
            for group in self.param_groups:
                params = [p for p in group["params"] if p.grad is not None]
                # 1. The hypergradient of this group's LR, from the new gradients and the last updates.
                pairs = [(p.grad, self.state[p]["hd_delta"]) for p in params if "hd_delta" in self.state[p]]
                if pairs:
                    h = torch.stack([(g.float() * d.float()).sum() for g, d in pairs]).sum()
                    group["lr"] = max(0.0, group["lr"] - group["hypergradient_beta"] * float(h))
                before.append((group, params, [p.detach().clone() for p in params]))
            # 2. The optimizer's own step, with the new LR.
            loss = super().step(closure)
            # 3. Remember each update per unit of LR (the derivative of the new weights w.r.t. the LR).
            for group, params, old in before:
                lr = group["lr"]
                for p, o in zip(params, old):
                    self.state[p]["hd_delta"] = (p.detach() - o) / lr if lr > 0 else torch.zeros_like(o)
            return loss

    Hypergradient.__name__ = Hypergradient.__qualname__ = f"{base.__name__}HD"
    return Hypergradient


def torch_no_grad():
    import torch

    return torch.no_grad()


def build_optimizer(params, name: str, lr: float, options: dict, hypergradient: float | None = None):
    """The torch optimizer ``name`` over ``params``: parameters, or parameter groups (dicts with
    ``"params"`` and per-group options such as ``lr``, torch's format); ``lr`` and ``options`` are
    the defaults of every group. Frozen parameters (``requires_grad=False``) are left out, except in
    a group with ``"keep_frozen": True`` (unfrozen later: gradual unfreezing).

    >>> import torch
    >>> body, head = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    >>> opt = build_optimizer([{"params": body.parameters(), "lr": 0.01}, {"params": head.parameters()}],
    ...                       "sgd", 0.1, {"momentum": 0.9})
    >>> [g["lr"] for g in opt.param_groups]
    [0.01, 0.1]

    ``hypergradient``: the step β of hypergradient descent on the LR (sgd and adam; :func:`hypergradient_class`).
    """
    params = list(params)
    if params and isinstance(params[0], dict):
        groups = [{**_coerce({k: v for k, v in g.items() if k not in ("params", "keep_frozen")}),
                   "params": [p for p in g["params"] if p.requires_grad or g.get("keep_frozen")]} for g in params]
        params = [g for g in groups if g["params"]]
    else:
        params = [p for p in params if p.requires_grad]
    if hypergradient is not None:
        if name not in HYPERGRADIENT:
            raise ConfigError(f"train.optimizer.hypergradient: applies to {' and '.join(HYPERGRADIENT)} (got {name!r})")
        return hypergradient_class(_cls(name))(params, lr=lr, hypergradient_beta=hypergradient, **_coerce(options))
    return _cls(name)(params, lr=lr, **_coerce(options))


def needs_closure(name: str) -> bool:
    return bool(OPTIMIZERS.entry(name).meta.get("closure"))
