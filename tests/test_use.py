"""Using a trained model (issue 14): `methodo.load`, `methodo predict` on tables and images.

One small iris run (table) and one digits run (8×8 gray images) are shared by the module; the
reloaded model with the saved preprocessing must give the run's own test predictions."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pandas as pd
import pytest

import methodo
from methodo.config import validate

from conftest import cli_inproc

FAST = {"epochs": 2, "progress": False, "batch_size": 16}


def _run(out, data: dict, model: dict, **extra):
    cfg = validate({"name": out.name, "data": data, "model": model, "train": {**FAST, **extra.pop("train", {})},
                    "track": {"mlflow": False}, "explain": {"enabled": False},
                    "evaluate": {"bootstrap": 40, "reference": False}, **extra})
    return methodo.run(cfg, out=out)


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("use") / "iris", {"source": "iris"}, {"name": "mlp", "hidden": [16]})


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("use") / "digits", {"source": "digits"}, {"name": "cnn", "width": 8},
                train={"epochs": 1, "batch_size": 64})


def iris_frame(target_names: bool = True) -> pd.DataFrame:
    import sklearn.datasets

    b = sklearn.datasets.load_iris(as_frame=True)
    df = b.frame.copy()
    df["target"] = b.target_names[b.target] if target_names else b.target
    return df


def _saved_predictions(run_dir):
    rows = list(csv.DictReader((run_dir / "predictions_test.csv").open()))
    return [int(r["row"]) for r in rows], np.array([[float(v) for k, v in r.items() if k.startswith("p_")]
                                                     for r in rows]), [r["predicted"] for r in rows]


def test_load_gives_the_runs_own_test_predictions(iris_run):
    model = methodo.load(iris_run.run_dir)
    assert model.task == "classification" and list(model.classes_) == ["setosa", "versicolor", "virginica"]
    rows, saved, names = _saved_predictions(iris_run.run_dir)
    df = iris_frame().iloc[rows]
    proba = model.predict_proba(df.iloc[:, ::-1])  # columns in any order, target present
    assert proba.shape == saved.shape
    np.testing.assert_allclose(proba, saved, atol=2e-6)
    assert list(model.predict(df)) == names
    metrics = model.evaluate(df.drop(columns="target"), df["target"])
    summary = json.loads((iris_run.run_dir / "summary.json").read_text())
    assert metrics["accuracy"] == pytest.approx(summary["metrics"]["test"]["accuracy"], abs=1e-9)
    # numbers as the labels, and a 2-D array in the schema's column order, give the same
    assert model.evaluate(df.drop(columns="target").to_numpy(), iris_frame(False).iloc[rows]["target"]) == metrics


def test_predict_cli_streams_a_csv_in_blocks(iris_run, tmp_path, capsys):
    from methodo.use.inputs import iter_csv

    df = iris_frame()
    src = tmp_path / "new.csv"
    df.iloc[:, ::-1].to_csv(src, index=False)
    code, out, err = cli_inproc(capsys, "predict", str(iris_run.run_dir), str(src), "--out", str(tmp_path / "p.csv"))
    assert code == 0, err
    assert "predicted 150 inputs" in out
    got = pd.read_csv(tmp_path / "p.csv")
    assert list(got.columns) == ["row", "predicted", "p_setosa", "p_versicolor", "p_virginica"]
    assert got["row"].tolist() == list(range(2, 152))  # the file line of each row
    model = methodo.load(iris_run.run_dir)
    np.testing.assert_allclose(got.iloc[:, 2:].to_numpy(), model.predict_proba(df), atol=1e-7)
    # many small blocks: the same rows, lines numbered across blocks
    chunks = list(iter_csv(src, model.schema, block_size=512))
    assert len(chunks) > 3
    assert np.concatenate([c.ids for c in chunks]).tolist() == list(range(2, 152))
    # the same output on stdout
    code, out, _ = cli_inproc(capsys, "predict", str(iris_run.run_dir), str(src))
    assert code == 0 and out.splitlines()[0] == '"row","predicted","p_setosa","p_versicolor","p_virginica"'
    assert len(out.splitlines()) == 151


def _cell(df: pd.DataFrame, i: int, col: str, value) -> pd.DataFrame:
    df = df.astype({col: object})
    df.loc[i, col] = value
    return df


@pytest.mark.parametrize("damage, needle", [
    (lambda df: df.drop(columns=["petal width (cm)"]), "missing column 'petal width (cm)'"),
    (lambda df: df.assign(id=1), "column 'id' is not one the model was trained on"),
    (lambda df: _cell(df, 101, "sepal width (cm)", "n.a."),  # data row 101 is file line 103
     "row 103: column 'sepal width (cm)' is numeric in training but holds 'n.a.'"),
    (lambda df: df.assign(**{"petal length (cm)": df["petal length (cm)"].where(df.index != 7)}),
     "row 9: column 'petal length (cm)' is missing; the run had no imputer"),
    (lambda df: df.assign(**{"sepal length (cm)": df["sepal length (cm)"].where(df.index != 3, 1e300)}),
     "row 5: column 'sepal length (cm)' holds 1e+300, not a finite number"),
])
def test_predict_refuses_bad_input_in_one_line_writing_nothing(iris_run, tmp_path, capsys, damage, needle):
    src = tmp_path / "bad.csv"
    damage(iris_frame()).to_csv(src, index=False)
    out = tmp_path / "p.csv"
    # a block of 256 bytes: the bad cell is found in a later block, and named by its file line
    from methodo.use import inputs

    inputs.CSV_BLOCK, before = 256, inputs.CSV_BLOCK
    try:
        code, _, err = cli_inproc(capsys, "predict", str(iris_run.run_dir), str(src), "--out", str(out))
    finally:
        inputs.CSV_BLOCK = before
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and needle in err, err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad.csv"]


def test_predict_refuses_what_is_not_a_model(iris_run, tmp_path, capsys):
    code, _, err = cli_inproc(capsys, "predict", str(tmp_path / "nope"), "x.csv")
    assert code == 2 and "not a run dir" in err
    copy = tmp_path / "copy"
    shutil.copytree(iris_run.run_dir, copy)
    (copy / "inputs.json").write_text(json.dumps({**json.loads((copy / "inputs.json").read_text()), "kind": "audio"}))
    code, _, err = cli_inproc(capsys, "predict", str(copy), "x.csv")
    assert code == 2 and "inputs.json: kind:" in err
    (copy / "inputs.json").unlink()  # a run dir from before inputs.json: rebuilt from summary and config
    assert methodo.load(copy).schema.columns == methodo.load(iris_run.run_dir).schema.columns
    (copy / "checkpoints" / "best.safetensors").write_bytes(b"\x80\x04not a checkpoint")
    code, _, err = cli_inproc(capsys, "predict", str(copy), "x.csv")
    assert code == 2 and "never unpickles" in err
    code, _, err = cli_inproc(capsys, "predict", str(iris_run.run_dir), str(tmp_path / "x.csv"), "--out",
                              str(iris_run.run_dir / "summary.json"))
    assert code == 2 and "already exists" in err


def _png(path, arr, mode="L"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)


def test_predict_images_from_a_folder_and_files(digits_run, tmp_path, capsys):
    import sklearn.datasets

    d = sklearn.datasets.load_digits()
    rows, saved, names = _saved_predictions(digits_run.run_dir)
    folder = tmp_path / "imgs"
    for k, r in enumerate(rows[:12]):  # 8-bit PNGs of the test images (values 0..16 scaled to 0..255)
        _png(folder / f"{k:02d}.png", (d.images[r] * 255 / 16).round().astype(np.uint8))
    code, out, err = cli_inproc(capsys, "predict", str(digits_run.run_dir), str(folder), "--out", str(tmp_path / "p.csv"))
    assert code == 0, err
    got = pd.read_csv(tmp_path / "p.csv")
    assert [p.rsplit("/", 1)[-1] for p in got["path"]] == [f"{k:02d}.png" for k in range(12)]
    # the same images as the run saw them, up to the 8-bit rounding of the PNG files
    assert (got["predicted"].astype(str).tolist() == names[:12]) or np.abs(got.iloc[:, 2:].to_numpy() - saved[:12]).max() < 0.05
    model = methodo.load(digits_run.run_dir)
    one = model.predict_proba(str(folder / "00.png"))
    np.testing.assert_allclose(one[0], got.iloc[0, 2:].to_numpy(dtype=float), atol=1e-6)
    X = (d.images[rows] / 16.0).astype(np.float32)[:, None]
    np.testing.assert_allclose(model.predict_proba(X), saved, atol=2e-6)  # arrays: exactly the run's inputs


@pytest.mark.parametrize("image, needle", [
    (lambda: (np.zeros((8, 8, 3), np.uint8), "RGB"), "a color image (RGB, 3 channels); the model was trained on grayscale"),
    (lambda: (np.zeros((16, 16), np.uint8), "L"), "image is 16×16; the model takes 8×8 images"),
])
def test_predict_refuses_images_the_model_cannot_read(digits_run, tmp_path, capsys, image, needle):
    arr, mode = image()
    _png(tmp_path / "in" / "a.png", np.zeros((8, 8), np.uint8))
    _png(tmp_path / "in" / "b.png", arr, mode)
    code, _, err = cli_inproc(capsys, "predict", str(digits_run.run_dir), str(tmp_path / "in"), "--out",
                              str(tmp_path / "p.csv"))
    assert code == 2 and needle in err and "b.png" in err, err
    assert not (tmp_path / "p.csv").exists()


# --------------------------------------------------------------------------- methodo evaluate (and drift)


def test_evaluate_new_labeled_data_with_drift_findings(iris_run, tmp_path, capsys):
    df = iris_frame()
    shifted = pd.concat([df[df.target == "setosa"], df[df.target != "setosa"].iloc[::10]])  # label shift
    shifted["sepal width (cm)"] = shifted["sepal width (cm)"] + 1.5  # data drift, out of the training range
    src = tmp_path / "shifted.csv"
    shifted.to_csv(src, index=False)
    code, out, err = cli_inproc(capsys, "evaluate", str(iris_run.run_dir), str(src), "--out", str(tmp_path / "ev"))
    assert code == 0, err
    ev = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert ev["n"] == len(shifted) and ev["task"] == "classification"
    summary = json.loads((iris_run.run_dir / "summary.json").read_text())
    assert ev["run_test"] == summary["metrics"]["test"]  # the run's own numbers beside the new ones
    assert set(ev["metrics"]) == set(summary["metrics"]["test"])
    assert all(len(v) == 2 for v in ev["intervals"].values() if v) and ev["baselines"]["most_frequent"]
    # the dummy is fitted on the training labels: its accuracy is the share of the training majority class here
    ids = {f["id"]: f for f in ev["findings"]}
    assert {"data_drift", "label_shift", "out_of_range_inputs"} <= set(ids), sorted(ids)
    drifted = [t for t in ev["drift"]["tests"] if t["p_adjusted"] < 0.05]
    assert "sepal width (cm)" in {t["feature"] for t in drifted}
    assert ids["label_shift"]["evidence"]["classes"]["setosa"]["new"] == pytest.approx(50 / len(shifted), abs=1e-4)
    assert ids["out_of_range_inputs"]["evidence"]["top"]["sepal width (cm)"]["train_range"][1] < 4.5
    html = (tmp_path / "ev" / "evaluate.html").read_text()
    assert "run&#39;s test" in html and "data_drift" in html and "data:image/png;base64" in html
    preds = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    assert len(preds) == len(shifted) and {"row", "true", "predicted"} <= set(preds.columns)
    assert "metrics (new data [interval] | run's test [interval]" in out and "data_drift" in out


def test_evaluate_data_like_training_finds_no_drift(iris_run, tmp_path, capsys):
    rows, _, _ = _saved_predictions(iris_run.run_dir)
    src = tmp_path / "test_rows.csv"
    iris_frame().iloc[rows].to_csv(src, index=False)
    from methodo.use.evaluate import evaluate_run

    _, ev = evaluate_run(iris_run.run_dir, src, out=tmp_path / "ev", progress=False)
    summary = json.loads((iris_run.run_dir / "summary.json").read_text())
    assert ev.metrics["accuracy"] == pytest.approx(summary["metrics"]["test"]["accuracy"])  # the run's test rows
    assert not {f.id for f in ev.findings} & {"data_drift", "label_shift", "out_of_range_inputs", "performance_drop"}


def test_evaluate_on_a_dataset_config_and_an_image_folder(iris_run, digits_run, tmp_path, capsys):
    (tmp_path / "iris.yaml").write_text("data: {source: iris}\n")
    code, out, err = cli_inproc(capsys, "evaluate", str(iris_run.run_dir), str(tmp_path / "iris.yaml"), "--out",
                                str(tmp_path / "ev1"))
    assert code == 0 and ": 150 rows" in out, err
    import sklearn.datasets

    d = sklearn.datasets.load_digits()
    for k in range(30):
        _png(tmp_path / "imgs" / str(d.target[k]) / f"{k}.png", (d.images[k] * 255 / 16).round().astype(np.uint8))
    code, out, err = cli_inproc(capsys, "evaluate", str(digits_run.run_dir), str(tmp_path / "imgs"), "--out",
                                str(tmp_path / "ev2"))
    assert code == 0, err
    ev = json.loads((tmp_path / "ev2" / "evaluation.json").read_text())
    assert ev["n"] == 30 and {t["feature"] for t in ev["drift"]["tests"]} == {"channel 0 mean", "channel 0 std"}


def test_evaluate_refuses_bad_data_and_explains_older_runs(iris_run, tmp_path, capsys):
    src = tmp_path / "nolabel.csv"
    iris_frame().drop(columns="target").to_csv(src, index=False)
    code, _, err = cli_inproc(capsys, "evaluate", str(iris_run.run_dir), str(src), "--out", str(tmp_path / "ev"))
    assert code == 2 and "no target column 'target'" in err and not (tmp_path / "ev").exists()
    bad = tmp_path / "badlabel.csv"
    _cell(iris_frame(), 4, "target", "rose").to_csv(bad, index=False)
    code, _, err = cli_inproc(capsys, "evaluate", str(iris_run.run_dir), str(bad), "--out", str(tmp_path / "ev"))
    assert code == 2 and "label 'rose'" in err and "setosa" in err and not (tmp_path / "ev").exists()
    old = tmp_path / "old"
    shutil.copytree(iris_run.run_dir, old)
    (old / "drift.json").unlink()
    iris_frame().to_csv(tmp_path / "all.csv", index=False)
    code, out, err = cli_inproc(capsys, "evaluate", str(old), str(tmp_path / "all.csv"), "--out", str(tmp_path / "ev"))
    assert code == 0 and "drift checks need the training statistics; re-run" in out, err
    code, out, _ = cli_inproc(capsys, "evaluate", "--help")
    assert code == 0 and "evaluate-lm" in out.replace("\n", " ")


# --------------------------------------------------------------------------- the model card


def test_every_run_writes_a_model_card(iris_run):
    import yaml

    text = (iris_run.run_dir / "MODEL_CARD.md").read_text()
    summary = json.loads((iris_run.run_dir / "summary.json").read_text())
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])  # the Hugging Face metadata block
    assert meta["library_name"] == "pytorch" and meta["datasets"] == ["iris"]
    results = meta["model-index"][0]["results"][0]
    assert results["task"]["type"] == "tabular-classification"
    assert {m["type"]: m["value"] for m in results["metrics"]} == pytest.approx(
        {k: round(v, 6) for k, v in summary["metrics"]["test"].items() if v is not None})
    for section in ("## Model details", "## Intended use", "## Training data", "## Evaluation results",
                    "## Known limitations", "## Config"):
        assert section in text
    train = summary["data"]["splits"]["train"]["class_counts"]
    assert f"| train | {train['setosa']} | {train['versicolor']} | {train['virginica']} |" in text
    iv = summary["intervals"]["test"]["accuracy"]
    assert f"| accuracy | {summary['metrics']['test']['accuracy']:.4f} | [{iv[0]:.4f}, {iv[1]:.4f}] |" in text
    for f in summary["findings"]:
        assert f"(`{f['id']}`)" in text
    assert "`sepal length (cm)`" in text and (iris_run.run_dir / "config.yaml").read_text().strip() in text


def test_a_bad_cell_is_named_when_pyarrow_reads_on_one_thread(iris_run, tmp_path, capsys):
    """With one thread in its CPU pool (OMP_NUM_THREADS=1, a one-core job) pyarrow reads serially and its
    conversion error names the row too ("In CSV column #1: Row #103: ..."); the cell is still named."""
    import pyarrow as pa

    src = tmp_path / "bad.csv"
    _cell(iris_frame(), 101, "sepal width (cm)", "n.a.").to_csv(src, index=False)
    before = pa.cpu_count()
    pa.set_cpu_count(1)
    try:
        code, _, err = cli_inproc(capsys, "predict", str(iris_run.run_dir), str(src), "--out", str(tmp_path / "p.csv"))
    finally:
        pa.set_cpu_count(before)
    assert code == 2 and err == (f"error: {src} row 103: column 'sepal width (cm)' is numeric in training but "
                                 "holds 'n.a.'\n"), err
