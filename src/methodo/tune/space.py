"""The search space: YAML over any config key, turned into Optuna suggestions.

A space file maps dotted config keys to what a trial may give them::

    train.optimizer.lr: {float: [1e-4, 1e-1], log: true}      # log-uniform
    model.width: {int: [8, 64], step: 8}                        # 8, 16, ..., 64
    train.optimizer.name: {choice: [sgd, adam]}
    train.optimizer.momentum: {float: [0.5, 0.99], when: {train.optimizer.name: sgd}}   # conditional
    model: {choice: [{name: mlp, hidden: [128]}, {name: cnn, width: 16}]}               # whole sub-configs

Keys are sampled in file order; ``when`` names keys sampled before (or set in the config) and the
value(s) they must hold. Every trial's config goes through the same strict validation as
``methodo run`` (:func:`methodo.config.validate`); :meth:`Space.check` refuses, before any trial
runs, a space whose single values already make an invalid config (``model.width: {int: [0, 8]}``).

Examples
--------
>>> sp = Space.from_text("train.optimizer.lr: {float: [0.001, 0.1], log: true}")
>>> [(p.key, p.kind, p.low, p.high, p.log) for p in sp.params]
[('train.optimizer.lr', 'float', 0.001, 0.1, True)]
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from methodo.errors import ConfigError, choices, clip, short

_KINDS = ("float", "int", "choice")
_OPTIONS = {"float": {"log", "step", "points", "when"}, "int": {"log", "step", "when"}, "choice": {"when"}}
MAX_GRID = 10_000  # points of a grid search space
_SHORTHAND = ("optimizer", "scheduler", "model")  # sections that may be written as a bare name


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def label_of(value: Any) -> Any:
    """What Optuna stores for a choice: the value itself when scalar, else its one-line YAML."""
    if _is_scalar(value):
        return value
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()


@dataclass
class Param:
    """One searched key: ``kind`` float | int | choice, its range or choices, and its condition."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    points: int | None = None  # grid search: points of a float range without a step
    choices: list = field(default_factory=list)
    when: dict[str, list] = field(default_factory=dict)  # key → the values that make this key active
    line: int | None = None

    @property
    def labels(self) -> list:
        return [label_of(c) for c in self.choices]

    def where(self, source: str) -> str:
        return f"{source} line {self.line}" if self.line else source

    def value_of(self, label: Any) -> Any:
        """The config value behind an Optuna value (a choice's label → the choice)."""
        if self.kind != "choice":
            return label
        return self.choices[self.labels.index(label)]

    def suggest(self, trial) -> Any:
        """Ask ``trial`` (an Optuna trial) for this key's value; returns the config value."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        return self.value_of(trial.suggest_categorical(self.key, self.labels))

    def distribution(self):
        import optuna.distributions as d

        if self.kind == "float":
            return d.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return d.IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return d.CategoricalDistribution(self.labels)

    def grid(self, source: str) -> list:
        """The values a grid search tries (a ``ConfigError`` for a float range without step or points)."""
        import numpy as np

        if self.kind == "choice":
            return self.labels
        if self.kind == "int":
            if self.log:
                n = self.points or min(self.high - self.low + 1, 10)
                vals = sorted({int(round(v)) for v in np.geomspace(self.low, self.high, n)})
            else:
                vals = list(range(self.low, self.high + 1, self.step or 1))
        elif self.step is not None:
            n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
            vals = [float(self.low + i * self.step) for i in range(n)]
        elif self.points is not None:
            space = np.geomspace if self.log else np.linspace
            vals = [float(v) for v in space(self.low, self.high, self.points)]
        else:
            raise ConfigError(f"{self.where(source)}: {self.key}: the grid sampler needs a finite set of values: "
                              "give this float range a step (step: 0.1) or a number of points (points: 5)")
        if len(vals) > MAX_GRID:
            raise ConfigError(f"{self.where(source)}: {self.key}: {len(vals)} grid values; at most {MAX_GRID}")
        return vals

    def edges(self) -> list:
        """Values that bound the key: both ends of a range, every choice (the up-front check tries them)."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


def get_key(data: dict, key: str) -> Any:
    """The value at a dotted key of plain config data (``None`` when absent); ``model: cnn`` reads as
    ``model.name: cnn``."""
    node: Any = data
    for part in key.split("."):
        if isinstance(node, str) and part == "name":
            return node
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def set_key(data: dict, key: str, value: Any) -> None:
    """Set a dotted key of plain config data in place (as an override ``key=value`` does)."""
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if isinstance(nxt, str) and part in _SHORTHAND:
            nxt = {"name": nxt}
        if nxt is None:
            nxt = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(parts[:i + 1])} is not a mapping, so {key} cannot be set")
        node[part] = nxt
        node = nxt
    node[parts[-1]] = copy.deepcopy(value)


