"""The Registry itself: registration with metadata, config checks, prefix families, lazy entries."""

from __future__ import annotations

import subprocess
import sys

import pytest

from methodo.errors import ConfigError
from methodo.registry import REGISTRIES, Registry


def _toy() -> Registry:
    reg = Registry("toy")

    @reg.register("ball", help="a ball", task="classification", best=1.0)
    def ball():
        return "ball"

    reg.register("kite", lambda: "kite", help="a kite")
    return reg


def test_register_is_a_decorator_and_a_call_with_metadata():
    reg = _toy()
    assert reg.names() == ["ball", "kite"] and len(reg) == 2 and "ball" in reg
    assert reg.get("ball")() == "ball" and reg.get("kite")() == "kite"
    assert reg.entry("ball").meta == {"task": "classification", "best": 1.0} and reg.entry("kite").meta == {}
    assert reg.name_of(reg.get("ball")) == "ball" and reg.name_of(object()) is None


def test_help_defaults_to_the_first_docstring_line():
    reg = Registry("toy")

    @reg.register("doc")
    def doc():
        """First line.

        More."""

    assert reg.entry("doc").help == "First line."


def test_register_refuses_a_second_entry_and_a_colon():
    reg = _toy()
    with pytest.raises(ValueError, match="already registered"):
        reg.register("ball", object())
    with pytest.raises(ValueError, match="may not contain ':'"):
        reg.register("a:b", object())


def test_check_returns_the_value_or_names_key_value_and_choices():
    reg = _toy()
    assert reg.check("kite", key="data.toy") == "kite"
    with pytest.raises(ConfigError) as exc:
        reg.check("kit", key="data.toy")
    assert str(exc.value) == "data.toy: unknown toy 'kit'; choose one of 'ball' or 'kite'"
    assert reg.check(["ball", "kite"], key="data.toys") == ["ball", "kite"]
    with pytest.raises(ConfigError, match=r"^data\.toys\.1: unknown toy 'bal'; choose one of 'ball' or 'kite'$"):
        reg.check(["ball", "bal"], key="data.toys")


def test_prefix_resolves_a_family_of_names_through_its_handler():
    reg = _toy()
    seen = []

    def handler(rest):
        seen.append(rest)
        if rest == "nope":
            raise ConfigError(f"no toy shop sells {rest!r}")
        return f"shop {rest}"

    reg.register_prefix("shop", handler, help="any toy from the shop", source="shop")
    assert "shop:robot" in reg and not seen  # membership does not call the handler
    e = reg.entry("shop:robot", key="model.name")
    assert (e.name, e.obj, e.help) == ("shop:robot", "shop robot", "any toy from the shop")
    assert e.meta == {"source": "shop", "prefix": "shop"} and seen == ["robot"]
    assert reg.check("shop:robot", key="model.name") == "shop:robot"
    assert reg.names() == ["ball", "kite"] and [p.prefix for p in reg.prefixes()] == ["shop"]
    with pytest.raises(ConfigError, match=r"^model\.name: no toy shop sells 'nope'$"):
        reg.get("shop:nope", key="model.name")
    with pytest.raises(ValueError, match="already registered"):
        reg.register_prefix("shop", handler)


def test_unknown_prefix_names_the_known_prefixes():
    reg = _toy()
    reg.register_prefix("timm", str, help="timm")
    reg.register_prefix("hf", str, help="hf")
    assert "tim:resnet18" not in reg
    with pytest.raises(ConfigError) as exc:
        reg.get("tim:resnet18", key="model.name")
    assert str(exc.value) == "model.name: unknown toy prefix 'tim' in 'tim:resnet18'; known prefixes: 'hf' or 'timm'"
    with pytest.raises(ConfigError) as exc:  # a plain unknown name also says the prefixes exist
        reg.get("robot", key="model.name")
    assert str(exc.value).endswith("choose one of 'ball' or 'kite', or hf:NAME or timm:NAME")


def test_lazy_entry_is_imported_when_first_asked_for():
    reg = Registry("thing")
    reg.register_lazy("dumps", "json:dumps", help="JSON text")
    import json

    assert reg.get("dumps") is json.dumps and reg.entry("dumps").help == "JSON text"


def test_registries_are_listed_without_importing_them():
    code = ("import sys\nfrom methodo.registry import REGISTRIES\nnames = REGISTRIES.names()\n"
            "print(len(names), 'torch' in sys.modules, 'numpy' in sys.modules)\n"
            "REGISTRIES.get('tasks')\nprint('torch' in sys.modules)\n"
            "REGISTRIES.get('models')\nprint('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.split() == [str(len(REGISTRIES)), "False", "False", "False", "True"]


def test_cli_list_choices_come_from_registries():
    from methodo.cli import LISTABLE, build_parser

    assert list(LISTABLE) == REGISTRIES.names() and "tasks" in LISTABLE
    assert build_parser().parse_args(["list", "tasks"]).what == "tasks"


def test_cli_lists_prefixes(monkeypatch, capsys):
    from methodo import cli

    reg = _toy()
    reg.register_prefix("shop", str, help="any toy from the shop")
    monkeypatch.setattr(cli.REGISTRIES, "get", lambda name, **kw: reg)
    assert cli.cmd_list("toys") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["ball", "kite", "shop:NAME"]
    assert lines[0].endswith("[classification]") and lines[2].split(None, 1)[1] == "any toy from the shop"
