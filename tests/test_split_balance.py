"""Splits (random, stratified, group, cluster, kfold, official) and balancing on the training split only."""

from __future__ import annotations

import json

import numpy as np
import pytest

import methodo
from methodo.config import load_config, validate
from methodo.data import SPLITS, load_dataset, prepare, split_indices
from methodo.data.balance import BALANCERS
from methodo.data.split import cluster_labels
from methodo.errors import ConfigError, DataError

from conftest import cli_inproc, write_yaml

FAST = ["train.progress=false", "track.mlflow=false"]


def _contract_inputs():
    rng = np.random.default_rng(0)
    n = 240
    y = np.repeat(np.arange(3), n // 3)
    X = rng.normal(size=(n, 5)) + y[:, None]
    groups = np.array([f"g{i // 6}" for i in range(n)], dtype=object)  # 40 groups of 6 rows
    official = np.zeros(n, dtype=bool)
    official[-60:] = True
    return X, y, groups, official


@pytest.mark.parametrize("method", SPLITS.names())
def test_every_split_is_disjoint_covering_seeded_and_nonempty(method):
    X, y, groups, official = _contract_inputs()
    kw = dict(method=method, val=0.15, test=0.2, X=X, groups=groups, official=official, folds=4, fold=2,
              clusters=8)
    a = split_indices(y, seed=0, **kw)
    b = split_indices(y, seed=0, **kw)
    c = split_indices(y, seed=1, **kw)
    assert set(a) == {"train", "val", "test"}
    allrows = np.concatenate(list(a.values()))
    assert len(allrows) == len(y) and len(np.unique(allrows)) == len(y)
    assert all(len(v) > 0 for v in a.values())
    assert all(np.array_equal(a[k], b[k]) for k in a)  # same seed, same split
    if method not in ("official", "time"):  # fixed by the dataset, or by time order
        assert any(not np.array_equal(a[k], c[k]) for k in a)
    assert SPLITS.entry(method).help


def test_group_split_never_straddles_and_roughly_keeps_fractions():
    X, y, groups, _ = _contract_inputs()
    parts = split_indices(y, method="group", val=0.15, test=0.2, seed=3, groups=groups)
    owners = {s: set(groups[idx]) for s, idx in parts.items()}
    assert owners["train"].isdisjoint(owners["val"]) and owners["train"].isdisjoint(owners["test"])
    assert owners["val"].isdisjoint(owners["test"])
    assert abs(len(parts["test"]) - 48) <= 6 and abs(len(parts["val"]) - 36) <= 6  # within one group of 6


def test_cluster_split_keeps_whole_clusters_together():
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=300, centers=10, n_features=4, random_state=0)
    parts = split_indices(y, method="cluster", val=0.15, test=0.15, seed=0, X=X, clusters=10, cluster_on="features")
    labels = cluster_labels(X, clusters=10, seed=0, on="features")
    where = {}
    for s, idx in parts.items():
        for c in np.unique(labels[idx]):
            assert c not in where, f"cluster {c} in {where.get(c)} and {s}"
            where[c] = s
    assert len(where) == 10


def test_kfold_folds_partition_the_rows_and_stay_stratified():
    y = np.array([0] * 90 + [1] * 30)
    tests = [split_indices(y, method="kfold", val=0.15, test=0.2, seed=0, folds=5, fold=i)["test"]
             for i in range(1, 6)]
    allrows = np.concatenate(tests)
    assert len(allrows) == 120 and len(np.unique(allrows)) == 120  # every row is tested exactly once
    for t in tests:
        assert (y[t] == 1).sum() == 6  # 30 / 5 minority rows in every fold
    with pytest.raises(DataError, match="fold"):
        split_indices(y, method="kfold", val=0.15, test=0.2, seed=0, folds=5, fold=None)


