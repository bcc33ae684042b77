"""One small registry type used by every extension point (datasets, models, optimizers, ...).

``Registry.register`` is the only way in: a decorator (or a call) taking the name, a help line and
free metadata as keyword arguments (``task=``, ``higher_is_better=``, ...), which listings, checks
and the contract tests (``tests/test_contracts.py``) read. ``register_prefix`` adds a whole family
of names (``timm:NAME``) resolved by a handler; ``check`` validates a config value, naming the key,
the value and the choices. ``REGISTRIES`` lists every registry by name, each imported only when
first asked for (``methodo list WHAT``), so ``methodo --help`` stays light.

Examples
--------
>>> from methodo.registry import Registry
>>> MODELS = Registry("model")
>>> @MODELS.register("tiny", help="a tiny model", tasks=("classification",))
... def tiny(): return 1
>>> MODELS.get("tiny")()
1
>>> MODELS.names("t*"), MODELS.entry("tiny").meta
(['tiny'], {'tasks': ('classification',)})
>>> MODELS.check("tiny", key="model.name")
'tiny'
>>> MODELS.check("tinny", key="model.name")
Traceback (most recent call last):
...
methodo.errors.ConfigError: model.name: unknown model 'tinny'; choose one of 'tiny'

A prefix resolves a family of names through a handler:

>>> MODELS.register_prefix("toy", lambda rest: f"toy model {rest}", help="any toy model by name")
>>> MODELS.get("toy:robot")
'toy model robot'
>>> MODELS.get("lego:robot", key="model.name")
Traceback (most recent call last):
...
methodo.errors.ConfigError: model.name: unknown model prefix 'lego' in 'lego:robot'; known prefixes: 'toy'
"""

from __future__ import annotations

import fnmatch
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from methodo.errors import ConfigError, choices, clip, short


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    help: str = ""
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Prefix:
    """A family of names ``PREFIX:REST`` whose object is ``handler(REST)``."""

    prefix: str
    handler: Callable[[str], Any]
    help: str = ""
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Lazy:
    """An object to import from ``"package.module:attr"`` when first needed."""

    target: str

    def load(self) -> Any:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


