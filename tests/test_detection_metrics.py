"""Detection metrics on constructed boxes: box IoU (torchvision.ops) and COCO mAP (torchmetrics)."""

from __future__ import annotations

import pytest
import torch

from methodo.evaluate.metrics import box_iou, mean_average_precision


def test_box_iou_on_constructed_boxes():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 4, 4]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 2, 2]])
    iou = box_iou(a, b)
    assert iou.shape == (2, 4)
    assert iou[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0, 4 / 100])
    assert iou[1].tolist() == pytest.approx([16 / 100, 0.0, 0.0, 4 / 16])
    assert torch.equal(box_iou(b, a), iou.T)  # symmetric


def test_box_iou_refuses_malformed_boxes():
    with pytest.raises(ValueError, match=r"x2 < x1 or y2 < y1"):
        box_iou(torch.tensor([[10.0, 0, 0, 10]]), torch.tensor([[0.0, 0, 1, 1]]))
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        box_iou(torch.zeros(3), torch.zeros(1, 4))


def _img(boxes, labels, scores=None):
    d = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}
    if scores is not None:
        d["scores"] = torch.tensor(scores, dtype=torch.float32)
    return d


def test_map_is_one_for_perfect_detections_and_zero_for_misses():
    gt = [_img([[0, 0, 10, 10], [20, 20, 40, 40]], [0, 1]), _img([[5, 5, 15, 15]], [0])]
    perfect = [_img([[0, 0, 10, 10], [20, 20, 40, 40]], [0, 1], [0.9, 0.8]), _img([[5, 5, 15, 15]], [0], [0.7])]
    m = mean_average_precision(perfect, gt)
    assert m["map"] == pytest.approx(1.0) and m["map_50"] == pytest.approx(1.0) and m["mar_100"] == pytest.approx(1.0)
    far = [_img([[50, 50, 60, 60]], [0], [0.9]), _img([[70, 70, 80, 80]], [0], [0.9])]
    assert mean_average_precision(far, gt)["map"] == pytest.approx(0.0)


def test_map_50_vs_75_on_a_box_of_known_iou():
    # a 10 px box shifted by 2 px: overlap 80, union 120, IoU 0.667
    gt = [_img([[0, 0, 10, 10]], [0])]
    pred = [_img([[2, 0, 12, 10]], [0], [0.9])]
    assert box_iou(pred[0]["boxes"], gt[0]["boxes"]).item() == pytest.approx(80 / 120)
    m = mean_average_precision(pred, gt)
    assert m["map_50"] == pytest.approx(1.0)  # matched at IoU 0.5
    assert m["map_75"] == pytest.approx(0.0)  # not at 0.75
    # averaged over thresholds 0.50, 0.55, 0.60, 0.65 (matched) and 0.70..0.95 (not): 4 of 10
    assert m["map"] == pytest.approx(0.4)


def test_map_ranks_by_score_a_false_positive_first_halves_precision():
    gt = [_img([[0, 0, 10, 10]], [0])]
    pred = [_img([[30, 30, 40, 40], [0, 0, 10, 10]], [0, 0], [0.9, 0.5])]  # the wrong box is more confident
    m = mean_average_precision(pred, gt, iou_thresholds=[0.5])
    assert m["map"] == pytest.approx(0.5, abs=0.01)  # COCO's 101-point interpolated precision at recall 1


def test_map_undefined_without_ground_truth():
    m = mean_average_precision([_img([[0, 0, 1, 1]], [0], [0.9])], [_img([], [])])
    assert m["map"] is None
