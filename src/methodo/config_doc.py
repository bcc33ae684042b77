"""The config reference, generated from the schema in :mod:`methodo.config`.

Every key's type, default, allowed values and help text come from the pydantic ``Field``
declarations, so ``docs/config.md``, ``methodo config show KEY`` and ``methodo config --help``
cannot drift from what the loader accepts. Imports nothing heavy (no torch): only the schema.

Examples
--------
>>> from methodo.config_doc import find_key, render_text
>>> print(render_text(find_key("train.epochs")).splitlines()[0])
train.epochs  int, ≥ 1, ≤ 100000  (default 30)
"""

from __future__ import annotations

import difflib
import json
import textwrap
import types
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from methodo.errors import BadInput, choices

REGENERATE = "methodo config docs --out docs/config.md"


@dataclass
class Key:
    """One config key: a plain field, a section (nested model) or a component (``name`` + own options)."""

    path: str
    type: str
    default: str
    help: str
    kind: Literal["field", "section", "component"] = "field"
    options_help: str = ""
    children: list[Key] = field(default_factory=list)

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()


# --------------------------------------------------------------------------- schema → keys


def _fmt_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v if v else "''"
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v).replace('"', "")
    return repr(v)


def _constraints(info) -> str:
    out = []
    for m in info.metadata:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                out.append(f"{sym} {_fmt_value(getattr(m, attr))}")
        lo, hi = getattr(m, "min_length", None), getattr(m, "max_length", None)
        if lo is not None or hi is not None:
            out.append(f"{lo or 0}–{hi} characters" if hi is not None else f"at least {lo} characters")
    return ", ".join(out)


def _type_parts(ann) -> tuple[list[str], type[BaseModel] | None]:
    """Readable alternatives of a type annotation, plus the nested model class if there is one."""
    origin, args = get_origin(ann), get_args(ann)
    if origin in (Union, types.UnionType):
        parts, model = [], None
        for a in args:
            p, m = _type_parts(a)
            parts += p
            model = model or m
        return parts, model
    if origin is Literal:
        return [repr(a) for a in args], None
    if ann is type(None):
        return ["null"], None
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ["section"], ann
    if origin is list:
        inner = [a for a in args if a is not Any]
        return ([f"list of {_type_parts(inner[0])[0][0]}"] if inner else ["list"]), None
    if origin is dict:
        return ["mapping"], None
    if ann is Any:
        return ["any"], None
    return [getattr(ann, "__name__", str(ann))], None


def _join(parts: list[str]) -> str:
    parts = list(dict.fromkeys(parts))
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def _default(info) -> Any:
    if info.default_factory is not None:
        return info.default_factory()
    return info.default


def _keys(model: type[BaseModel], prefix: str) -> list[Key]:
    out = []
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        parts, sub = _type_parts(info.annotation)
        help_ = " ".join((info.description or "").split())
        if info.is_required():
            default = "required"
        else:
            d = _default(info)
            default = "(section defaults)" if isinstance(d, BaseModel) else _fmt_value(d)
        if sub is not None:
            kind = "component" if getattr(sub, "options_help", "") else "section"
            nullable = "null" in parts
            key = Key(path, kind + (" or null" if nullable else ""), default, help_, kind,
                      getattr(sub, "options_help", ""), _keys(sub, path))
        else:
            t = _join(parts)
            extra = _constraints(info)
            key = Key(path, f"{t}, {extra}" if extra else t, default, help_)
        out.append(key)
    return out


def reference() -> Key:
    """The whole schema as a tree of :class:`Key` (the root has path ``''``)."""
    from methodo.config import Config

    return Key("", "section", "", "A methodo experiment config.", "section", "", _keys(Config, ""))


def all_keys() -> list[str]:
    return [k.path for k in reference().walk() if k.path]


def find_key(path: str) -> Key:
    """The :class:`Key` at dotted ``path``; raises :class:`BadInput` naming close and allowed keys."""
    root = reference()
    if path in ("", "."):
        return root
    node = root
    for i, part in enumerate(path.split(".")):
        nxt = next((c for c in node.children if c.path.rsplit(".", 1)[-1] == part), None)
        if nxt is None:
            if node.kind == "component":  # train.optimizer.momentum: one of the component's own options
                return Key(path, f"an option of the chosen {node.path.rsplit('.', 1)[-1]}", "its own",
                           node.options_help, "field")
            names = [c.path.rsplit(".", 1)[-1] for c in node.children]
            prefix = f"{node.path}." if node.path else ""
            close = [prefix + n for n in difflib.get_close_matches(part, names, n=3, cutoff=0.6)]
            close += [k for k in all_keys() if k.rsplit(".", 1)[-1] == part and k not in close]  # misplaced key
            where = f"keys under {node.path!r}" if node.path else "top-level keys"
            hint = f"did you mean {choices(close)}? " if close else ""
            raise BadInput(f"unknown config key {path!r}; {hint}{where}: {choices(names)}")
        node = nxt
    return node


