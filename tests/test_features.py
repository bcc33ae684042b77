"""Tabular features: scaling, selection, extraction and categorical encoding in a scikit-learn Pipeline
fitted on the training split only, saved pickle-free with the run, and reused at evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

import methodo
from methodo.config import validate
from methodo.data import load_dataset, prepare
from methodo.data.features import FEATURES, build_pipeline, load_pipeline, save_pipeline
from methodo.errors import BadInput, ConfigError, DataError

from conftest import write_yaml

FAST = ["train.progress=false", "track.mlflow=false"]
OPTIONS = {"mutual_info": {"k": 5}, "f_test": {"k": 5}, "rfe": {"n_features": 4, "step": 3}, "pca": {"n_components": 3},
           "function": {"fn": "polar", "columns": ["alcohol", "malic_acid"]}}


def _wine(steps, **extra):
    return validate({"data": {"source": "wine", "features": steps, "scale": "none", **extra}, "model": {"name": "mlp"}})


@pytest.mark.parametrize("name", FEATURES.names())
def test_every_feature_step_is_fitted_on_train_only_and_saved_without_pickle(tmp_path, name):
    step = {name: OPTIONS.get(name, {})}
    cfg = _wine([step])
    ds = load_dataset(cfg.data)
    data = prepare(ds, cfg.data, seed=0)
    tr, te = data.indices["train"], data.indices["test"]
    # the same step fitted by hand on the training rows gives exactly the run's test inputs
    ref, _ = build_pipeline([step], task="classification", seed=0, feature_names=ds.feature_names)
    ref.fit(ds.X[tr], ds.y[tr])
    np.testing.assert_allclose(data.tensors["test"][0].numpy(), ref.transform(ds.X[te]), rtol=1e-5, atol=1e-5)
    assert data.input_shape == (len(data.feature_names),)
    assert FEATURES.entry(name).meta["kind"] in ("scaling", "cleaning", "selection", "extraction")
    # saved with skops (no pickle) and reloaded with its types checked: same outputs
    path = save_pipeline(data.features, tmp_path / "features.skops")
    assert not path.read_bytes().startswith(b"\x80")  # not a pickle stream (a zip archive)
    again = load_pipeline(path)
    np.testing.assert_allclose(again.transform(ds.X[te]), ref.transform(ds.X[te]), rtol=1e-6)


def test_selection_steps_keep_the_informative_features():
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 8))
    X[:, 2] += 2.5 * y  # the only informative columns: 2 and 5
    X[:, 5] -= 2.0 * y
    X[:, 7] = 1.0  # constant
    names = [f"c{i}" for i in range(8)]
    for steps, keep in [(["variance_threshold"], [f"c{i}" for i in range(7)]),
                        ([{"mutual_info": {"k": 2}}], ["c2", "c5"]),
                        ([{"f_test": {"k": 2}}], ["c2", "c5"]),
                        ([{"l1": {"C": 0.02}}], ["c2", "c5"]),
                        ([{"rfe": {"n_features": 2}}], ["c2", "c5"])]:
        pipe, _ = build_pipeline(steps, task="classification", seed=0, feature_names=names)
        pipe.fit(X, y)
        from methodo.data.features import output_names

        assert output_names(pipe, names) == keep, steps


def test_f_test_ranks_by_the_univariate_f_statistic_for_regression_too():
    from methodo.data.features import output_names

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    X[:, 4] = 3.0  # constant: no F statistic, scored 0 (never preferred), without a warning
    y = 2.0 * X[:, 1] - 0.5 * X[:, 3] + rng.normal(size=200)
    names = list("abcde")
    pipe, _ = build_pipeline([{"f_test": {"k": 2}}], task="regression", seed=0, feature_names=names)
    pipe.fit(X, y)
    assert output_names(pipe, names) == ["b", "d"]
    assert pipe.steps[0][1].scores_[4] == 0.0 and pipe.steps[0][1].scores_[1] > pipe.steps[0][1].scores_[3] > 0


def test_polar_feature_makes_circles_linearly_separable(tmp_path):
    """The course's (x, y) → (r, θ): a linear model (mlp with no hidden layer) cannot separate two
    concentric circles from x, y; from r it can."""
    cfg = write_yaml(tmp_path / "c.yaml", """\
