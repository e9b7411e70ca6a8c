"""DCAN's segmentation scores on hand-made label maps, checked against counts worked out by hand."""

import math

import pytest
import torch

from frugalcv.sharding.sources._common import CITYSCAPES_CLASSES
from frugalcv.workflows.dcan.metrics import SYNTHIA_16, ConfusionMatrix, iou_key, segmentation_metrics

# one 2x5 image, 3 classes; the last column is unlabelled (255)
TARGET = torch.tensor([[[0, 0, 0, 1, 255],
                        [1, 1, 2, 2, 255]]])
PRED = torch.tensor([[[0, 0, 1, 1, 2],
                      [1, 2, 2, 0, 0]]])
# labelled pixels, (gt, pred): (0,0) (0,0) (0,1) (1,1) (1,1) (1,2) (2,2) (2,0)
# class 0: TP 2, FN 1, FP 1 -> 2/4;  class 1: TP 2, FN 1, FP 1 -> 2/4;  class 2: TP 1, FN 1, FP 1 -> 1/3
IOU = [2 / 4, 2 / 4, 1 / 3]


def _cm(pred=PRED, target=TARGET, num_classes=3):
    cm = ConfusionMatrix(num_classes)
    cm.update(pred, target)
    return cm


def test_confusion_counts_rows_are_ground_truth():
    assert _cm().matrix.tolist() == [[2, 1, 0], [0, 2, 1], [1, 0, 1]]
    assert _cm().matrix.dtype == torch.int64


def test_iou_miou_and_pixel_accuracy_by_hand():
    cm = _cm()
    torch.testing.assert_close(cm.iou(), torch.tensor(IOU, dtype=torch.float64))
    assert cm.miou() == pytest.approx(sum(IOU) / 3)
    assert cm.pixel_accuracy() == pytest.approx(5 / 8)


def test_predictions_on_ignored_pixels_change_nothing():
    other = PRED.clone()
    other[..., 4] = torch.tensor([1, 1])
    assert torch.equal(_cm(other).matrix, _cm().matrix)


def test_targets_outside_the_classes_are_skipped():
    target = TARGET.clone()
    target[0, 0, 4] = 7  # neither a class nor the ignore id
    assert torch.equal(_cm(target=target).matrix, _cm().matrix)


def test_predictions_outside_the_classes_are_refused():
    pred = PRED.clone()
    pred[0, 0, 0] = 3
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        _cm(pred=pred)


def test_a_class_absent_from_ground_truth_is_left_out_by_default():
    # 4 classes: class 3 never in gt nor pred (IoU NaN); add a pixel predicted 3 on a class-0 pixel
    cm = _cm(num_classes=4)
    assert math.isnan(float(cm.iou()[3]))
    assert cm.miou() == pytest.approx(sum(IOU) / 3)
    cm.update(torch.tensor([[3]]), torch.tensor([[0]]))  # class 0: TP 2, FN 2, FP 1 -> 2/5
    assert float(cm.iou()[3]) == 0.0
    assert cm.miou() == pytest.approx((2 / 5 + 2 / 4 + 1 / 3) / 3)  # class 3 absent from gt: not averaged
    assert cm.miou([0, 1, 2, 3]) == pytest.approx((2 / 5 + 2 / 4 + 1 / 3 + 0) / 4)  # listed: it scores 0


def test_explicit_class_subset():
    assert _cm().miou([0, 2]) == pytest.approx((IOU[0] + IOU[2]) / 2)
    assert math.isnan(ConfusionMatrix(3).miou())


def test_merge_equals_one_matrix_over_both_batches():
    pred2 = torch.tensor([[[2, 2], [0, 1]]])
    target2 = torch.tensor([[[2, 1], [0, 255]]])
    a, b = _cm(), _cm(pred2, target2)
    both = ConfusionMatrix(3)
    both.update(PRED, TARGET)
    both.update(pred2, target2)
    assert torch.equal(a.merge(b).matrix, both.matrix)
    with pytest.raises(ValueError, match="4-class"):
        a.merge(ConfusionMatrix(4))


def test_segmentation_metrics_names_and_values():
    m = segmentation_metrics(_cm(), ["road", "traffic light", "sky"], None)
    assert m == pytest.approx({"miou": sum(IOU) / 3, "pixel_accuracy": 5 / 8, "iou_road": IOU[0],
                               "iou_traffic_light": IOU[1], "iou_sky": IOU[2]})
    only = segmentation_metrics(_cm(), ["road", "traffic light", "sky"], [0, 2])
    assert set(only) == {"miou", "pixel_accuracy", "iou_road", "iou_sky"}
    assert iou_key("traffic sign") == "iou_traffic_sign"


def test_synthia_16_drops_terrain_truck_train():
    assert len(SYNTHIA_16) == 16
    assert {CITYSCAPES_CLASSES[c] for c in set(range(19)) - set(SYNTHIA_16)} == {"terrain", "truck", "train"}
