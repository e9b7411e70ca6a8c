"""Streamed target-domain evaluation of one or more segmentation networks in a single pass.

Alignment is off (eval mode: the networks see target images only); logits are upsampled
(bilinear) to the label's size, so a prediction made at half resolution is scored at full
resolution (the dissertation's "predictions upsampled x2").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from frugalcv.workflows import kit
from frugalcv.workflows.dcan.data import normalize
from frugalcv.workflows.dcan.metrics import ConfusionMatrix


@dataclass
class Evaluation:
    """Each network's confusion matrix, and the first ``keep`` examples (image, ground truth, predictions)."""

    matrices: dict[str, ConfusionMatrix]
    images: list[np.ndarray] = field(default_factory=list)
    ground_truth: list[np.ndarray] = field(default_factory=list)
    predictions: dict[str, list[np.ndarray]] = field(default_factory=dict)


@torch.no_grad()
def evaluate(nets: Mapping[str, nn.Module], batches: Iterable, num_classes: int, *, device, precision: str = "fp32",
             keep: int = 0) -> Evaluation:
    """Score every network of ``nets`` on ``batches`` of ``(images [0,1], masks)``."""
    result = Evaluation({name: ConfusionMatrix(num_classes, device=device) for name in nets},
                        predictions={name: [] for name in nets})
    for net in nets.values():
        net.eval()
    for images, masks in batches:
        logits_in = normalize(images)
        room = keep - len(result.images)
        for name, net in nets.items():
            with kit.autocast(device, precision):
                logits = net(logits_in)
            pred = F.interpolate(logits.float(), masks.shape[-2:], mode="bilinear", align_corners=False).argmax(1)
            result.matrices[name].update(pred, masks)
            if room > 0:
                result.predictions[name] += [p.to(torch.uint8).cpu().numpy() for p in pred[:room]]
        if room > 0:
            small = F.interpolate(images[:room].float(), masks.shape[-2:], mode="bilinear", align_corners=False)
            result.images += [(x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy() for x in small]
            result.ground_truth += [m.to(torch.uint8).cpu().numpy() for m in masks[:room]]
    return result


@torch.no_grad()
def translations(generator: nn.Module, sources: torch.Tensor, targets: torch.Tensor):
    """(sources, synthesised sources, targets) as lists of HxWx3 uint8, for the translation figure."""
    generator.eval()
    synthesised = generator(sources, targets).image

    def rgb(x):
        return [(i.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy() for i in x.float()]

    return rgb(sources), rgb(synthesised), rgb(targets)
