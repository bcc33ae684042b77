"""`methodo embed RUN_DIR`: penultimate-layer embeddings of the test split, projected to 2-D, into the report;
and `methodo list` for the data-stage registries."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

import methodo
from methodo.config import validate

from conftest import cli_inproc

FAST = {"progress": False}


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory):
    """breast_cancer with saved feature steps (scaler + PCA): embed must reuse them, not refit them."""
    out = tmp_path_factory.mktemp("emb") / "bc"
    cfg = validate({"name": "bc", "data": {"source": "breast_cancer", "features": ["standard", {"pca": {"n_components": 6}}]},
                    "model": {"name": "mlp", "hidden": [16, 8]}, "train": {"epochs": 3, **FAST},
                    "track": {"mlflow": False}})
    return methodo.run(cfg, out=out)


SLOW = pytest.mark.skipif(not os.environ.get("METHODO_SLOW_TESTS"),
                          reason="umap-learn's first import compiles with numba (~30 s): set METHODO_SLOW_TESTS=1")


@pytest.mark.parametrize("method", ["pca", "tsne", pytest.param("umap", marks=SLOW)])
def test_embed_writes_figure_points_and_report(bc_run, capsys, method):
    d = bc_run.run_dir
    code, out, err = cli_inproc(capsys, "embed", str(d), "--method", method)
    assert code == 0, err
    fig = d / "figures" / f"embeddings_{method}.png"
    assert fig.is_file() and fig.stat().st_size > 5000
    rows = list(csv.DictReader((d / f"embeddings_{method}.csv").open()))
    preds = list(csv.DictReader((d / "predictions_test.csv").open()))
    assert [r["row"] for r in rows] == [p["row"] for p in preds]  # the run's own test rows
    # predictions from the reloaded model and saved transforms match the run's predictions
    assert [r["predicted"] for r in rows] == [p["predicted"] for p in preds]
    wrong = sum(r["true"] != r["predicted"] for r in rows)
    assert f"{len(rows)} test rows, 8-d penultimate embeddings" in out and f"{wrong} wrong predictions" in out
    pts = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    assert np.isfinite(pts).all() and pts.std(0).min() > 0
    html = (d / "report.html").read_text()
    assert "Test embeddings, penultimate layer" in html


def test_embed_refuses_what_it_cannot_do(tmp_path, capsys, bc_run):
    code, _, err = cli_inproc(capsys, "embed", str(tmp_path))
    assert code == 2 and "not a run dir" in err
    code, _, err = cli_inproc(capsys, "embed", str(bc_run.run_dir), "--method", "lda")
    assert code == 2 and "invalid choice: 'lda'" in err


def test_embed_on_an_image_run(tmp_path, capsys):
    res = methodo.run(validate({"name": "d", "data": {"source": "digits"}, "model": {"name": "cnn", "width": 8},
                                "train": {"epochs": 1, **FAST}, "track": {"mlflow": False}}), out=tmp_path / "d")
    code, out, err = cli_inproc(capsys, "embed", str(res.run_dir))
    assert code == 0, err
    assert "270 test rows, 16-d penultimate embeddings" in out


@pytest.mark.parametrize("what,expect", [
    ("splits", ["random", "stratified", "group", "cluster", "kfold", "official", "time"]),
    ("balancers", ["none", "undersample", "oversample", "smote", "class_weights", "weighted_sampler"]),
    ("augmentations", ["flip", "rotation", "random_resized_crop", "color_jitter", "grayscale", "detexture",
                       "edge_enhance", "edge_map", "normalize", "erase"]),
    ("features", ["standard", "minmax", "robust", "impute", "variance_threshold", "mutual_info", "f_test", "l1",
                  "rfe", "pca", "function"]),
])
def test_list_data_registries(capsys, what, expect):
    code, out, _ = cli_inproc(capsys, "list", what)
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert sorted(names) == sorted(expect)
    assert all(len(line.split(None, 1)) == 2 for line in out.splitlines())