class Space:
    """An ordered list of :class:`Param`, read from a space file (``from_file``) or text (``from_text``)."""

    def __init__(self, params: list[Param], source: str = "space", text: str = ""):
        self.params, self.source, self.text = params, source, text

    # ------------------------------------------------------------------ reading

    @classmethod
    def from_file(cls, path: str | Path) -> "Space":
        from methodo.config import _decode_text

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"--space {path}: file not found")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"--space {path}: cannot read it ({exc.strerror or exc})") from None
        return cls.from_text(_decode_text(raw, path), str(path))

    @classmethod
    def from_text(cls, text: str, source: str = "space") -> "Space":
        from methodo.config import _line_of, parse_yaml

        data, node = parse_yaml(text, source)
        if not isinstance(data, dict) or not data:
            raise ConfigError(f"{source}: a search space is a mapping of config keys to {{float: [low, high]}}, "
                              "{int: [low, high]} or {choice: [...]} (got "
                              f"{'nothing' if data is None else type(data).__name__})")
        params = []
        for key, spec in data.items():
            line = _line_of(node, (key,))
            params.append(_param(str(key), spec, line, source))
        sp = cls(params, source, text)
        sp._check_conditions()
        return sp

    def _check_conditions(self) -> None:
        seen: dict[str, Param] = {}
        for p in self.params:
            if p.key in seen:
                raise ConfigError(f"{p.where(self.source)}: {p.key}: searched twice")
            for other in seen:
                if p.key.startswith(other + ".") or other.startswith(p.key + "."):
                    raise ConfigError(f"{p.where(self.source)}: {p.key}: overlaps the searched key {other} "
                                      "(search a whole section or keys inside it, not both)")
            for cond, allowed in p.when.items():
                later = next((q for q in self.params[len(seen) + 1:] if q.key == cond), None)
                if later is not None:
                    raise ConfigError(f"{p.where(self.source)}: {p.key}: its condition names {cond}, which is "
                                      f"searched after it (line {later.line}); list {cond} first")
                src = seen.get(cond)
                if src is not None and src.kind == "choice":
                    never = [a for a in allowed if label_of(a) not in src.labels]
                    if len(never) == len(allowed):
                        raise ConfigError(f"{p.where(self.source)}: {p.key}: when {cond} is {short(allowed)}, "
                                          f"which {cond} never is (its choices: {choices(src.labels)})")
            seen[p.key] = p

    # ------------------------------------------------------------------ trials

    def active(self, p: Param, data: dict) -> bool:
        """Is ``p`` searched in a trial whose config so far is ``data``?"""
        for cond, allowed in p.when.items():
            got = get_key(data, cond)
            if not any(got == a or label_of(got) == label_of(a) for a in allowed):
                return False
        return True

    def suggest(self, trial, base: dict) -> tuple[dict, dict]:
        """The trial's config data (a copy of ``base`` with its values) and the values it got, by key."""
        data = copy.deepcopy(base)
        got = {}
        for p in self.params:
            if self.active(p, data):
                got[p.key] = p.suggest(trial)
                set_key(data, p.key, got[p.key])
        return data, got

    def apply(self, base: dict, values: dict) -> dict:
        """``base`` with ``values`` (key → config value) set: a finished trial's config, again."""
        data = copy.deepcopy(base)
        for p in self.params:
            if p.key in values and self.active(p, data):
                set_key(data, p.key, values[p.key])
        return data

    def config_values(self, params: dict) -> dict:
        """Optuna's stored params (choice labels) → config values, by key."""
        out = {}
        for p in self.params:
            if p.key in params:
                out[p.key] = p.value_of(params[p.key])
        return out

    def grid(self) -> dict[str, list]:
        return {p.key: p.grid(self.source) for p in self.params}

    def grid_size(self) -> int:
        n = 1
        for vals in self.grid().values():
            n *= len(vals)
        return n

    def check(self, base: dict, validate) -> None:
        """Refuse (``ConfigError`` naming the space line, key and value) a space one of whose own
        values makes an invalid config: each end of each range and each choice, set alone on ``base``
        with the conditions that make it active. ``validate(data, source)`` is the config's own check."""
        for p in self.params:
            data = copy.deepcopy(base)
            for cond, allowed in p.when.items():
                src = next((q for q in self.params if q.key == cond), None)
                if src is None and not self.active(Param(p.key, "choice", when={cond: allowed}), data):
                    raise ConfigError(f"{p.where(self.source)}: {p.key}: when {cond} is {short(allowed)}, but the "
                                      f"config sets {cond} to {short(get_key(base, cond))} and the space does not "
                                      "search it: this key would never be searched")
                if src is not None:
                    set_key(data, cond, next(src.value_of(label_of(a)) for a in allowed
                                             if src.kind != "choice" or label_of(a) in src.labels))
            for value in p.edges():
                trial = copy.deepcopy(data)
                set_key(trial, p.key, value)
                try:
                    validate(trial, f"{self.source}: {p.key}={short(label_of(value))}")
                except ConfigError as exc:
                    raise ConfigError(f"{p.where(self.source)}: {p.key}: the value {short(label_of(value))} makes "
                                      f"an invalid config ({clip(str(exc), 300)}); narrow the range or drop the "
                                      "choice") from None

    def to_dict(self) -> dict:
        out = {}
        for p in self.params:
            d: dict = {p.kind: p.choices if p.kind == "choice" else [p.low, p.high]}
            if p.log:
                d["log"] = True
            if p.step is not None:
                d["step"] = p.step
            if p.points is not None:
                d["points"] = p.points
            if p.when:
                d["when"] = p.when
            out[p.key] = d
        return out


