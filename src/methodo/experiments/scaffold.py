"""`methodo new NAME`: a structured deep-learning project, as the course recommends.

::

    NAME/
      README.md                 how to run it, what goes where
      pyproject.toml            the project's own package, declared to methodo as a plugin
      configs/base.yaml         one base config (bundled data: runs at once)
      configs/experiments/      experiments: `base: ../base.yaml` + what they change
      data/raw, data/processed  the data (git-ignored)
      runs/                     run dirs (git-ignored)
      notebooks/                exploration
      src/PKG/                  the project's own models and datasets, registered into methodo
      tests/                    the project's tests (configs validate, the model builds)
      .gitignore, .pre-commit-config.yaml, .github/workflows/ci.yml

``src/PKG`` is imported by methodo when the project is installed (``pip install -e .``): its
``pyproject.toml`` names it under the entry-point group ``methodo.plugins``, so its ``@MODELS.register``
and ``@DATASETS.register`` run before a config is checked.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from methodo.errors import BadInput

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def package_name(name: str) -> str:
    return name.lower().replace("-", "_")


def files(name: str) -> dict[str, str]:
    """Relative path → text of every file of the project ``name``."""
    pkg = package_name(name)
    return {**_readme_and_packaging(name, pkg), **_configs(name, pkg), **_package(name, pkg),
            **_layout_and_hygiene(name, pkg)}


def _readme_and_packaging(name: str, pkg: str) -> dict[str, str]:
    """README.md and pyproject.toml (which declares the package a methodo plugin)."""
    from methodo import __version__

    return {
        "README.md": f"""# {name}

