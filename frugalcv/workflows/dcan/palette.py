"""The official Cityscapes colours (cityscapesScripts labels.py), by train id, for coloured masks."""

from __future__ import annotations

import numpy as np
import torch

CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

_LUT = np.zeros((256, 3), dtype=np.uint8)  # ids without a colour (255 = ignore) stay black
_LUT[: len(CITYSCAPES_PALETTE)] = CITYSCAPES_PALETTE


def colorize(mask_HW: np.ndarray | torch.Tensor) -> np.ndarray:
    """Train-id mask [H, W] -> RGB image [H, W, 3] uint8; ignore (255) and unknown ids are black."""
    if isinstance(mask_HW, torch.Tensor):
        mask_HW = mask_HW.detach().cpu().numpy()
    mask = np.asarray(mask_HW)
    if mask.ndim != 2:
        raise ValueError(f"colorize takes one [H, W] mask of class ids, got shape {mask.shape}")
    if mask.dtype != np.uint8:
        mask = np.where((mask >= 0) & (mask < 256), mask, 255).astype(np.uint8)
    return _LUT[mask]
