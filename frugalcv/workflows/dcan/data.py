"""DCAN's data, in two halves like every stage's.

* Per sample, in the loader's workers: an optional resize to a fixed size (bilinear for images,
  nearest for masks), so that a batch stacks; ``uint8`` tensors go to the device. Target-domain
  samples keep only their image: their labels are never read for training.
* Per batch, on the device: a random crop and horizontal flip drawn per image from the batch's
  generator (so a resumed run crops what the uninterrupted one cropped), then scaling to [0, 1].
  The segmentation networks normalise with ImageNet statistics themselves (``normalize``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from frugalcv.workflows import kit

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images01: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB -> ImageNet-normalised, as the segmentation backbones expect."""
    mean = images01.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images01.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images01 - mean) / std


class SampleTransform:
    """Picklable ``sample -> (3xHxW uint8 image, HxW uint8 mask)`` (or the image alone)."""

    def __init__(self, resize: list[int] | None, *, with_mask: bool):
        self.resize, self.with_mask = (tuple(resize) if resize else None), with_mask

    def __call__(self, sample: dict):
        image = torch.from_numpy(sample["image"]).permute(2, 0, 1)
        if self.resize and tuple(image.shape[-2:]) != self.resize:
            image = F.interpolate(image[None].float(), self.resize, mode="bilinear", align_corners=False,
                                  antialias=True)[0].round().clamp(0, 255).to(torch.uint8)
        if not self.with_mask:
            return image
        mask = torch.from_numpy(sample["mask"])
        if self.resize and tuple(mask.shape) != self.resize:
            mask = F.interpolate(mask[None, None].float(), self.resize, mode="nearest")[0, 0].to(torch.uint8)
        return image, mask


class CropFlip:
    """Per-image random crop of ``crop`` [H, W] (clamped to the image) and flip; images to [0, 1]."""

    def __init__(self, crop: list[int] | None, hflip: bool):
        self.crop, self.hflip = (tuple(crop) if crop else None), hflip

    def __call__(self, batch, generator: torch.Generator):
        images, masks = batch if isinstance(batch, (tuple, list)) else (batch, None)
        b, _, h, w = images.shape
        ch, cw = (min(self.crop[0], h), min(self.crop[1], w)) if self.crop else (h, w)
        tops = torch.randint(0, h - ch + 1, (b,), generator=generator).tolist()
        lefts = torch.randint(0, w - cw + 1, (b,), generator=generator).tolist()
        flips = (torch.rand(b, generator=generator) < 0.5).tolist() if self.hflip else [False] * b

        def cut(x, i):
            x = x[..., tops[i]:tops[i] + ch, lefts[i]:lefts[i] + cw]
            return x.flip(-1) if flips[i] else x

        images = torch.stack([cut(images[i], i) for i in range(b)]).float().div_(255)
        if masks is None:
            return images
        return images, torch.stack([cut(masks[i], i) for i in range(b)]).long()


class ToFloat:
    """Evaluation batches: images to [0, 1], masks to long; nothing random."""

    def __call__(self, batch, generator: torch.Generator):
        images, masks = batch
        return images.float().div_(255), masks.long()


def source_stream(ctx: kit.StageContext, p) -> kit.TrainStream:
    """The labelled source split: ``(images [B,3,h,w] in [0,1], masks [B,h,w] long)`` on the device."""
    return kit.stream(ctx, ctx.input("source"), p.batch_size, SampleTransform(p.source_resize, with_mask=True),
                      batch_transform=CropFlip(p.crop, p.hflip))


def paired_stream(ctx: kit.StageContext, p) -> kit.PairedStream:
    """Source batches, each with ``targets_per_source`` target images per source image drawn at random."""
    source = source_stream(ctx, p)
    per_rank = source.loader.batch_size * p.targets_per_source
    target = kit.stream(ctx, ctx.input("target"), per_rank * ctx.world_size,
                        SampleTransform(p.target_resize, with_mask=False),
                        batch_transform=CropFlip(p.crop, p.hflip), seed_offset=7919)
    target.loader.batch_size = per_rank  # exactly k per source image, also where a smoke run caps batches
    return kit.pair(source, target)


def eval_stream(ctx: kit.StageContext, split: str, batch_size: int, size: list[int] | None) -> kit.EvalStream:
    """``split`` in order, images resized to ``size`` (masks kept at their stored size)."""
    return kit.stream(ctx, ctx.input(split), batch_size, EvalTransform(size), batch_transform=ToFloat(), train=False)


def image_stream(ctx: kit.StageContext, split: str, batch_size: int, size: list[int]) -> kit.EvalStream:
    """``split``'s images alone, in order, resized to ``size`` (for figures)."""
    return kit.stream(ctx, ctx.input(split), batch_size, SampleTransform(size, with_mask=False),
                      batch_transform=_images_to_float, train=False)


def _images_to_float(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return images.float().div_(255)


class EvalTransform:
    """Picklable: the image resized to ``size`` for prediction, the mask untouched (scored at full size)."""

    def __init__(self, size: list[int] | None):
        self.image = SampleTransform(size, with_mask=False)

    def __call__(self, sample: dict):
        return self.image(sample), torch.from_numpy(sample["mask"])