name: circles-linear
data: {source: circles}
model: {name: mlp, hidden: [], dropout: 0.0}
train: {epochs: 15, batch_size: 32, optimizer: {name: adam, lr: 0.05}}
""")
    plain = methodo.run(str(cfg), FAST, out=tmp_path / "xy")
    polar = methodo.run(str(cfg), [*FAST, "data.features=[{function: {fn: polar, columns: [x, y]}}]"],
                        out=tmp_path / "rtheta")
    assert plain.metrics["test"]["accuracy"] < 0.7
    assert polar.metrics["test"]["accuracy"] > 0.95
    assert polar.summary["data"]["features"]["names"] == ["r", "theta"]
    assert (tmp_path / "rtheta" / "features.skops").is_file() and not (tmp_path / "xy" / "features.skops").exists()


def test_user_function_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "myfeats.py").write_text("import numpy as np\n"
                                         "def squares(X, columns):\n    return np.column_stack([X, X[:, list(columns)] ** 2])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _wine([{"function": {"fn": "myfeats:squares", "columns": [0]}}])
    ds = load_dataset(cfg.data)
    data = prepare(ds, cfg.data, seed=0)
    X = data.tensors["train"][0].numpy()
    assert X.shape[1] == 14
    np.testing.assert_allclose(X[:, -1], ds.X[data.indices["train"], 0] ** 2, rtol=1e-5)
    with pytest.raises(ConfigError, match="cannot import feature function 'nomodule:f'"):
        prepare(ds, _wine([{"function": {"fn": "nomodule:f"}}]).data, seed=0)


def test_feature_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data.features.0.n_comp: option not accepted.*'n_components'"):
        _wine([{"pca": {"n_comp": 3}}])
    with pytest.raises(ConfigError, match=r"data.features.1: unknown feature step 'pcaa'; choose one of .*'pca'"):
        _wine(["standard", "pcaa"])
    cfg = validate({"data": {"source": "digits", "features": ["pca"]}, "model": {"name": "cnn"}})
    with pytest.raises(ConfigError, match="data.features: feature steps work on tables"):
        prepare(load_dataset(cfg.data), cfg.data, seed=0)


def test_categorical_columns_are_encoded_from_the_training_split_only(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["size,color,label"]
    for i in range(120):
        color = ["red", "green", "blue"][i % 3] if i < 110 else "purple"  # purple: last rows only
        rows.append(f"{rng.normal():.3f},{color},{int(color == 'red')}")
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n")
    cfg = validate({"data": {"source": "csv", "path": str(tmp_path / "c.csv"), "target": "label", "scale": "none"},
                    "model": {"name": "mlp"}})
    ds = load_dataset(cfg.data)
    assert ds.feature_names == ["size"] and ds.cat_names == ["color"]
    idx = {"train": np.arange(0, 90), "val": np.arange(90, 100), "test": np.arange(100, 120)}
    data = prepare(ds, cfg.data, seed=0, indices=idx)
    assert data.feature_names == ["size", "color=blue", "color=green", "color=red"]  # no 'purple': unseen in train
    Xte = data.tensors["test"][0].numpy()
    np.testing.assert_array_equal(Xte[10:, 1:], 0)  # purple rows: all-zero one-hot
    np.testing.assert_array_equal(Xte[:10, 1:].sum(1), 1)


def test_missing_values_stop_a_run_unless_imputed(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["a,b,label"]
    for i in range(100):
        a = "" if i in (7, 30) else f"{rng.normal() + (i % 2):.3f}"
        lines.append(f"{a},{rng.normal():.3f},{i % 2}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    base = {"source": "csv", "path": str(tmp_path / "m.csv"), "target": "label"}
    cfg = validate({"data": base, "model": {"name": "mlp"}})
    ds = load_dataset(cfg.data)
    with pytest.raises(DataError, match=r"2 missing values \(first: column 'a', row 9\); add an imputer"):
        prepare(ds, cfg.data, seed=0)
    cfg = validate({"data": {**base, "features": [{"impute": {"strategy": "median"}}]}, "model": {"name": "mlp"}})
    data = prepare(ds, cfg.data, seed=0)
    imputer = data.features.steps[0][1]
    tr = data.indices["train"]
    assert imputer.statistics_[0] == pytest.approx(np.nanmedian(ds.X[tr, 0]))  # the TRAIN median
    assert not any(np.isnan(t[0].numpy()).any() for t in data.tensors.values())


def test_loading_refuses_types_outside_sklearn_and_methodo(tmp_path):
    import os

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    bad = FunctionTransformer(func=os.system).fit(np.zeros((2, 1)))
    sio.dump(bad, tmp_path / "evil.skops")
    with pytest.raises(BadInput, match="refusing to load types outside scikit-learn/methodo.*system"):
        load_pipeline(tmp_path / "evil.skops")


def test_run_summary_lists_the_features(tmp_path):
    res = methodo.run(str(_write_bc(tmp_path)), [*FAST, "data.features=[standard, {pca: {n_components: 4}}]"],
                      out=tmp_path / "r")
    feats = res.summary["data"]["features"]
    assert feats["names"] == ["pca0", "pca1", "pca2", "pca3"] and feats["n"] == 4
    assert res.summary["model"]["parameters"] == 4 * 8 + 8 + 8 * 2 + 2
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["data"]["features"] == feats


def _write_bc(tmp_path):
    return write_yaml(tmp_path / "bc.yaml", """\
data: {source: breast_cancer}
model: {name: mlp, hidden: [8]}
train: {epochs: 2, batch_size: 32}
""")
