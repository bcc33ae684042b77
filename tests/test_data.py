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
    assert DATASETS.names() == ["breast_cancer", "cifar10", "circles", "co2", "csv", "diabetes", "digits",
                                "digits_attributes", "fashion_mnist", "graph_cycles", "imagefolder", "iris", "mnist", "python_docs",
                                "series_csv", "shapes", "text_csv", "textfolder", "wine"]


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


# --------------------------------------------------------------------------- CSV: Arrow's typed read (issue 11)

MIXED = ('a,b,color,c,label\n'
         '1.5,2,red,,yes\n'
         '-0.25,NA,blue,3e2,no\n'
         '"7",4,,1e-3,yes\n'
         '0.1,-1e-5,red,16777217,no\n')


def _text_only(monkeypatch):
    """Make load_csv take pandas' read of every cell as text (the path of a file Arrow cannot parse)."""
    from methodo.data import csvread

    monkeypatch.setattr(csvread, "header", lambda path: None)


def test_csv_fast_path_gives_the_arrays_of_the_text_path(tmp_path, monkeypatch):
    p = tmp_path / "mixed.csv"
    p.write_text(MIXED)
    cfg = _cfg(source="csv", path=str(p), target="label")
    fast = load_dataset(cfg.data)
    assert fast.X.dtype == np.float32 and fast.feature_names == ["a", "b", "c"] and fast.cat_names == ["color"]
    want = np.array([[1.5, 2, np.nan], [-0.25, np.nan, 300], [7, 4, 1e-3], [0.1, -1e-5, 16777217]], dtype=np.float64)
    np.testing.assert_array_equal(fast.X, want.astype(np.float32))  # float64 → float32, as pandas + astype did
    assert fast.cat.tolist() == [["red"], ["blue"], [None], ["red"]]
    assert fast.class_names == ["no", "yes"] and fast.y.tolist() == [1, 0, 1, 0] and fast.y.dtype == np.int64
    assert fast.meta["row"].tolist() == [2, 3, 4, 5]
    _text_only(monkeypatch)
    slow = load_dataset(cfg.data)
    assert slow.X.tobytes() == fast.X.tobytes() and slow.X.shape == fast.X.shape
    assert (slow.feature_names, slow.cat_names, slow.class_names) == (fast.feature_names, fast.cat_names, fast.class_names)
    assert slow.cat.tolist() == fast.cat.tolist() and slow.y.tolist() == fast.y.tolist()


@pytest.mark.parametrize("labels,names,y", [
    (["0", "1", "1.0", "0"], ["0", "1"], [0, 1, 1, 0]),  # numbers: class names formatted with :g
    (["3", "-1", "3", "10"], ["-1", "3", "10"], [1, 0, 1, 2]),  # sorted by value, not as text
])
def test_csv_numeric_labels_map_to_classes_as_before(tmp_path, monkeypatch, labels, names, y):
    p = tmp_path / "l.csv"
    p.write_text("a,label\n" + "\n".join(f"{i},{v}" for i, v in enumerate(labels)) + "\n")
    cfg = _cfg(source="csv", path=str(p), target="label")
    ds = load_dataset(cfg.data)
    assert (ds.class_names, ds.y.tolist()) == (names, y)
    _text_only(monkeypatch)
    assert (load_dataset(cfg.data).class_names, load_dataset(cfg.data).y.tolist()) == (names, y)


def _long_csv(tmp_path, last: str) -> tuple:
    """60 000 clean rows (over 1 MB: more than Arrow's first block), then ``last`` at file line 60 002."""
    p = tmp_path / "long.csv"
    p.write_text("a,b,label\n" + "".join(f"{i},{i % 13}.25,{i % 2}\n" for i in range(60_000)) + last + "\n")
    return p, _cfg(source="csv", path=str(p), target="label")


@pytest.mark.parametrize("last,needles", [
    ("7,oops,1", ["row 60002: column 'b' is not numeric (value 'oops')", "data.categorical"]),
    ("7,NAN,1", ["row 60002: column 'b' is not numeric (value 'NAN')"]),  # Arrow reads NAN as a NaN: pandas does not
    ("7,inf,1", ["row 60002: column 'b' holds 'inf', not a finite number"]),
    ("7,1e39,0", ["row 60002: column 'b' holds '1e39'", "3.4e+38"]),
    ("7,1,x", ["row 60002: target column 'label' is numeric but holds 'x'"]),
    ("7,1,", ["row 60002: missing value in target column 'label'"]),
])
def test_csv_bad_cell_after_the_first_block_names_row_and_column(tmp_path, last, needles):
    p, cfg = _long_csv(tmp_path, last)
    with pytest.raises(DataError) as exc:
        load_dataset(cfg.data)
    msg = str(exc.value)
    assert msg.startswith(f"{p} row 60002: ") and "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)


def test_csv_audit_records_a_late_bad_cell_and_keeps_the_column_numeric(tmp_path):
    p, cfg = _long_csv(tmp_path, "7,oops,1")
    ds = load_dataset(cfg.data, audit=True)
    assert ds.feature_names == ["a", "b"] and ds.X.dtype == np.float32 and ds.X.shape == (60_001, 2)
    assert np.isnan(ds.X[-1, 1]) and ds.X[-2, 1] == np.float32(59_999 % 13 + 0.25)
    assert ds.problems == [{"id": "bad_value", "row": 60002, "column": "b", "value": "oops",
                            "reason": "a string in a numeric column (read as missing)"}]


def test_csv_na_strings_match_pandas_defaults():
    import pandas._libs.parsers as parsers

    from methodo.data.csvread import NA_VALUES

    assert set(NA_VALUES) == set(parsers.STR_NA_VALUES)  # both readers call the same cells missing


@pytest.mark.parametrize("head,names", [
    (",a,b,label", ["Unnamed: 0", "a", "b"]),  # pandas' to_csv with its index: an empty first name
    ("a,a,b,label", ["a", "a.1", "b"]),  # a repeated name
    ("a,,a,label", ["a", "Unnamed: 1", "a.1"]),
])
def test_csv_renamed_header_keeps_the_fast_path_with_pandas_names(tmp_path, monkeypatch, head, names):
    from methodo.data import csvread

    p = tmp_path / "r.csv"
    p.write_text(head + "\n" + "".join(f"{i},{i % 7}.5,{'x' if i == 59_000 else i % 3},{i % 2}\n"
                                       for i in range(60_000)))  # a text cell after the first block
    cfg = _cfg(source="csv", path=str(p), target="label")
    with monkeypatch.context() as m:
        m.setattr(csvread, "read_text", lambda path: pytest.fail("a renamed header went through pandas"))
        ds = load_dataset(cfg.data, audit=True)
    assert ds.feature_names == names and ds.X.dtype == np.float32
    assert ds.problems[0]["row"] == 59_002 and ds.problems[0]["column"] == names[2]  # read again as text, by name
    _text_only(monkeypatch)
    slow = load_dataset(cfg.data, audit=True)
    assert (slow.feature_names, slow.X.tobytes(), slow.y.tolist(), slow.problems) == (
        ds.feature_names, ds.X.tobytes(), ds.y.tolist(), ds.problems)


def test_csv_quoted_renamed_header_is_read_by_pandas(tmp_path, monkeypatch):
    p = tmp_path / "q.csv"
    p.write_text('"a",a,label\n1,2,0\n3,4,1\n')
    ds = load_dataset(_cfg(source="csv", path=str(p), target="label").data)
    assert ds.feature_names == ["a", "a.1"] and ds.X.tolist() == [[1, 2], [3, 4]]