def test_group_split_from_a_csv_column_and_config_errors(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["patient,a,b,label"] + [f"p{i // 4},{rng.normal():.3f},{rng.normal():.3f},{i % 2}" for i in range(80)]
    (tmp_path / "g.csv").write_text("\n".join(lines) + "\n")
    base = {"source": "csv", "path": str(tmp_path / "g.csv"), "target": "label"}
    cfg = validate({"data": {**base, "split": {"method": "group", "group": "patient"}}, "model": {"name": "mlp"}})
    ds = load_dataset(cfg.data)
    assert ds.feature_names == ["a", "b"]  # the group column is not a feature
    data = prepare(ds, cfg.data, seed=0)
    owners = {s: set(ds.meta["group"][idx]) for s, idx in data.indices.items()}
    assert not (owners["train"] & owners["test"]) and not (owners["train"] & owners["val"])
    with pytest.raises(ConfigError, match="data.split.group"):
        validate({"data": {**base, "split": {"method": "group"}}, "model": {"name": "mlp"}})
    with pytest.raises(ConfigError, match="unknown split 'groups'.*'group'"):
        validate({"data": {**base, "split": {"method": "groups"}}, "model": {"name": "mlp"}})
    bad = validate({"data": {**base, "split": {"method": "group", "group": "nope"}}, "model": {"name": "mlp"}})
    with pytest.raises(DataError, match="data.split.group column 'nope' not found"):
        load_dataset(bad.data)


def test_kfold_run_reports_mean_and_std_over_folds(tmp_path, capsys):
    from conftest import EXAMPLES

    code, out, err = cli_inproc(capsys, "run", str(EXAMPLES / "iris.yaml"), "data.split.method=kfold",
                                "data.split.folds=3", "train.epochs=2", *FAST, "--out", str(tmp_path / "kf"))
    assert code == 0, err
    s = json.loads((tmp_path / "kf" / "summary.json").read_text())
    runs = s["kfold"]["runs"]
    assert s["status"] == "finished" and [r["fold"] for r in runs] == [1, 2, 3]
    accs = [r["metrics"]["test"]["accuracy"] for r in runs]
    assert s["metrics"]["test"]["accuracy"] == pytest.approx(np.mean(accs))
    assert s["metrics_std"]["test"]["accuracy"] == pytest.approx(np.std(accs, ddof=1))
    tested = []
    for r in runs:
        sub = json.loads((tmp_path / "kf" / r["run_dir"] / "summary.json").read_text())
        assert sub["metrics"]["test"] == r["metrics"]["test"]
        assert {"train", "evaluate", "total"} <= set(sub["timings"])  # each fold times its own stages
        tested += [int(line.split(",")[0]) for line in
                   (tmp_path / "kf" / r["run_dir"] / "predictions_test.csv").read_text().splitlines()[1:]]
    assert sorted(tested) == list(range(150))  # each iris row is tested once
    assert "± " in out and "k-fold: 3 folds" in out
    assert list(s["timings"]) == ["config", "load", "setup", "folds", "aggregate", "report", "tracking", "total"]
    html = (tmp_path / "kf" / "report.html").read_text()
    assert 'id="kfold"' in html and "mean ± std (test)" in html and (tmp_path / "kf/figures/kfold.png").is_file()


# --------------------------------------------------------------------------- balancing


def _imbalanced_csv(path, n_minority: int = 24):
    """breast_cancer with the malignant class cut down to ``n_minority`` rows (deterministic)."""
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    df = load_breast_cancer(as_frame=True).frame
    mal = df[df.target == 0].sample(n=n_minority, random_state=0)
    out = pd.concat([mal, df[df.target == 1]]).sample(frac=1, random_state=0)
    out["target"] = out["target"].map({0: "malignant", 1: "benign"})
    out.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory):
    d = tmp_path_factory.mktemp("imb")
    csv = _imbalanced_csv(d / "bc.csv")
    cfg = write_yaml(d / "c.yaml", f"""\
name: bc-imbalanced
data:
  source: csv
  path: {csv}
  target: target
  split: {{method: stratified, val: 0.2, test: 0.4}}
model: {{name: mlp, hidden: [16], dropout: 0.0}}
train:
  epochs: 10
  batch_size: 32
  optimizer: {{name: sgd, lr: 0.01, momentum: 0.9}}
  early_stopping: null
""")
    return d, cfg


@pytest.mark.parametrize("name", BALANCERS.names())
def test_every_balancer_touches_the_training_split_only(imbalanced, name):
    _, cfg_path = imbalanced
    cfg = load_config(cfg_path)
    ds = load_dataset(cfg.data)
    plain = prepare(ds, cfg.data, seed=0)
    data = prepare(ds, load_config(cfg_path, [f"data.balance={name}"]).data, seed=0)
    for s in ("val", "test"):  # never resampled, never reweighted
        assert np.array_equal(data.tensors[s][0].numpy(), plain.tensors[s][0].numpy())
        assert np.array_equal(data.tensors[s][1].numpy(), plain.tensors[s][1].numpy())
        assert data.class_counts[s] == plain.class_counts[s]
    before = data.class_counts_before_balancing
    assert before == plain.class_counts["train"] == {"benign": 142, "malignant": 9}
    after = data.class_counts["train"]
    ytr = data.tensors["train"][1].numpy()
    assert after == {c: int((ytr == i).sum()) for i, c in enumerate(ds.class_names)}
    # the real training rows are still what training metrics are computed on
    assert np.array_equal(data.inputs("train").numpy(), plain.tensors["train"][0].numpy())
    expected = {"none": before, "class_weights": before, "weighted_sampler": before,
                "undersample": {"benign": 9, "malignant": 9},
                "oversample": {"benign": 142, "malignant": 142}, "smote": {"benign": 142, "malignant": 142}}
    assert after == expected[name]
    if name == "class_weights":
        w = dict(zip(ds.class_names, data.class_weights.tolist()))
        assert w["malignant"] == pytest.approx(151 / (2 * 9)) and w["benign"] == pytest.approx(151 / (2 * 142))
    else:
        assert data.class_weights is None
    if name == "weighted_sampler":
        sw = data.sample_weights.numpy()
        assert sw.sum() == pytest.approx(1.0)
        assert sw[ytr == 0].sum() == pytest.approx(sw[ytr == 1].sum())  # each class drawn equally often
    else:
        assert data.sample_weights is None
    if name == "smote":  # synthetic rows lie between real minority rows: inside their bounding box
        Xtr, real = data.tensors["train"][0].numpy(), plain.tensors["train"][0].numpy()
        mi = ds.class_names.index("malignant")
        lo, hi = real[plain.tensors["train"][1].numpy() == mi].min(0), real[plain.tensors["train"][1].numpy() == mi].max(0)
        synth = Xtr[len(real):]
        assert len(synth) == 133 and np.all(synth >= lo - 1e-5) and np.all(synth <= hi + 1e-5)


