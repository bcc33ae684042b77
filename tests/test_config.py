"""Config: typed and strict; every error names the key (and YAML line) and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from methodo.config import load_config
from methodo.errors import ConfigError

from conftest import EXAMPLES, cli, write_yaml

GOOD = """\
name: t
data:
  source: iris
model:
  name: mlp
train:
  epochs: 3
  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
"""


def test_example_loads_with_defaults_filled_and_overrides_typed():
    cfg = load_config(EXAMPLES / "digits.yaml", ["train.epochs=3", "train.optimizer.lr=0.01", "model.width=16"])
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.train.optimizer.lr == 0.01
    assert cfg.model.options == {"width": 16, "dropout": 0.25}
    assert cfg.train.eval_batch_size == 1024  # a default, filled in
    assert cfg.data.split.method == "stratified"
    assert cfg.track.mlflow is True


def _err(tmp_path: Path, text: str, overrides=()) -> str:
    p = write_yaml(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError) as exc:
        load_config(p, overrides)
    return str(exc.value)


@pytest.mark.parametrize("text,needles", [
    (GOOD.replace("  epochs: 3", "  epoch: 3"), ["line 7", "train.epoch", "unknown key", "'epochs'"]),
    (GOOD.replace("epochs: 3", "epochs: ten"), ["line 7", "train.epochs", "valid integer", "'ten'"]),
    (GOOD.replace("epochs: 3", "epochs: 0"), ["line 7", "train.epochs", "greater than or equal to 1"]),
    (GOOD.replace("lr: 0.05", "lr: -1"), ["line 8", "train.optimizer.lr", "greater than 0"]),
    (GOOD.replace("name: mlp", "name: transformer9"), ["line 5: model.name: unknown model 'transformer9'", "'cnn'", "'mlp'"]),
    (GOOD.replace("name: sgd", "name: adamm"), ["line 8: train.optimizer.name: unknown optimizer 'adamm'", "'adamw'", "'sgd'"]),
    (GOOD + "  scheduler: {name: cosinus}\n", ["line 9: train.scheduler.name: unknown scheduler 'cosinus'", "'onecycle'"]),
    (GOOD.replace("source: iris", "source: imagenet"), ["line 3", "data.source", "'digits'", "'csv'"]),
    (GOOD.replace("momentum: 0.9", "betas: [0.9, 0.99]"), ["train.optimizer.betas", "not accepted", "'momentum'"]),
    (GOOD.replace("momentum: 0.9", "momentum: -0.5"), ["train.optimizer.momentum", "Invalid momentum"]),
    (GOOD.replace("source: iris", "source: iris\n  split: {val: 0.5, test: 0.5}"), ["data.split", "val + test"]),
    (GOOD.replace("source: iris", "source: csv"), ["data.path", "needs data.path"]),
    (GOOD + "seed: !!python/object/apply:os.system ['echo hacked']\n", ["line 9", "python", "plain YAML"]),
    (GOOD.replace("name: mlp", "name: mlp\n  hidden: fast"), ["model.hidden", "expects tuple"]),
    (GOOD.replace("  epochs: 3", "  early_stopping: {monitor: accuracy}"), ["monitor", "val_"]),
    ("", ["empty"]),
    ("- a\n- b\n", ["mapping"]),
    ("name: [unclosed\n", ["invalid YAML", "line"]),
])
def test_bad_config_error_names_key_line_and_choices(tmp_path, text, needles):
    msg = _err(tmp_path, text)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)


def test_override_errors_name_the_override(tmp_path):
    msg = _err(tmp_path, GOOD, ["train.batch=4"])
    assert "override 'train.batch=4'" in msg and "train.batch" in msg and "'batch_size'" in msg
    msg = _err(tmp_path, GOOD, ["train.epochs=-2"])
    assert "override 'train.epochs=-2'" in msg and "greater than or equal to 1" in msg
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(write_yaml(tmp_path / "c.yaml", GOOD), ["train.epochs"])


def test_null_override_unsets_an_optimizer_option(tmp_path):
    p = write_yaml(tmp_path / "c.yaml", GOOD)
    cfg = load_config(p, ["train.optimizer.name=adam", "train.optimizer.momentum=null"])
    assert cfg.train.optimizer.name == "adam" and cfg.train.optimizer.options == {}
    cfg = load_config(p, ["train.scheduler=onecycle"])  # string shorthand
    assert cfg.train.scheduler.name == "onecycle"
    cfg = load_config(p, ["data.augment=null", "data.features=null"])  # null empties a list key
    assert cfg.data.augment == [] and cfg.data.features == []


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_cli_bad_config_exit_2_one_line_nothing_written(tmp_path):
    p = write_yaml(tmp_path / "c.yaml", GOOD.replace("epochs: 3", "epochs: 0"))
    before = set(tmp_path.iterdir())
    res = cli("run", str(p), cwd=tmp_path)
    assert res.returncode == 2
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "train.epochs" in lines[0]
    assert "Traceback" not in res.stderr
    assert set(tmp_path.iterdir()) == before  # no runs/, no mlflow.db


def test_cli_bad_arguments_exit_2():
    res = cli("run")
    assert res.returncode == 2 and res.stderr.startswith("error: ")
    res = cli("list", "widgets")
    assert res.returncode == 2 and "invalid choice" in res.stderr and "datasets" in res.stderr