A deep-learning project laid out the way the IDRIS methodology course recommends, run by
[methodo](https://pypi.org/project/methodo/).

```bash
pip install -e .                                   # the project and methodo; registers src/{pkg}
methodo run configs/base.yaml                      # the base experiment on bundled data
```

| where | what |
| --- | --- |
| `configs/base.yaml` | the base config: data, model, training, evaluation |
| `configs/experiments/*.yaml` | one file per experiment: `base: ../base.yaml` and only what changes |
| `src/{pkg}/models.py`, `src/{pkg}/datasets.py` | your own models and datasets, registered into methodo |
| `data/raw/`, `data/processed/` | the data (not in git) |
| `runs/` | one run dir per run: config, metrics, figures, report, checkpoints (not in git) |
| `notebooks/` | exploration; anything that lasts moves to `src/` |
| `tests/` | `pytest`: the configs validate and the model builds |

Run an experiment: `methodo run configs/experiments/wider.yaml`. Your own model:
`methodo run configs/experiments/own_model.yaml`. Compare runs: `methodo compare runs/*`.
Re-run one and check it gives the same numbers: `methodo reproduce runs/RUN`.
Experiments are tracked in MLflow (`./mlflow.db`; `mlflow ui --backend-store-uri sqlite:///mlflow.db`).
""",
        "pyproject.toml": f"""[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["methodo>={__version__}"]

[project.optional-dependencies]
dev = ["pytest>=8", "pre-commit>=3"]

# methodo imports this package at start-up, so its models and datasets are registered
[project.entry-points."methodo.plugins"]
{pkg} = "{pkg}"

[tool.setuptools.packages.find]
where = ["src"]
""",
    }


def _configs(name: str, pkg: str) -> dict[str, str]:
    """The base config and the experiments that start from it."""
    return {
        "configs/base.yaml": f"""# The base experiment: every other config starts from it (`base: ../base.yaml`).
name: {name}
seed: 0
data:
  source: digits          # bundled with scikit-learn; or csv / imagefolder with data.path under data/raw/
  split: {{method: stratified, val: 0.15, test: 0.15}}
model:
  name: mlp
  hidden: [64]
train:
  epochs: 10
  batch_size: 64
  optimizer: {{name: adam, lr: 0.003}}
  early_stopping: {{monitor: val_loss, patience: 5}}
""",
        "configs/experiments/wider.yaml": f"""# A wider network than the base: only what changes.
base: ../base.yaml
name: {name}-wider
model:
  name: mlp
  hidden: [256, 128]
""",
        "configs/experiments/own_model.yaml": f"""# The project's own model (src/{pkg}/models.py), on the project's own dataset (src/{pkg}/datasets.py).
base: ../base.yaml
name: {name}-own
data:
  source: {pkg}_blobs
model:
  name: {pkg}_net
  width: 32
""",
    }


def _package(name: str, pkg: str) -> dict[str, str]:
    """src/PKG: the project's own model and dataset, and the project's tests."""
    return {
        f"src/{pkg}/__init__.py": f'''"""{name}: the project's own models and datasets, registered into methodo when it starts
(entry point ``methodo.plugins`` in pyproject.toml)."""

from {pkg} import datasets, models  # noqa: F401  (importing them registers them)
''',
        f"src/{pkg}/models.py": f'''"""The project's models. Each is built from the data's input shape and number of outputs."""

from __future__ import annotations

import math

from torch import nn

from methodo.models import MODELS


@MODELS.register("{pkg}_net", help="{name}'s own model: flatten, one hidden layer, dropout (edit me)")
def {pkg}_net(*, input_shape: tuple[int, ...], n_outputs: int, width: int = 64, dropout: float = 0.1) -> nn.Module:
    if width < 1:
        raise ValueError(f"width must be at least 1 (got {{width}})")
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(width, n_outputs))
''',
        f"src/{pkg}/datasets.py": f'''"""The project's datasets: each loader returns a methodo Dataset (the whole data, before any split)."""

from __future__ import annotations

import numpy as np

from methodo.data.dataset import DATASETS, Dataset


@DATASETS.register("{pkg}_blobs", help="{name}'s own data: 600 rows, 8 features, 3 classes (replace with yours)",
                   task="classification", kind="tabular")
def blobs(data_cfg, audit: bool = False) -> Dataset:
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=600, n_features=8, centers=3, cluster_std=3.0, random_state=0)
    return Dataset("{pkg}_blobs", "classification", "tabular", X.astype(np.float32), y.astype(np.int64),
                   [f"x{{i}}" for i in range(8)], ["a", "b", "c"], "600 generated rows in 3 blobs")
''',
        "tests/test_project.py": f'''"""The project's configs validate and its model builds (run: pytest)."""

from pathlib import Path

import pytest
import torch

from methodo.config import load_config
from methodo.models import build_model

CONFIGS = sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates(path):
    assert load_config(path).name


def test_own_model_builds():
    net = build_model("{pkg}_net", input_shape=(8,), n_outputs=3)
    assert net(torch.zeros(2, 8)).shape == (2, 3)
''',
    }


def _layout_and_hygiene(name: str, pkg: str) -> dict[str, str]:
    """The data/runs/notebooks folders, .gitignore, pre-commit and CI."""
    return {
        "data/raw/.gitkeep": "",
        "data/processed/.gitkeep": "",
        "runs/.gitkeep": "",
        "notebooks/README.md": "Exploration notebooks. What lasts moves to `src/` and gets a test.\n",
        ".gitignore": """# data and results stay out of git (the run dirs and MLflow hold the results)
data/raw/*
data/processed/*
!data/*/.gitkeep
runs/*
!runs/.gitkeep
mlflow.db
mlflow.db.lock
mlruns/
mlartifacts/
.venv/
__pycache__/
*.egg-info/
.pytest_cache/
.ipynb_checkpoints/
""",
        ".pre-commit-config.yaml": """repos:
  - repo: https://github.com/pre-commit/pre-commit-hooks
    rev: v5.0.0
    hooks:
      - id: check-yaml
      - id: end-of-file-fixer
      - id: trailing-whitespace
      - id: check-added-large-files   # data belongs in data/, not in git
  - repo: https://github.com/astral-sh/ruff-pre-commit
    rev: v0.8.0
    hooks:
      - id: ruff
      - id: ruff-format
""",
        ".github/workflows/ci.yml": """name: ci
on: [push, pull_request]
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with: {python-version: "3.11"}
      - run: pip install -e '.[dev]'
      - run: pytest -q
      - run: methodo run configs/base.yaml train.epochs=1 track.mlflow=false
""",
    }



def new_project(name: str, *, parent: str | Path = ".") -> Path:
    """Write the project ``name`` into ``parent/name`` (a new or empty folder); returns its path.

    Nothing is written over: a folder that exists and is not empty is refused before any file is made.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadInput(f"new {name!r}: a project name starts with a letter and holds letters, digits, '_' or '-' "
                       "(at most 64 characters); it names the folder and the Python package")
    root = Path(parent) / name
    if root.exists() or root.is_symlink():
        if not root.is_dir() or root.is_symlink():
            raise BadInput(f"new {name}: {root} exists and is not a folder")
        if any(root.iterdir()):
            raise BadInput(f"new {name}: folder {root} exists and is not empty; methodo never writes over your files")
    content = files(name)
    try:
        root.mkdir(parents=True, exist_ok=True)
        for rel, text in content.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # never over an existing file
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
    except OSError as exc:
        raise BadInput(f"new {name}: cannot write {root} ({exc.strerror or exc})") from None
    return root
