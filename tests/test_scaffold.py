"""`methodo new NAME` and `base:` configs: a project that runs at once, whose own model (src/NAME)
is registered into methodo once the project is installed, and experiments that start from a base."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import cli, cli_inproc, write_yaml
from methodo.config import load_config

QUICK = ["track.mlflow=false", "train.progress=false", "explain.enabled=false", "evaluate.reference=false",
         "evaluate.bootstrap=20", "train.epochs=1"]


def test_new_project_layout_and_refusals(capsys, tmp_path):
    code, out, err = cli_inproc(capsys, "new", "demo-proj")
    assert code == 0, err
    root = tmp_path / "demo-proj"
    for rel in ("README.md", "pyproject.toml", "configs/base.yaml", "configs/experiments/wider.yaml",
                "configs/experiments/own_model.yaml", "src/demo_proj/models.py", "src/demo_proj/datasets.py",
                "tests/test_project.py", "data/raw/.gitkeep", "runs/.gitkeep", "notebooks/README.md",
                ".gitignore", ".pre-commit-config.yaml", ".github/workflows/ci.yml"):
        assert (root / rel).is_file(), rel
    assert '[project.entry-points."methodo.plugins"]\ndemo_proj = "demo_proj"' in (root / "pyproject.toml").read_text()
    assert "data/raw/*" in (root / ".gitignore").read_text() and "runs/*" in (root / ".gitignore").read_text()
    assert f"cd {Path('demo-proj')}" in out and "pip install -e ." in out
    wider = load_config(root / "configs/experiments/wider.yaml")
    base = load_config(root / "configs/base.yaml")
    assert wider.model.options["hidden"] == [256, 128] and wider.train == base.train and wider.name == "demo-proj-wider"
    # before the project is installed, its own names are not known, and the error says which
    code, _, err = cli_inproc(capsys, "run", str(root / "configs/experiments/own_model.yaml"))
    assert code == 2 and "data.source: unknown dataset 'demo_proj_blobs'" in err

    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    code, _, err = cli_inproc(capsys, "new", "demo-proj")
    assert code == 2 and "exists and is not empty; methodo never writes over your files" in err
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    for bad in ("1abc", "a b", "../x", "x" * 65):
        code, _, err = cli_inproc(capsys, "new", bad)
        assert code == 2 and "a project name starts with a letter" in err, bad
    (tmp_path / "afile").write_text("x")
    code, _, err = cli_inproc(capsys, "new", "afile")
    assert code == 2 and "exists and is not a folder" in err


def test_installed_project_registers_its_model_and_runs(tmp_path):
    """Scaffold, install (the real entry point, into a prefix), run the project's own model on its own
    dataset, and run the project's own tests."""
    assert cli("new", "demo", cwd=tmp_path).returncode == 0
    root = tmp_path / "demo"
    prefix = tmp_path / "prefix"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--prefix", str(prefix), str(root)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    site = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    env = {"PYTHONPATH": os.pathsep.join([site, os.environ.get("PYTHONPATH", "")])}
    listed = cli("list", "models", env=env, cwd=root)
    assert listed.returncode == 0 and "demo_net" in listed.stdout
    res = cli("run", "configs/experiments/own_model.yaml", *QUICK, "--out", "runs/own", env=env, cwd=root)
    assert res.returncode == 0, res.stderr
    summary = json.loads((root / "runs/own/summary.json").read_text())
    assert summary["model"]["name"] == "demo_net" and summary["dataset"] == "demo_blobs"
    assert summary["status"] == "finished" and summary["metrics"]["test"]["accuracy"] > 0.5
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=root,
                           capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert tests.returncode == 0 and "4 passed" in tests.stdout, tests.stdout + tests.stderr


def test_a_broken_plugin_is_named(tmp_path):
    site = tmp_path / "site"
    dist = site / "broken_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[methodo.plugins]\nbroken = no_such_module_anywhere\n")
    res = cli("list", "models", env={"PYTHONPATH": str(site)})
    assert res.returncode == 2
    assert res.stderr.startswith("error: plugin 'broken' (no_such_module_anywhere, entry point methodo.plugins) "
                                 "cannot be imported: No module named 'no_such_module_anywhere'")


def test_base_configs(tmp_path, capsys):
    """`base:` chains merge section by section; a changed component name replaces its options; errors
    name the file and line that set the key; loops and missing bases are refused."""
    write_yaml(tmp_path / "base.yaml", "name: b\ndata: {source: iris}\nmodel:\n  name: mlp\n  hidden: [8]\n"
               "train:\n  epochs: 3\n  optimizer: {name: sgd, lr: 0.1, momentum: 0.9}\n")
    (tmp_path / "exp").mkdir()
    write_yaml(tmp_path / "exp/mid.yaml", "base: ../base.yaml\ntrain:\n  batch_size: 8\n")
    write_yaml(tmp_path / "exp/top.yaml", "base: mid.yaml\nname: top\ntrain:\n  optimizer: {name: adam, lr: 0.01}\n")
    cfg = load_config(tmp_path / "exp/top.yaml")
    assert (cfg.name, cfg.train.epochs, cfg.train.batch_size) == ("top", 3, 8)
    assert cfg.train.optimizer.name == "adam" and "momentum" not in cfg.train.optimizer.options
    assert cfg.model.options["hidden"] == [8]
    write_yaml(tmp_path / "exp/bad.yaml", "base: ../base.yaml\nmodel:\n  hidden: [0]\n")
    write_yaml(tmp_path / "bad_base.yaml", "name: b\ndata: {source: iris}\nmodel: {name: mlp}\ntrain:\n  epochs: 0\n")
    write_yaml(tmp_path / "exp/inherits_bad.yaml", "base: ../bad_base.yaml\nseed: 1\n")
    write_yaml(tmp_path / "exp/loop_a.yaml", "base: loop_b.yaml\n")
    write_yaml(tmp_path / "exp/loop_b.yaml", "base: loop_a.yaml\n")
    write_yaml(tmp_path / "exp/missing.yaml", "base: nowhere.yaml\n")
    write_yaml(tmp_path / "exp/notpath.yaml", "seed: 1\nbase: [1]\n")
    expected = {
        "bad": "exp/bad.yaml line 3: model.hidden:",
        "inherits_bad": "bad_base.yaml line 5: train.epochs: Input should be greater than or equal to 1",
        "loop_a": "exp/loop_b.yaml line 1: base: loop_a.yaml makes a loop",
        "missing": "exp/missing.yaml line 1: base: ",
        "notpath": "exp/notpath.yaml line 2: base: the path of the config this one starts from",
    }
    for name, text in expected.items():
        code, _, err = cli_inproc(capsys, "run", str(tmp_path / f"exp/{name}.yaml"))
        assert code == 2 and text in err and err.count("\n") == 1, (name, err)
    assert "nowhere.yaml: config file not found" in cli_inproc(capsys, "run", str(tmp_path / "exp/missing.yaml"))[2]
    assert not (tmp_path / "runs").exists()