class Registry:
    """A name → object mapping with a help line and free metadata per entry."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._prefixes: dict[str, Prefix] = {}

    def register(self, name: str, obj: Any = None, *, help: str = "", **meta) -> Callable:
        """Register ``obj`` under ``name`` with a help line and metadata (keyword arguments).

        Usable as a decorator when ``obj`` is omitted; the help defaults to the first line of the
        object's docstring. A name may not be registered twice, nor contain ``:`` (prefixes).
        """
        if ":" in name:
            raise ValueError(f"{self.kind} name {name!r} may not contain ':' (see register_prefix)")

        def add(o):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = Entry(name, o, help or _first_line(o.__doc__), meta)
            return o

        return add if obj is None else add(obj)

    def register_lazy(self, name: str, target: str, *, help: str, **meta) -> None:
        """Register the object at ``"package.module:attr"``, imported the first time it is asked for."""
        self.register(name, _Lazy(target), help=help, **meta)

    def register_prefix(self, prefix: str, handler: Callable[[str], Any], *, help: str = "", **meta) -> None:
        """Resolve every name ``prefix:REST`` to ``handler(REST)`` (e.g. ``timm:resnet18``).

        The handler may raise :class:`~methodo.errors.ConfigError` for a ``REST`` it does not know.
        """
        if not prefix or ":" in prefix:
            raise ValueError(f"{self.kind} prefix {prefix!r} must be non-empty and without ':'")
        if prefix in self._prefixes:
            raise ValueError(f"{self.kind} prefix {prefix!r} is already registered")
        self._prefixes[prefix] = Prefix(prefix, handler, help, meta)

    def entry(self, name: str, *, key: str | None = None) -> Entry:
        """The entry for ``name``; a ``ConfigError`` naming ``key``, the value and the choices otherwise."""
        where = f"{key}: " if key else ""
        e = self._entries.get(name) if isinstance(name, str) else None
        if e is not None:
            if isinstance(e.obj, _Lazy):
                e = self._entries[name] = Entry(e.name, e.obj.load(), e.help, e.meta)
            return e
        if isinstance(name, str) and ":" in name and self._prefixes:
            prefix, _, rest = name.partition(":")
            p = self._prefixes.get(prefix)
            if p is None:
                raise ConfigError(f"{where}unknown {self.kind} prefix {short(prefix)} in {short(name)}; known prefixes: "
                                  f"{choices(sorted(self._prefixes))}")
            try:
                obj = p.handler(rest)
            except ConfigError as exc:
                raise ConfigError(f"{where}{exc}", key=exc.key) from None
            return Entry(name, obj, p.help, {**p.meta, "prefix": prefix})
        known = choices(self.names())
        if self._prefixes:
            known += f", or {' or '.join(p + ':NAME' for p in sorted(self._prefixes))}"
        raise ConfigError(f"{where}unknown {self.kind} {short(name)}; choose one of {known}")

    def get(self, name: str, *, key: str | None = None) -> Any:
        return self.entry(name, key=key).obj

    def check(self, value: str | list | tuple, *, key: str | None = None) -> str | list | tuple:
        """``value`` itself when it names an entry (each item, for a list); a one-line
        ``ConfigError`` naming ``key`` (``key.I`` for item I), the value and the choices otherwise."""
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                self.entry(v, key=f"{key}.{i}" if key else None)
        else:
            self.entry(value, key=key)
        return value

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names (not prefixes) matching the glob ``pattern``, sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def entries(self) -> list[Entry]:
        return [self.entry(n) for n in self.names()]

    def prefixes(self) -> list[Prefix]:
        return [self._prefixes[p] for p in sorted(self._prefixes)]

    def name_of(self, obj: Any) -> str | None:
        """The name ``obj`` is registered under (``None`` if it is not)."""
        return next((n for n, e in self._entries.items() if e.obj is obj), None)

    def __contains__(self, name: str) -> bool:
        """A registered name, or a name under a registered prefix (its handler is not called)."""
        if name in self._entries:
            return True
        return isinstance(name, str) and name.partition(":")[0] in self._prefixes and ":" in name

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"


PLUGIN_GROUP = "methodo.plugins"
_plugins: list[str] | None = None  # the plugin modules imported so far (None: not looked for yet)


def load_plugins() -> list[str]:
    """Import, once, every module an installed package declares under the entry-point group
    ``methodo.plugins``: importing it registers its models, datasets, metrics, ... (a project made by
    ``methodo new`` declares its own ``src/NAME`` package there). Installed packages only: a config
    never names code to import. Returns the entry points' names; a plugin that fails to import is
    a :class:`ConfigError` naming it.
    """
    global _plugins
    if _plugins is not None:
        return _plugins
    from importlib.metadata import entry_points

    _plugins = []
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            ep.load()
        except Exception as exc:  # noqa: BLE001 (any error of someone else's module: one line, naming it)
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ConfigError(f"plugin {ep.name!r} ({ep.value}, entry point {PLUGIN_GROUP}) cannot be imported: "
                              f"{clip(reason, 200)}") from None
        _plugins.append(ep.name)
    return _plugins


def check_kwargs(fn: Callable, options: dict, *, reserved: tuple[str, ...] = (), what: str) -> None:
    """Check ``options`` against the keyword parameters of ``fn``.

    Raises ``ConfigError(key=option)`` for an option ``fn`` does not take, or whose type differs
    from the default's (a number for a number, a bool for a bool, a list for a tuple).
    """
    import inspect

    params = {
        n: p for n, p in inspect.signature(fn).parameters.items()
        if n not in reserved and n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    for key, value in options.items():
        if key not in params:
            raise ConfigError(f"option not accepted by {what}; accepted: {choices(sorted(params))}", key=key)
        default = params[key].default
        if default is inspect.Parameter.empty or default is None:
            continue
        ok = True
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            # torch declares float options with int defaults (weight_decay=0): any number fits
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, (tuple, list)):
            ok = isinstance(value, (tuple, list))
        elif isinstance(default, str):
            ok = isinstance(value, str)
        if not ok:
            raise ConfigError(
                f"{what} expects {type(default).__name__} like {default!r} (got {short(value)})", key=key
            )



# --------------------------------------------------------------------------- the registry of registries

REGISTRIES = Registry("registry")
"""Every extension point by its listing name (``methodo list NAME``), imported when first asked for."""

for _name, _target, _help in (
    ("augmentations", "methodo.data.augment:AUGMENTATIONS", "training-only image augmentations (data.augment)"),
    ("balancers", "methodo.data.balance:BALANCERS", "class balancing of the training split (data.balance)"),
    ("datasets", "methodo.data.sources:DATASETS", "dataset loaders (data.source)"),
    ("explainers", "methodo.explain:EXPLAINERS", "image attribution methods (explain.methods)"),
    ("features", "methodo.data.features:FEATURES", "table feature steps fitted on train (data.features)"),
    ("feature_functions", "methodo.data.features:FUNCTIONS", "named functions of the 'function' feature step (fn)"),
    ("findings", "methodo.diagnose:FINDINGS", "what diagnose and the data audit can report"),
    ("labs", "methodo.labs:LABS", "the course's concepts as deterministic experiments (methodo lab NAME)"),
    ("metrics", "methodo.evaluate.metrics:METRICS", "task metrics (evaluate.metrics)"),
    ("models", "methodo.models:MODELS", "models (model.name)"),
    ("optimizers", "methodo.train.optim:OPTIMIZERS", "torch.optim optimizers (train.optimizer.name)"),
    ("pruners", "methodo.tune.samplers:PRUNERS", "Optuna pruners that stop poor trials early (methodo tune --pruner)"),
    ("samplers", "methodo.tune.samplers:SAMPLERS", "Optuna samplers that choose each trial's values "
     "(methodo tune --sampler)"),
    ("regularizers", "methodo.train.regularize:REGULARIZERS", "penalties, constraints and clipping (train.*)"),
    ("schedulers", "methodo.train.schedules:SCHEDULERS", "learning-rate schedulers (train.scheduler.name)"),
    ("strategies", "methodo.transfer:STRATEGIES", "transfer strategies for pretrained models (transfer.strategy)"),
    ("splits", "methodo.data.split:SPLITS", "train/val/test split methods (data.split.method)"),
    ("tasks", "methodo.tasks:TASKS", "tasks: what differs per task, from the loss to the outputs (task)"),
):
    REGISTRIES.register_lazy(_name, _target, help=_help)
del _name, _target, _help
