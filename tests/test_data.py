"""Data stage: bundled sources, CSV, seeded splits, scaling fitted on train only."""

from __future__ import annotations

import numpy as np
import pytest

from methodo.config import validate
from methodo.data import DATASETS, load_dataset, prepare, split_indices
from methodo.errors import DataError


def _cfg(**data):
    return validate({"data": data, "model": {"name": "mlp"}})


@pytest.mark.parametrize("name,task,shape,n,classes", [
    ("digits", "classification", (1, 8, 8), 1797, 10),
    ("breast_cancer", "classification", (30,), 569, 2),
    ("wine", "classification", (13,), 178, 3),
    ("iris", "classification", (4,), 150, 3),
    ("diabetes", "regression", (10,), 442, 0),
])
def test_bundled_sources(name, task, shape, n, classes):
    ds = load_dataset(_cfg(source=name).data)
    assert (ds.task, ds.input_shape, len(ds.y), ds.n_classes) == (task, shape, n, classes)
    assert ds.X.dtype == np.float32
    assert ds.y.dtype == (np.int64 if task == "classification" else np.float32)


def test_every_source_is_listed():
    assert DATASETS.names() == ["breast_cancer", "cifar10", "circles", "csv", "diabetes", "digits", "digits_attributes",
                                "fashion_mnist", "imagefolder", "iris", "mnist", "python_docs", "shapes", "wine"]


def test_csv_classification_and_regression(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    lines = ["a,b,c,label,price"] + [
        f"{r[0]:.3f},{r[1]:.3f},{r[2]:.3f},{'yes' if r[0] > 0 else 'no'},{10 * r[1] + 0.123:.3f}" for r in x]
    p = tmp_path / "t.csv"
    p.write_text("\n".join(lines) + "\n")
    ds = load_dataset(_cfg(source="csv", path=str(p), target="label").data)
    assert ds.task == "classification" and ds.class_names == ["no", "yes"]
    assert ds.feature_names == ["a", "b", "c", "price"]
    np.testing.assert_array_equal(ds.y, (x[:, 0] > 0).astype(int))
    p2 = tmp_path / "r.csv"
    p2.write_text("\n".join(",".join(l.split(",")[:3] + l.split(",")[4:]) for l in lines) + "\n")
    ds = load_dataset(_cfg(source="csv", path=str(p2), target="price").data)
    assert ds.task == "regression" and ds.X.shape == (60, 3)
    np.testing.assert_allclose(ds.y, 10 * x[:, 1] + 0.123, atol=2e-3)


@pytest.mark.parametrize("content,target,needle", [
    ("a,b\n1,2\n", "label", "column 'label' not found; columns: 'a' or 'b'"),
    ("", "label", "CSV file is empty"),
    ("a,label\n1,0\n2,\n3,1\n", "label", "row 3: missing value in target column 'label'"),
    ("a,label\n1,0\nx,1\n", "label", "row 3: column 'a' is not numeric"),
    ("a,label\n", "label", "no rows"),
])
def test_csv_errors_name_file_row_and_column(tmp_path, content, target, needle):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(DataError) as exc:
        load_dataset(_cfg(source="csv", path=str(p), target=target).data)
    assert needle in str(exc.value) and str(p) in str(exc.value)


def test_csv_missing_file(tmp_path):
    with pytest.raises(DataError, match="CSV file not found"):
        load_dataset(_cfg(source="csv", path=str(tmp_path / "no.csv"), target="y").data)


def test_stratified_split_keeps_proportions_and_is_seeded():
    y = np.array([0] * 900 + [1] * 100)
    parts = split_indices(y, method="stratified", val=0.15, test=0.15, seed=3)
    assert sum(len(v) for v in parts.values()) == 1000
    assert len(np.unique(np.concatenate(list(parts.values())))) == 1000  # disjoint and covering
    for name, idx in parts.items():
        assert abs((y[idx] == 1).mean() - 0.10) < 0.01, name
    again = split_indices(y, method="stratified", val=0.15, test=0.15, seed=3)
    other = split_indices(y, method="stratified", val=0.15, test=0.15, seed=4)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    assert not np.array_equal(parts["test"], other["test"])


def test_random_split_sizes():
    parts = split_indices(np.zeros(200), method="random", val=0.1, test=0.2, seed=0)
    assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == (140, 20, 40)


def test_split_too_small_is_a_data_error():
    with pytest.raises(DataError, match="cannot split"):
        split_indices(np.array([0, 0, 0, 1]), method="stratified", val=0.25, test=0.25, seed=0)


def test_scaling_is_fitted_on_train_only():
    cfg = _cfg(source="wine")
    ds = load_dataset(cfg.data)
    data = prepare(ds, cfg.data, seed=0)
    Xtr = data.tensors["train"][0].numpy()
    np.testing.assert_allclose(Xtr.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(data.preprocessor.mean.ravel(), ds.X[data.indices["train"]].mean(0), rtol=1e-5)
    # val/test are transformed with the train statistics, so their means are not exactly 0
    assert np.abs(data.tensors["test"][0].numpy().mean(0)).max() > 1e-3
    assert sum(data.class_counts["train"].values()) == len(data.indices["train"])


def test_in_memory_batches_are_tensor_slices():
    cfg = _cfg(source="digits")
    data = prepare(load_dataset(cfg.data), cfg.data, seed=0)
    X, y = data.tensors["train"]
    assert X.shape[1:] == (1, 8, 8) and X.is_contiguous() and len(X) == len(y)