def _number(v, *, integer: bool) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) if integer else isinstance(v, (int, float)) and math.isfinite(v)


def _param(key: str, spec: Any, line: int | None, source: str) -> Param:
    where = f"{source} line {line}" if line else source
    parts = key.split(".")
    if not key or any(not s for s in parts):
        raise ConfigError(f"{where}: {short(key)}: not a dotted config key (e.g. train.optimizer.lr)")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: {key}: expected {{float: [low, high]}}, {{int: [low, high]}} or "
                          f"{{choice: [...]}} (got {short(spec)})")
    kinds = [k for k in _KINDS if k in spec]
    if len(kinds) != 1:
        raise ConfigError(f"{where}: {key}: give exactly one of float, int or choice (got keys "
                          f"{choices(list(spec)) if spec else 'none'})")
    kind = kinds[0]
    unknown = [k for k in spec if k != kind and k not in _OPTIONS[kind]]
    if unknown:
        raise ConfigError(f"{where}: {key}: unknown option {short(unknown[0])} for {kind}; allowed: "
                          f"{choices(sorted(_OPTIONS[kind]))}")
    when = spec.get("when") or {}
    if not isinstance(when, dict) or not all(isinstance(k, str) for k in when):
        raise ConfigError(f"{where}: {key}: when: a mapping of config keys to a value or a list of values "
                          f"(e.g. when: {{train.optimizer.name: sgd}}; got {short(when)})")
    when = {k: list(v) if isinstance(v, list) else [v] for k, v in when.items()}
    if kind == "choice":
        vals = spec["choice"]
        if not isinstance(vals, list) or not vals:
            raise ConfigError(f"{where}: {key}: choice: a non-empty list of values (got {short(vals)})")
        labels = [label_of(v) for v in vals]
        if len(set(map(repr, labels))) != len(labels):
            raise ConfigError(f"{where}: {key}: choice: a value is listed twice")
        return Param(key, "choice", choices=vals, when=when, line=line)
    integer = kind == "int"
    rng = spec[kind]
    if not (isinstance(rng, list) and len(rng) == 2 and all(_number(v, integer=integer) for v in rng)):
        what = "integers" if integer else "numbers"
        raise ConfigError(f"{where}: {key}: {kind}: [low, high], two {what} (got {short(rng)})")
    low, high = rng
    if not low < high:
        raise ConfigError(f"{where}: {key}: {kind}: low must be below high (got [{low}, {high}])")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: {key}: log: true or false (got {short(log)})")
    if log and low <= 0:
        raise ConfigError(f"{where}: {key}: log: true needs low > 0 (got {low})")
    step = spec.get("step")
    if step is not None:
        if not _number(step, integer=integer) or step <= 0:
            raise ConfigError(f"{where}: {key}: step: a positive {'integer' if integer else 'number'} "
                              f"(got {short(step)})")
        if log and step != 1:
            raise ConfigError(f"{where}: {key}: step and log: true do not combine (Optuna samples a log range "
                              "continuously); drop one")
        if not integer:
            step = float(step)
    points = spec.get("points")
    if points is not None and (not _number(points, integer=True) or points < 2):
        raise ConfigError(f"{where}: {key}: points: an integer >= 2 (got {short(points)})")
    if not integer:
        low, high = float(low), float(high)
    return Param(key, kind, low=low, high=high, log=log, step=step, points=points, when=when, line=line)
