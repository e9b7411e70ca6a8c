"""Pieces the segmentation heads share: 1×1 score layers and resizing to a skip's size."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def score_layer(in_ch: int, num_classes: int) -> nn.Conv2d:
    """1×1 conv to class scores, N(0, 0.01) weights and zero bias."""
    conv = nn.Conv2d(in_ch, num_classes, 1)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)
    return conv


def resize_to(x: Tensor, like: Tensor) -> Tensor:
    """``x`` bilinearly resized to ``like``'s height and width."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def fcn8s_fuse(score_top: Tensor, score_stride16: Tensor, score_stride8: Tensor) -> Tensor:
    """FCN-8s skip fusion: top scores ×2 + stride-16 scores, then ×2 + stride-8 scores (output stride 8).

    Upsampling is fixed bilinear interpolation to the skip's size (FCN's deconvolutions are
    initialised bilinear; interpolation also fits sizes that are not multiples of 32).
    """
    score = resize_to(score_top, score_stride16) + score_stride16
    return resize_to(score, score_stride8) + score_stride8