def test_balancing_a_regression_task_is_refused():
    cfg = validate({"data": {"source": "diabetes", "balance": "smote"}, "model": {"name": "mlp"}})
    with pytest.raises(ConfigError, match="data.balance: 'smote' balances classes, but the task is regression"):
        prepare(load_dataset(cfg.data), cfg.data, seed=0)


def test_smote_on_images_works_on_flattened_pixels():
    cfg = validate({"data": {"source": "digits", "balance": "smote"}, "model": {"name": "cnn"}})
    ds = load_dataset(cfg.data)
    keep = np.flatnonzero((ds.y != 3) | (np.arange(len(ds.y)) % 6 == 0))  # class 3 cut to 1/6
    ds.X, ds.y = ds.X[keep], ds.y[keep]
    data = prepare(ds, cfg.data, seed=0)
    X, y = data.tensors["train"]
    assert X.shape[1:] == (1, 8, 8) and data.class_counts_before_balancing["3"] < 30
    assert len(set(data.class_counts["train"].values())) == 1  # every class at the largest count


def test_smote_and_class_weights_raise_minority_recall_over_none(imbalanced):
    """On breast_cancer with 24 malignant vs 357 benign rows, the same MLP and budget: balancing the
    training split lifts the recall of the rare class on the (untouched, imbalanced) test split."""
    d, cfg = imbalanced
    recall = {}
    for seed in (0, 1):
        for b in ("none", "class_weights", "smote"):
            res = methodo.run(str(cfg), [f"data.balance={b}", f"seed={seed}", *FAST, "evaluate.bootstrap=0",
                                          "explain.enabled=false"], out=d / f"{b}-{seed}")
            per = {r["class"]: r["recall"] for r in res.summary["tables"]["test"]["per_class"]}
            recall[b, seed] = per["malignant"]
            splits = res.summary["data"]["splits"]
            assert splits["test"]["class_counts"] == {"benign": 143, "malignant": 10}
            assert splits["train"]["class_counts_before_balancing"] == {"benign": 142, "malignant": 9}
            assert res.summary["data"]["balance"] == b
            if b == "smote":
                assert splits["train"]["class_counts"] == {"benign": 142, "malignant": 142}
    for seed in (0, 1):
        for b in ("class_weights", "smote"):
            assert recall[b, seed] >= recall["none", seed], (b, seed, recall)
    mean = {b: np.mean([recall[b, s] for s in (0, 1)]) for b in ("none", "class_weights", "smote")}
    assert mean["class_weights"] - mean["none"] >= 0.3 and mean["smote"] - mean["none"] >= 0.3, mean


@pytest.mark.parametrize("name", ["digits_augment", "circles_polar", "imbalanced_breast_cancer"])
def test_data_stage_examples_validate(name):
    from conftest import EXAMPLES

    cfg = load_config(EXAMPLES / f"{name}.yaml")
    assert cfg.data.augment or cfg.data.features or cfg.data.balance != "none"


def test_kfold_figure_metrics_exist_and_a_missing_one_is_an_error(tmp_path):
    from methodo.evaluate.metrics import metric_names
    from methodo.pipeline import _KFOLD_FIGURE
    from methodo.report import plots

    for task, names in _KFOLD_FIGURE.items():
        assert set(names) <= set(metric_names(task)), (task, names)
    runs = [{"fold": 1, "metrics": {"test": {"accuracy": 0.9}}}, {"fold": 2, "metrics": {"test": {"accuracy": 0.8}}}]
    with pytest.raises(ValueError, match="no fold has the test metric 'f1_macro'"):
        plots.kfold_metrics(runs, tmp_path / "k.png", metrics=["accuracy", "f1_macro"])
    assert plots.kfold_metrics(runs, tmp_path / "k.png", metrics=["accuracy"]).is_file()
