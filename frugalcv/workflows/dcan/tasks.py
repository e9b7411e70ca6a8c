"""DCAN's training steps: one Trainer task per stage kind.

Every step takes the stage's batch: ``(images, masks)`` for the source-only baseline, else
``((source images, source masks), target images)``; images in [0, 1] on the device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from frugalcv.workflows import kit
from frugalcv.workflows.dcan.data import normalize

IGNORE = 255


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Pixel-wise cross-entropy (Eq. 6.3), label 255 ignored."""
    return F.cross_entropy(logits.float(), masks, ignore_index=IGNORE)


def matched_targets(target: torch.Tensor, batch: int, per_source: int) -> torch.Tensor:
    """``per_source`` target images for each of ``batch`` source images: the batch as drawn, or, where
    a split holds fewer images than that (a tiny dataset), its images repeated in order."""
    want = batch * per_source
    if target.shape[0] == want:
        return target
    return target[torch.arange(want, device=target.device) % target.shape[0]]


class SourceOnlyTask:
    """Cross-entropy on source images; no target, no alignment."""

    def __init__(self, seg: nn.Module):
        self.seg = seg

    def training_step(self, batch):
        images, masks = batch
        loss = segmentation_loss(self.seg(normalize(images)), masks)
        return {"loss": loss, "seg": loss.detach()}


class GeneratorTask:
    """The generator alone: content (relu4_1 against the aligned features) plus Gram style terms."""

    def __init__(self, generator: nn.Module, per_source: int):
        self.generator, self.per_source = generator, per_source

    def training_step(self, batch):
        (images, _), target = batch
        target = matched_targets(target, images.shape[0], self.per_source)
        out = self.generator(images, target)
        losses = kit.unwrap(self.generator).loss(out)
        return {"loss": losses["gen"], **{k: v.detach() for k, v in losses.items()}}


class TwoStageTask:
    """Segmentation on images synthesised by a frozen generator, aligned with the target at the split."""

    def __init__(self, seg: nn.Module, generator: nn.Module, per_source: int):
        self.seg, self.generator, self.per_source = seg, generator, per_source

    def training_step(self, batch):
        (images, masks), target = batch
        target = matched_targets(target, images.shape[0], self.per_source)
        with torch.no_grad():
            synthesised = self.generator(images, target).image
        loss = segmentation_loss(self.seg(normalize(synthesised), target=normalize(target)), masks)
        return {"loss": loss, "seg": loss.detach()}


class DCAN(nn.Module):
    """The end-to-end network: generator then segmentation, one module (so DDP and DeepSpeed take it).

    ``forward(source, target)`` -> (segmentation logits of the synthesised source aligned with the
    target, the generator's losses); ``l_seg`` reaches the decoder through the synthesised images.
    """

    def __init__(self, seg: nn.Module, generator: nn.Module):
        super().__init__()
        self.seg, self.generator = seg, generator

    def forward(self, source: torch.Tensor, target: torch.Tensor):
        out = self.generator(source, target)
        logits = self.seg(normalize(out.image), target=normalize(target))
        return logits, self.generator.loss(out)


class EndToEndTask:
    """Eq. 6.5: ``l_seg + gen_weight * l_gen`` over the joint network."""

    def __init__(self, model: nn.Module, gen_weight: float, per_source: int):
        self.model, self.gen_weight, self.per_source = model, gen_weight, per_source

    def training_step(self, batch):
        (images, masks), target = batch
        target = matched_targets(target, images.shape[0], self.per_source)
        logits, gen = self.model(images, target)
        seg = segmentation_loss(logits, masks)
        loss = seg + self.gen_weight * gen["gen"].float()
        return {"loss": loss, "seg": seg.detach(), **{k: v.detach() for k, v in gen.items()}}
