"""The config reference comes from one source: the Field descriptions in methodo/config.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from methodo import config_doc
from methodo.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_docs_config_md_is_up_to_date():
    committed = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert committed == config_doc.render_markdown(), (
        f"docs/config.md is stale: regenerate it with `{config_doc.REGENERATE}` (from the repo root)")


def test_every_key_has_help_text_and_is_in_the_reference():
    text = config_doc.render_markdown()
    keys = list(config_doc.reference().walk())[1:]
    assert len(keys) > 80
    for k in keys:
        assert k.help, f"config key {k.path} has no description= in methodo/config.py"
        assert f"`{k.path}`" in text
    for k in keys:
        if k.kind == "component":
            assert k.options_help and "methodo list" in k.options_help


def test_literal_choices_defaults_and_ranges_are_shown():
    assert config_doc.find_key("train.early_stopping.mode").type == "'min', 'max' or null"
    epochs = config_doc.find_key("train.epochs")
    assert (epochs.type, epochs.default) == ("int, ≥ 1, ≤ 100000", "30")
    assert config_doc.find_key("train.swa").default == "null"
    assert config_doc.find_key("explain.methods").default.startswith("[saliency")


def test_config_show_prints_one_section(capsys):
    assert main(["config", "show", "train.optimizer"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[train.optimizer]  component")
    assert "train.optimizer.lr  float or 'auto'  (default 0.01)" in out
    assert "methodo list optimizers" in out and "train.scheduler" not in out


def test_config_show_a_component_option_explains_it(capsys):
    assert main(["config", "show", "train.optimizer.momentum"]) == 0
    assert "an option of the chosen optimizer" in capsys.readouterr().out


@pytest.mark.parametrize("key, hint", [
    ("train.optimiser", "did you mean 'train.optimizer'?"),
    ("train.patience", "did you mean 'train.early_stopping.patience'?"),
    ("nope", "top-level keys: 'name', 'seed'"),
])
def test_config_show_unknown_key_is_one_error_line(key, hint):
    p = subprocess.run([sys.executable, "-m", "methodo", "config", "show", key], capture_output=True, text=True,
                       cwd=ROOT)
    assert p.returncode == 2
    assert p.stdout == "" and len(p.stderr.splitlines()) == 1
    assert p.stderr.startswith(f"error: unknown config key {key!r}") and hint in p.stderr


def test_config_help_lists_the_sections_without_importing_torch():
    code = ("import sys\nfrom methodo.cli import main\ntry:\n    main(['config', '--help'])\nexcept SystemExit:\n"
            "    pass\nassert 'torch' not in sys.modules, 'torch imported'\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    for section in ("data", "model", "train", "evaluate", "track", "explain"):
        assert f"\n  {section} " in p.stdout
    code = ("import sys\nfrom methodo.cli import main\nmain(['config', 'show', 'train'])\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "train.lr_find.start_lr" in p.stdout


def test_config_show_options_lists_a_components_options_with_defaults(capsys):
    assert main(["config", "show", "train.optimizer", "--options", "adam"]) == 0
    out = capsys.readouterr().out
    assert "train.optimizer.betas" in out and "[0.9, 0.999]" in out
    assert "train.optimizer.lr " not in out  # a declared key, not one of the component's own options
    assert main(["config", "show", "model", "--options", "cnn"]) == 0
    assert "model.width    32" in capsys.readouterr().out
    assert main(["config", "show", "train.scheduler", "--options", "step"]) == 0
    assert "train.scheduler.warmup_epochs" in capsys.readouterr().out
    assert main(["config", "show", "model", "--options", "vgg"]) == 2
    assert capsys.readouterr().err.startswith("error: model.name: unknown model 'vgg'; choose one of 'cnn'")
    assert main(["config", "show", "train.epochs", "--options", "x"]) == 2


def test_config_docs_writes_the_reference(tmp_path, capsys):
    out = tmp_path / "config.md"
    assert main(["config", "docs", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == config_doc.render_markdown()