def component_options(path: str, name: str) -> list[tuple[str, str]]:
    """The options component ``name`` takes at ``path`` (``model``, ``train.optimizer``, ...), with defaults.

    Read from the same signatures the config loader checks options against. This imports the
    component's registry (and so torch), unlike the rest of this module.
    """
    import inspect

    key = f"{path}.name"
    if path == "model":
        from methodo import models

        fn, reserved, extra = models.MODELS.get(name, key=key), models._RESERVED, {}
    elif path == "train.optimizer":
        import torch.optim

        from methodo.train.optim import OPTIMIZERS

        fn, reserved, extra = getattr(torch.optim, OPTIMIZERS.get(name, key=key)).__init__, ("params", "lr"), {}
    elif path == "train.scheduler":
        from methodo.train import schedules

        fn, reserved, extra = schedules.SCHEDULERS.get(name, key=key), schedules._RESERVED, schedules.WARMUP_OPTIONS
    else:
        raise BadInput(f"--options: {path!r} is not a component; it applies to 'model', 'train.optimizer' or "
                       "'train.scheduler'")
    out = [(n, "required" if p.default is inspect.Parameter.empty else _fmt_value(p.default))
           for n, p in inspect.signature(fn).parameters.items()
           if n not in reserved and n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return out + [(n, _fmt_value(v)) for n, v in extra.items()]


# --------------------------------------------------------------------------- renderers


def render_text(key: Key, *, width: int = 100) -> str:
    """A key (and, for a section, everything under it) for the terminal."""
    lines: list[str] = []

    def wrap(text, indent):
        return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent) if text else []

    for k in key.walk():
        if not k.path:
            continue
        if k.kind == "field":
            lines.append(f"{k.path}  {k.type}  (default {k.default})")
            lines += wrap(k.help, "    ")
        else:
            lines.append(f"[{k.path}]  {k.type}" + (", null by default" if k.default == "null" else ""))
            lines += wrap(k.help, "    ")
            lines += wrap(k.options_help, "    ")
    return "\n".join(lines)


def sections_text() -> str:
    """The top-level keys, one line each (for ``methodo config --help``)."""
    root = reference()
    width = max(len(c.path) for c in root.children)
    lines = ["top-level keys (`methodo config show KEY` for one key or section, e.g. train.optimizer):"]
    for c in root.children:
        mark = "" if c.kind == "field" else " [section]"
        lines.append(f"  {c.path:<{width}}  {c.help}{mark}")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown() -> str:
    """The whole reference as Markdown: ``docs/config.md``."""
    root = reference()
    sections = [k for k in root.walk() if k.kind != "field"]
    out = [
        "# Config reference",
        "",
        f"<!-- Generated from the Field descriptions in src/methodo/config.py by `{REGENERATE}`. Do not edit: "
        "change the descriptions and regenerate (tests/test_config_doc.py fails when this file is stale). -->",
        "",
        "Every key a config accepts, with its type, default and meaning. Any key can also be set on the command "
        "line as a dotted override (`train.optimizer.lr=0.01`; `null` unsets an option); how configs are read "
        "and checked is in [running.md](running.md#configuration). In the terminal, `methodo config show KEY` "
        "prints one key or section of this page:",
        "",
        "```bash",
        "methodo config show train.early_stopping",
        "```",
        "",
        "Sections: " + " · ".join(f"`{s.path or 'top level'}`" for s in sections),
        "",
    ]
    for s in sections:
        out.append(f"## {'`' + s.path + '`' if s.path else 'Top level'}")
        out.append("")
        intro = s.help if s.path else ""
        if s.kind == "component":
            intro = f"{intro} {s.options_help}".strip()
        if s.path and s.default == "null":
            intro += " Null by default."
        if intro:
            out += [intro, ""]
        out += ["| key | type | default | description |", "|---|---|---|---|"]
        for c in s.children:
            desc = c.help if c.kind == "field" else f"{c.help} See `{c.path}` below."
            default = f"`{_cell(c.default)}`" if c.kind == "field" else c.default.strip("()")
            out.append(f"| `{c.path}` | {_cell(c.type)} | {default} | {_cell(desc)} |")
        out.append("")
    return "\n".join(out)
