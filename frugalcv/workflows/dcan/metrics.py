"""Semantic-segmentation scores: a confusion matrix accumulated over batches, per-class IoU and mIoU.

IoU_c = TP_c / (TP_c + FP_c + FN_c); mIoU averages it over the evaluated classes (the classes of the
benchmark, e.g. ``SYNTHIA_16`` for SYNTHIA -> Cityscapes, or by default those present in the ground truth).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torch import Tensor

#: the 16 Cityscapes train ids that SYNTHIA labels: all 19 but terrain (9), truck (14) and train (16)
SYNTHIA_16 = tuple(c for c in range(19) if c not in (9, 14, 16))


class ConfusionMatrix:
    """``matrix[g, p]`` counts pixels of ground-truth class g predicted as p (int64, on ``device``).

    Pixels whose target is ``ignore_index`` or not a class id (negative, >= num_classes) are skipped.
    The state is the tensor ``.matrix``: under DDP, ``dist.all_reduce(cm.matrix)`` sums the ranks' counts.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: str | torch.device = "cpu"):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred`` and ``target`` are class-id tensors of one shape (e.g. [B, H, W])."""
        if pred.shape != target.shape:
            raise ValueError(f"pred has shape {tuple(pred.shape)} but target {tuple(target.shape)}; "
                             "take pred = logits.argmax(1) at the label's resolution")
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError("pred and target must hold integer class ids, not floats; "
                             "take pred = logits.argmax(1)")
        c = self.num_classes
        pred, target = pred.to(self.matrix.device).reshape(-1), target.to(self.matrix.device).reshape(-1)
        keep = (target >= 0) & (target < c) & (target != self.ignore_index)
        pred, target = pred[keep].long(), target[keep].long()
        if bool(((pred < 0) | (pred >= c)).any()):
            raise ValueError(f"pred holds class ids outside [0, {c}) (min {int(pred.min())}, max "
                             f"{int(pred.max())}) on labelled pixels; the model must predict {c} classes")
        self.matrix += torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts (same classes) into this one; returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge a {other.num_classes}-class confusion matrix into a "
                             f"{self.num_classes}-class one")
        self.matrix += other.matrix.to(self.matrix.device)
        return self

    def reset(self) -> None:
        self.matrix.zero_()

    def iou(self) -> Tensor:
        """Per-class IoU (float64, CPU); NaN for a class absent from both ground truth and prediction."""
        m = self.matrix.detach().cpu().double()
        tp = m.diag()
        union = m.sum(1) + m.sum(0) - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))

    def present_classes(self) -> list[int]:
        """Class ids with at least one ground-truth pixel."""
        return torch.nonzero(self.matrix.detach().cpu().sum(1) > 0).flatten().tolist()

    def miou(self, classes: Sequence[int] | None = None) -> float:
        """Mean IoU over ``classes`` (default: those present in the ground truth); NaN IoUs are left out.

        A listed class that is predicted but never in the ground truth scores 0, as in the benchmarks.
        """
        ious = self.iou()[self._check(classes)]
        ious = ious[~ious.isnan()]
        return float(ious.mean()) if ious.numel() else math.nan

    def pixel_accuracy(self) -> float:
        """Correct pixels / labelled pixels (NaN before any labelled pixel)."""
        total = int(self.matrix.sum())
        return int(self.matrix.diag().sum()) / total if total else math.nan

    def _check(self, classes: Sequence[int] | None) -> list[int]:
        if classes is None:
            return self.present_classes()
        bad = [c for c in classes if not 0 <= c < self.num_classes]
        if bad:
            raise ValueError(f"class ids {bad} are outside [0, {self.num_classes})")
        return list(classes)


def iou_key(class_name: str) -> str:
    """The metric name of a class's IoU: ``iou_traffic_light`` (characters MLflow refuses become _)."""
    return "iou_" + re.sub(r"[^0-9A-Za-z_\-.]", "_", class_name.strip())


def segmentation_metrics(cm: ConfusionMatrix, class_names: Sequence[str],
                         classes: Sequence[int] | None = None) -> dict[str, float]:
    """``{"miou", "pixel_accuracy", "iou_<name>"...}`` over ``classes`` (default: present in the ground truth).

    A class with no pixel in ground truth or prediction has no IoU and gets no ``iou_`` key.
    """
    if len(class_names) != cm.num_classes:
        raise ValueError(f"{len(class_names)} class names for a {cm.num_classes}-class confusion matrix")
    evaluated = cm._check(classes)
    ious = cm.iou()
    out = {"miou": cm.miou(evaluated), "pixel_accuracy": cm.pixel_accuracy()}
    for c in evaluated:
        if not math.isnan(float(ious[c])):
            out[iou_key(class_names[c])] = float(ious[c])
    return out
