"""Segmentation: the generated shapes dataset, the pixel metrics against scikit-learn and
torchmetrics, the dense models, the baselines, and a tiny end-to-end `methodo run`."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from methodo.data.shapes import CLASSES, _shape_mask, make_shapes
from methodo.evaluate import METRICS, compute_metrics
from methodo.evaluate.baselines import baseline_metrics
from methodo.evaluate.metrics import per_class_iou, segmentation_tables
from methodo.models import MODELS, build_model, model_tasks

from conftest import EXAMPLES, cli, cli_inproc

SEG_METRICS = [e.name for e in METRICS.entries() if e.meta["task"] == "segmentation"]
SMALL = ["data.options.n=48", "data.options.size=16", "train.epochs=2", "train.batch_size=8",
         "evaluate.bootstrap=20", "track.mlflow=false", "train.progress=false", "train.threads=1"]
TINY = [*SMALL, "model.width=4", "model.levels=2"]


def test_shapes_are_deterministic_from_the_seed_and_well_formed():
    X, y = make_shapes(20, size=24, seed=3)
    X2, y2 = make_shapes(20, size=24, seed=3)
    X3, _ = make_shapes(20, size=24, seed=4)
    assert np.array_equal(X, X2) and np.array_equal(y, y2) and not np.array_equal(X, X3)
    assert X.shape == (20, 3, 24, 24) and X.dtype == np.float32 and 0 <= X.min() and X.max() <= 1
    assert set(np.unique(y)) <= {0, 1, 2, 3}
    assert all((m > 0).any() for m in y)  # every image holds at least one shape
    assert {1, 2, 3} <= set(np.unique(y))  # all three shapes occur
    # the background is noisy: its pixels are not one flat colour
    assert X[0][:, y[0] == 0].std(axis=1).min() > 0.02


@pytest.mark.parametrize("kind,area", [(1, math.pi), (2, 2.0), (3, 3 * math.sqrt(3) / 4)])
def test_shape_rasterization_has_the_geometric_area(kind, area):
    # circumradius r: circle πr², square 2r², equilateral triangle (3√3/4)r²
    yy, xx = np.mgrid[0:200, 0:200].astype(np.float32) + 0.5
    r = 60.0
    mask = _shape_mask(kind, xx, yy, 100.0, 100.0, r, theta=0.3)
    assert mask.sum() == pytest.approx(area * r * r, rel=0.02)


def _maps():
    y = np.zeros((2, 4, 4), dtype=np.int64)
    y[0, :2, :2] = 1  # 4 circle pixels
    y[1, 2:, 2:] = 2  # 4 square pixels
    pred = y.copy()
    pred[0, 0, :] = 1  # circle over-predicted by 2 pixels
    pred[1, 3, 3] = 0  # one square pixel missed
    return y, pred


def _probs(pred, c=4):
    return np.moveaxis(np.eye(c, dtype=np.float32)[pred], -1, 1)


def test_pixel_metrics_by_hand_and_against_scikit_learn():
    from sklearn.metrics import jaccard_score

    y, pred = _maps()
    m = compute_metrics("segmentation", _probs(pred), y, 4)
    # circle: 4 ∩ / 6 ∪; square: 3/4; background: 24 true, 23 predicted, 22 in common → 22/25
    iou = per_class_iou(torch.as_tensor(_probs(pred)), torch.as_tensor(y), 4)
    assert iou[:3] == pytest.approx([22 / 25, 4 / 6, 3 / 4]) and iou[3] is None  # triangle absent: undefined
    assert m["mean_iou"] == pytest.approx((22 / 25 + 4 / 6 + 3 / 4) / 3)
    sk = jaccard_score(y.ravel(), pred.ravel(), labels=[0, 1, 2], average=None)
    assert iou[:3] == pytest.approx(list(sk))
    assert m["pixel_accuracy"] == pytest.approx(29 / 32)
    assert m["dice"] == pytest.approx(np.mean([2 * 22 / 47, 2 * 4 / 10, 2 * 3 / 7]))


def test_dice_and_iou_agree_with_torchmetrics():
    from torchmetrics.functional.classification import multiclass_jaccard_index
    from torchmetrics.functional.segmentation import dice_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, (6, 8, 8))
    pred = np.where(rng.random((6, 8, 8)) < 0.7, y, rng.integers(0, 4, (6, 8, 8)))
    m = compute_metrics("segmentation", _probs(pred), y, 4)
    tm_dice = dice_score(torch.as_tensor(pred), torch.as_tensor(y), num_classes=4, input_format="index",
                         average="macro", aggregation_level="global")
    tm_iou = multiclass_jaccard_index(torch.as_tensor(pred).ravel(), torch.as_tensor(y).ravel(), num_classes=4)
    assert m["dice"] == pytest.approx(float(tm_dice), abs=1e-6)
    assert m["mean_iou"] == pytest.approx(float(tm_iou), abs=1e-6)


@pytest.mark.parametrize("name", SEG_METRICS)
def test_every_segmentation_metric_is_perfect_on_perfect_masks(name):
    _, y = make_shapes(5, size=16, seed=0)
    assert compute_metrics("segmentation", _probs(y), y, 4, names=[name])[name] == pytest.approx(1.0)


def test_all_background_baseline_shows_why_pixel_accuracy_misleads():
    _, y = make_shapes(60, size=16, seed=1)
    base = baseline_metrics("segmentation", y[:40], y[40:], 4, seed=0)
    bg_share = float((y[40:] == 0).mean())
    mf = base["most_frequent"]
    assert mf["pixel_accuracy"] == pytest.approx(bg_share)  # every pixel called background
    # IoU: background's own share, zero for each of the 3 shapes present
    assert mf["mean_iou"] == pytest.approx(bg_share / 4)
    assert mf["pixel_accuracy"] > 0.6 and mf["mean_iou"] < 0.25
    assert base["stratified"]["mean_iou"] < 0.35


def test_segmentation_tables_count_pixels():
    y, pred = _maps()
    t = segmentation_tables(_probs(pred), y, CLASSES)
    rows = {r["class"]: r for r in t["per_class"]}
    assert rows["circle"]["true_pixels"] == 4 and rows["circle"]["predicted_pixels"] == 6
    assert rows["triangle"]["iou"] is None and rows["square"]["dice"] == pytest.approx(6 / 7)
    assert np.asarray(t["confusion_matrix"]).sum() == y.size


@pytest.mark.parametrize("name", [n for n in MODELS.names() if "segmentation" in model_tasks(n)])
@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 20, 28), (3, 32, 32)])
def test_every_segmentation_model_scores_every_pixel(name, shape):
    net = build_model(name, input_shape=shape, n_outputs=5, kind="image", task="segmentation", width=4)
    out = net(torch.randn(2, *shape))
    assert out.shape == (2, 5, *shape[1:])
    torch.nn.functional.cross_entropy(out, torch.randint(0, 5, (2, *shape[1:]))).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_models_refuse_the_wrong_task():
    from methodo.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model 'cnn' does classification, forecasting, multilabel or regression, not segmentation; "
                                          r"choose 'fcn' or 'unet'"):
        build_model("cnn", input_shape=(3, 16, 16), n_outputs=4, kind="image", task="segmentation")
    with pytest.raises(ConfigError, match=r"model 'unet' does segmentation, not classification; choose 'cnn', "):
        build_model("unet", input_shape=(1, 8, 8), n_outputs=10, kind="image", task="classification")


def test_unet_learns_shapes_beyond_the_all_background_dummy():
    """200 optimizer steps on 16×16 shapes: the U-Net must find shapes (IoU above the all-background dummy)."""
    from methodo.seed import seed_everything

    seed_everything(0)
    torch.set_num_threads(1)
    X, y = make_shapes(192, size=16, seed=0)
    X = (X - X[:160].mean((0, 2, 3), keepdims=True)) / X[:160].std((0, 2, 3), keepdims=True)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    net = build_model("unet", input_shape=(3, 16, 16), n_outputs=4, kind="image", task="segmentation",
                      width=8, levels=2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # 200 steps
        for idx in torch.randperm(160, generator=g).split(16):
            loss = torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        probs = net(Xt[160:]).softmax(1).numpy()
    m = compute_metrics("segmentation", probs, y[160:], 4)
    dummy = baseline_metrics("segmentation", y[:160], y[160:], 4, seed=0)["most_frequent"]
    assert m["mean_iou"] > dummy["mean_iou"] + 0.05, (m, dummy)
    assert m["pixel_accuracy"] > dummy["pixel_accuracy"]


def test_methodo_run_segmentation_end_to_end(tmp_path):
    res = cli("run", str(EXAMPLES / "shapes_unet.yaml"), *TINY, "--out", str(tmp_path / "s"))
    assert res.returncode == 0, res.stderr
    assert "mean_iou" in res.stdout and "(most_frequent)" in res.stdout
    d = tmp_path / "s"
    s = json.loads((d / "summary.json").read_text())
    assert s["status"] == "finished" and s["task"] == "segmentation" and s["dataset"] == "shapes"
    assert set(s["metrics"]["test"]) == {"pixel_accuracy", "mean_iou", "dice"}
    assert set(s["baselines"]) == {"most_frequent", "stratified"}
    assert s["data"]["count_unit"] == "pixels"
    n_test = s["data"]["splits"]["test"]["n"]
    assert sum(s["data"]["splits"]["test"]["class_counts"].values()) == n_test * 16 * 16
    assert [r["class"] for r in s["tables"]["test"]["per_class"]] == CLASSES
    lo, hi = s["intervals"]["test"]["mean_iou"]
    assert lo <= s["metrics"]["test"]["mean_iou"] <= hi
    rows = list(csv.DictReader((d / "metrics.csv").open()))
    assert len(rows) == 2 and {"train_pixel_accuracy", "val_pixel_accuracy", "val_loss"} <= set(rows[0])
    assert (d / "figures" / "segmentation.png").stat().st_size > 5000
    preds = list(csv.DictReader((d / "predictions_test.csv").open()))
    assert len(preds) == n_test and 0 <= float(preds[0]["pixel_accuracy"]) <= 1
    html = (d / "report.html").read_text()
    assert "Test images, true masks and predicted masks" in html and "<th>IoU</th>" in html


def test_segmentation_config_errors_name_the_key(tmp_path, capsys):
    for over, needle in (("model.name=cnn", "model.name: model 'cnn' does classification, forecasting, multilabel or regression, "
                                            "not segmentation; choose 'fcn' or 'unet'"),
                         ("data.options.colours=3", "data.options.colours: option not accepted by dataset 'shapes'"),
                         ("data.options.n=2", "shapes needs n >= 3")):
        code, _, err = cli_inproc(capsys, "run", str(EXAMPLES / "shapes_unet.yaml"), *SMALL, over, "--out", str(tmp_path / "x"))
        assert code == 2, (over, err)
        assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "x").exists()
