"""One small registry type used by every extension point (datasets, models, optimizers, ...).

Examples
--------
>>> from methodo.registry import Registry
>>> MODELS = Registry("model")
>>> @MODELS.register("tiny", help="a tiny model")
... def tiny(): return 1
>>> MODELS.get("tiny")()
1
>>> MODELS.names("t*")
['tiny']
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable

from methodo.errors import ConfigError, choices


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    help: str = ""
    meta: dict = field(default_factory=dict)


class Registry:
    """A name → object mapping with a help line and free metadata per entry."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, obj: Any = None, *, help: str = "", **meta) -> Callable:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def add(o):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            doc = help or (o.__doc__ or "").strip().splitlines()[0:1]
            self._entries[name] = Entry(name, o, doc if isinstance(doc, str) else (doc[0] if doc else ""), meta)
            return o

        return add if obj is None else add(obj)

    def entry(self, name: str, *, key: str | None = None) -> Entry:
        """The entry for ``name``; a ``ConfigError`` naming ``key`` and the choices otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            where = f"{key}: " if key else ""
            raise ConfigError(
                f"{where}unknown {self.kind} {name!r}; choose one of {choices(self.names())}"
            ) from None

    def get(self, name: str, *, key: str | None = None) -> Any:
        return self.entry(name, key=key).obj

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


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
                f"{what} expects {type(default).__name__} like {default!r} (got {value!r})", key=key
            )

