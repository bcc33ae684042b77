"""`methodo list schedulers|optimizers|regularizers|explainers` and the lr-find command line."""

from __future__ import annotations

import pytest

from methodo.explain import EXPLAINERS
from methodo.train.optim import OPTIMIZERS
from methodo.train.regularize import REGULARIZERS
from methodo.train.schedules import SCHEDULERS

from conftest import cli


@pytest.mark.parametrize("what,registry,tag", [
    ("schedulers", SCHEDULERS, "[per "), ("optimizers", OPTIMIZERS, ""),
    ("regularizers", REGULARIZERS, "acts at:"), ("explainers", EXPLAINERS, ""),
])
def test_list_shows_every_entry_with_its_help(what, registry, tag):
    res = cli("list", what)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert [l.split()[0] for l in lines] == registry.names()
    for line, entry in zip(lines, registry.entries()):
        assert entry.help in line and tag in line
    if what == "regularizers":
        assert any("train.clip.norm" in l for l in lines) and any("train.regularization.l1" in l for l in lines)
    if what == "schedulers":
        for name in ("step", "multistep", "exponential", "linear", "cyclic", "onecycle", "cosine",
                     "cosine_restarts", "plateau"):
            assert name in registry


def test_lr_find_help_and_bad_input():
    res = cli("lr-find", "--help")
    assert res.returncode == 0 and "suggested_lr" in res.stdout and "--out" in res.stdout
    res = cli("lr-find", "nope.yaml")
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "config file not found" in res.stderr
