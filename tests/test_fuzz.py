"""Property-based fuzzing of the bad-input contract (Hypothesis, fixed seed).

Generated YAML configs (random keys, types, nesting, anchors and aliases, tags, duplicate keys,
encodings, truncations) and generated CSV files (delimiters, encodings, NaN/inf, one class, empty
columns, quotes, ragged rows) go through the command line. Whatever the input, the command ends
with exit 0 or 2, prints at most one ``error:`` line and no traceback, and writes nothing but what
the test wrote. The config fuzz stops after validation (``methodo.pipeline.run`` is replaced by
``load_config``); the CSV fuzz runs ``data inspect`` and the data stage of ``run`` (load + prepare),
whose tensors must then be finite.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
import time
from pathlib import Path
from unittest import mock

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from methodo.cli import main  # noqa: E402

FUZZ = settings(derandomize=True, deadline=None, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))

BASE = {
    "name": "t",
    "data": {"source": "iris", "split": {"method": "stratified", "val": 0.15, "test": 0.15}},
    "model": {"name": "mlp", "hidden": [8], "dropout": 0.1},
    "train": {"epochs": 2, "batch_size": 16, "progress": False,
              "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
              "early_stopping": {"monitor": "val_loss", "patience": 3}},
    "evaluate": {"bootstrap": 0},
    "track": {"mlflow": False},
}

# Keys a config really has (so that many generated documents get deep into validation), and others.
KEYS = ["name", "seed", "task", "data", "data.source", "data.path", "data.target", "data.split", "data.split.method",
        "data.split.val", "data.split.test", "data.split.folds", "data.split.fold", "data.balance", "data.augment",
        "data.features", "data.options", "data.image_size", "data.channels", "data.max_image_pixels", "model",
        "model.name", "model.hidden", "model.dropout", "model.width", "model.heads", "train", "train.epochs",
        "train.batch_size", "train.optimizer", "train.optimizer.name", "train.optimizer.lr",
        "train.optimizer.momentum", "train.optimizer.betas", "train.scheduler", "train.scheduler.name",
        "train.early_stopping", "train.early_stopping.patience", "train.early_stopping.monitor", "train.swa",
        "train.regularization.dropout", "train.clip.norm", "train.device", "evaluate.metrics", "evaluate.threshold",
        "evaluate.threshold.rule", "track.mlflow", "explain.methods", "x", "data.x", "train.optimizer.x", "",
        "a.b.c.d", "é", "0", "true", "<<"]

SCALAR_TOKENS = ["0", "1", "-3", "5", "0.5", "1e-3", "1e400", "-1e400", ".inf", "-.inf", ".nan", "true", "false",
                 "null", "~", "yes", "no", "''", '""', "mlp", "cnn", "sgd", "adam", "iris", "digits", "csv",
                 "stratified", "random", "onecycle", "[]", "{}", "[1, 2]", "{name: adam}", "2020-13-45",
                 "2020-01-01", "9" * 5000, "x" * 3000, "'a: b'", "\"\\u0000\"", "!!int x", "!!float y", "!!binary ===",
                 "!!python/object/apply:os.system ['true']", "!!set {a, b}", "!!omap [a: 1]", "!custom 3", "&anchor 3",
                 "*anchor", "*undefined", "[", "}", ": :", "- - -", "\t", "%YAML 1.2", "---", "...", "|", ">"]

scalars = st.one_of(
    st.integers(min_value=-10**6, max_value=10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.none(), st.text(max_size=12), st.sampled_from(["mlp", "sgd", "adam", "iris", "val_loss",
                                                                      "cosine", "stratified", "auto", "cuda"]))
values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                      st.dictionaries(st.sampled_from(KEYS + ["name", "lr"]), kids,
                                                                      max_size=4)), max_leaves=12)


def _set(tree: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value


@st.composite
def yaml_documents(draw) -> bytes:
    """A config as bytes: BASE with random keys set (shared objects become anchors and aliases), then
    text mutations (duplicated lines, inserted tokens, tags, bombs, truncation) and an encoding."""
    import copy

    tree = {} if draw(st.booleans()) else copy.deepcopy(BASE)  # (Hypothesis leans to False: mostly BASE)
    shared = draw(values)
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(KEYS))
        if key:
            _set(tree, key, shared if draw(st.booleans()) else draw(values))  # the same object twice: an alias
    text = yaml.safe_dump(tree, sort_keys=draw(st.booleans()), allow_unicode=True)
    lines = text.splitlines()
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["token", "append", "bomb", "dup", "indent", "delete"]))
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        if not lines:
            lines = [""]
        if op == "dup":  # a duplicate key (same line again)
            lines.insert(i, lines[i])
        elif op == "token":  # a random token replaces a value
            head = lines[i].split(":", 1)[0]
            lines[i] = f"{head}: {draw(st.sampled_from(SCALAR_TOKENS))}"
        elif op == "append":
            lines.append(f"{draw(st.sampled_from(KEYS)) or 'k'}: {draw(st.sampled_from(SCALAR_TOKENS))}")
        elif op == "bomb":  # an alias bomb, sometimes small enough to pass the size bound
            levels, width = draw(st.integers(1, 8)), draw(st.integers(1, 9))
            parts = ["&b0 [" + ", ".join(["x"] * width) + "]"]
            parts += [f"&b{k} [" + ", ".join([f"*b{k - 1}"] * width) + "]" for k in range(1, levels)]
            lines.append(f"{draw(st.sampled_from(['seed', 'name', 'data', 'model', 'train', 'x']))}: [{', '.join(parts)}]")
        elif op == "indent":
            lines[i] = " " * draw(st.integers(1, 5)) + lines[i]
        else:
            del lines[i]
    text = "\n".join(lines) + "\n"
    if draw(st.integers(0, 9)) == 9:  # truncated mid-document
        text = text[: draw(st.integers(0, len(text)))]
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "utf-16", "utf-16-le", "latin-1", "cp1252"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.integers(0, 19)) == 19:
        data = draw(st.binary(max_size=64)) + data
    return data


overrides = st.lists(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.sampled_from(SCALAR_TOKENS)
                               | st.text(max_size=10)), max_size=3)


class _Valid(Exception):
    """The config validated: the fuzz stops before the pipeline would start."""


def _validate_only(config, overrides=(), **_):
    from methodo.config import load_config

    load_config(config, overrides)
    raise _Valid


def _run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except _Valid:
            code = 0
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, err.getvalue()


def _check_contract(code, err: str, argv) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code in (0, 2), (code, argv, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
        assert len(lines[0]) < 2000, lines[0][:300]  # never a whole expanded value
    else:
        assert not any(line.startswith("error:") for line in lines), err


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@settings(FUZZ, max_examples=800)
@given(doc=yaml_documents(), extra=overrides)
def test_fuzz_config_loading(doc, extra):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "c.yaml").write_bytes(doc)
        before = _listing(root)
        cwd_before = _listing(Path.cwd())
        argv = ["run", str(root / "c.yaml"), *extra, "--out", str(root / "run")]
        t0 = time.perf_counter()
        with mock.patch("methodo.pipeline.run", _validate_only):
            code, err = _run_cli(argv)
        assert time.perf_counter() - t0 < 10, "config validation took more than 10 s"
        _check_contract(code, err, argv)
        assert _listing(root) == before and _listing(Path.cwd()) == cwd_before


# --------------------------------------------------------------------------- CSV files

CELLS = st.one_of(
    st.integers(-1000, 1000).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "nan", "NaN", "NA", "inf", "-inf", "Infinity", "1e308", "-1e308", "1e400", "3.4e38",
                     "1e38", "0", "1", "a", "b", "cat", '"q,uoted"', '"line\nbreak"', '"', "''", " ", "é", "\x00",
                     "1,5", "99999999999999999999999999", "0x10", "1_000", "True"]),
    st.text(max_size=6))


@st.composite
def csv_files(draw) -> tuple[bytes, str]:
    """``(CSV bytes, target column)``: random columns, cells, delimiter, quoting, ragged rows, encoding.

    Rare events are drawn as the top of a range: Hypothesis leans to small values, so a plain
    CSV of numbers is the common case and every example is not broken the same way."""
    n_cols = draw(st.integers(1, 5))
    names = [f"f{j}" if draw(st.integers(0, 9)) < 8 else draw(st.sampled_from(["", "f0", "x y", "é", "y.1", '"q"']))
             for j in range(n_cols - 1)]
    target = "y" if draw(st.integers(0, 9)) < 9 else "z"
    names.insert(draw(st.integers(0, len(names))), "y")
    n_rows = draw(st.integers(0, 45))
    mode = draw(st.sampled_from(["classes", "regression", "one_class", "constant", "random"]))
    weird = draw(st.sampled_from([0, 0, 1, 3]))  # weird cells per 10
    rows = []
    for r in range(n_rows):
        row = [draw(CELLS) if draw(st.integers(0, 9)) >= 10 - weird else f"{(r * 7 + j * 3) % 11 - 5}"
               for j in range(len(names))]
        j = names.index("y")
        row[j] = {"classes": str(r % 3), "one_class": "1", "regression": f"{r * 0.37:.2f}", "constant": "2.5",
                  "random": row[j]}[mode]
        rows.append(row)
    if rows and draw(st.integers(0, 9)) == 9:  # a ragged row
        k = draw(st.integers(0, len(rows) - 1))
        rows[k] = rows[k][: draw(st.integers(0, len(rows[k])))] if draw(st.booleans()) else rows[k] + ["extra"]
    sep = "," if draw(st.integers(0, 9)) < 8 else draw(st.sampled_from([";", "\t", "|"]))
    text = "\n".join(sep.join(r) for r in [names, *rows]) + ("\n" if draw(st.booleans()) else "")
    encoding = "utf-8" if draw(st.integers(0, 9)) < 8 else draw(st.sampled_from(["utf-8-sig", "utf-16", "latin-1"]))
    return text.encode(encoding, errors="replace"), target


def _config(root: Path, target: str, extra: str = "") -> Path:
    cfg = root / "c.yaml"
    cfg.write_text(f"name: t\ndata: {{source: csv, path: {root / 'd.csv'}, target: {target}{extra}}}\n"
                   "model: {name: mlp, hidden: [8]}\ntrain: {epochs: 1, batch_size: 4, progress: false}\n"
                   "track: {mlflow: false}\n")
    return cfg


@settings(FUZZ, max_examples=300)
@given(csv=csv_files(), impute=st.booleans())
def test_fuzz_csv_data(csv, impute):
    import numpy as np

    from methodo.config import load_config
    from methodo.data import load_dataset, prepare
    from methodo.errors import BadInput

    data, target = csv
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "d.csv").write_bytes(data)
        cfg_path = _config(root, target, ", features: [impute]" if impute else "")
        before = _listing(root)
        argv = ["data", "inspect", str(cfg_path), "--json"]
        code, err = _run_cli(argv)
        _check_contract(code, err, argv)

        # The data stage of `methodo run`: refused with one line, or finite tensors and a usable target.
        try:
            cfg = load_config(cfg_path)
            ds = load_dataset(cfg.data)
            prepared = prepare(ds, cfg.data, cfg.seed)
        except BadInput as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 2000, str(exc)[:300]
        else:
            for name, (X, y) in prepared.tensors.items():
                assert np.isfinite(X.numpy()).all(), f"non-finite {name} inputs after prepare"
                assert np.isfinite(np.asarray(y.numpy(), dtype=np.float64)).all(), f"non-finite {name} target"
            if ds.task == "classification":
                assert len(np.unique(ds.y)) >= 2
            else:
                assert not math.isclose(float(np.ptp(ds.y)), 0.0)
        assert _listing(root) == before


# --------------------------------------------------------------------------- component options

ODD = st.one_of(st.integers(-3, 40), st.sampled_from([0, -1, 10**12, 2**63]), st.floats(allow_nan=True, allow_infinity=True),
                st.booleans(), st.none(), st.sampled_from(["", "abc", "auto", "max", "mean", "median", "polar"]),
                st.lists(st.one_of(st.integers(-2, 40), st.floats(-2, 2), st.text(max_size=2)), max_size=3),
                st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _option_names(fn) -> list[str]:
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return []
    return [n for n, p in params.items() if n not in ("self", "params", "lr", "input_shape", "n_outputs", "task",
                                                       "seed", "feature_names", "optimizer", "epochs",
                                                       "steps_per_epoch", "total_steps")
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _components() -> dict:
    """``{registry: {name: [option names]}}`` of the real components (computed once, outside strategies)."""
    import torch

    from methodo.data.augment import AUGMENTATIONS
    from methodo.data.features import FEATURES
    from methodo.models import MODELS
    from methodo.train.optim import OPTIMIZERS
    from methodo.train.schedules import SCHEDULERS

    return {
        "augment": {n: _option_names(AUGMENTATIONS.entry(n).obj.__init__) for n in AUGMENTATIONS.names()},
        "features": {n: _option_names(FEATURES.entry(n).obj) for n in FEATURES.names()},
        "model": {n: _option_names(MODELS.entry(n).obj) for n in ("cnn", "mlp", "resnet")},
        "optimizer": {n: _option_names(getattr(torch.optim, OPTIMIZERS.entry(n).obj).__init__)
                      for n in OPTIMIZERS.names()},
        "scheduler": {n: _option_names(SCHEDULERS.entry(n).obj) for n in SCHEDULERS.names()},
    }


COMPONENTS = _components()


@st.composite
def component_configs(draw) -> tuple[dict, list[str]]:
    """BASE on iris or digits with random steps and options of real components: augmentations, feature
    steps, optimizer, scheduler and model options, each option a real name with an odd value."""
    import copy

    def step(kind):
        name = draw(st.sampled_from(sorted(COMPONENTS[kind])))
        names = COMPONENTS[kind][name]
        opts = {k: draw(ODD) for k in draw(st.lists(st.sampled_from(names), max_size=2, unique=True))} if names else {}
        return name, opts

    cfg = copy.deepcopy(BASE)
    image = draw(st.booleans())
    cfg["data"]["source"] = "digits" if image else "iris"
    if image:
        cfg["model"] = {"name": draw(st.sampled_from(["cnn", "mlp", "resnet"]))}
        cfg["data"]["augment"] = [{n: o} if o else n for n, o in (step("augment") for _ in range(draw(st.integers(0, 2))))]
    else:
        cfg["data"]["features"] = [{n: o} if o else n for n, o in (step("features") for _ in range(draw(st.integers(0, 2))))]
    which = draw(st.sampled_from(["model", "optimizer", "scheduler"]))
    if which == "model":
        names = COMPONENTS["model"][cfg["model"]["name"]]
        opts = {k: draw(ODD) for k in draw(st.lists(st.sampled_from(names), max_size=2, unique=True))}
        cfg["model"] = {"name": cfg["model"]["name"], **opts}
    elif which == "optimizer":
        name, opts = step("optimizer")
        cfg["train"]["optimizer"] = {"name": name, "lr": 0.01, **opts}
    else:
        name, opts = step("scheduler")
        cfg["train"]["scheduler"] = {"name": name, **opts}
    return cfg, []


@settings(FUZZ, max_examples=250)
@given(case=component_configs())
def test_fuzz_component_options(case):
    """Odd option values of real components: one-line errors at config or data time, never a traceback;
    what validates also builds (data stage and model, as `methodo run` does before writing anything)."""
    from methodo.config import load_config
    from methodo.errors import BadInput
    from methodo.pipeline import prepare_run

    cfg_dict, extra = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "c.yaml").write_text(yaml.safe_dump(cfg_dict))
        argv = ["run", str(root / "c.yaml"), *extra, "--out", str(root / "run")]
        with mock.patch("methodo.pipeline.run", _validate_only):
            code, err = _run_cli(argv)
        _check_contract(code, err, argv)
        if code == 0:
            try:
                prepare_run(load_config(root / "c.yaml"))
            except BadInput as exc:
                assert "\n" not in str(exc), str(exc)
        assert _listing(root) == [Path("c.yaml").name]
