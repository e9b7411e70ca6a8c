"""SCN's data, in two halves like every stage's.

* Per sample, in the loader's workers: patches resized to ``patch_size`` (bilinear, antialiased),
  kept as ``uint8`` tensors; the offset as float32 [8]; class indices (-1 where unknown).
* Per batch, on the device: pixels to [0, 1], then ImageNet normalisation (what VGG-19's weights
  expect; the demo's backbone is pretrained with the same).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from frugalcv.errors import ConfigError
from frugalcv.sharding import load_manifest, storage
from frugalcv.workflows import kit

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNKNOWN = -1


def normalize(images01: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB -> ImageNet-normalised."""
    mean = images01.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images01.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images01 - mean) / std


def resized(image_HWC: np.ndarray, size: int) -> torch.Tensor:
    """An HxWx3 uint8 patch as a 3 x size x size uint8 tensor."""
    chw = torch.from_numpy(np.ascontiguousarray(image_HWC)).permute(2, 0, 1)
    if tuple(chw.shape[-2:]) == (size, size):
        return chw.contiguous()
    out = F.interpolate(chw[None].float(), (size, size), mode="bilinear", align_corners=False, antialias=True)
    return out[0].round().clamp(0, 255).to(torch.uint8)


class PairTransform:
    """Picklable: a patch-pair sample -> (X_i, X_j, o_ij, class of X_i, class of X_j)."""

    def __init__(self, patch_size: int):
        self.patch_size = patch_size

    def __call__(self, sample: dict):
        missing = [k for k in ("a", "b", "offset") if k not in sample]
        if missing:
            raise ConfigError(f"sample {sample.get('key')}: no {', '.join(missing)}; SCN reads patch-pair shards "
                              "(a.png, b.png, offset.npy), e.g. kind scn-shapes")
        return (resized(sample["a"], self.patch_size), resized(sample["b"], self.patch_size),
                torch.from_numpy(sample["offset"]), sample.get("a_label", UNKNOWN), sample.get("b_label", UNKNOWN))


class ImageTransform:
    """Picklable: a classification sample -> (image, label), or (image, [C] multi-hot labels) for
    image-level labels (``labels.npy``, e.g. kind voc)."""

    def __init__(self, patch_size: int):
        self.patch_size = patch_size

    def __call__(self, sample: dict):
        if "labels" in sample:
            return resized(sample["image"], self.patch_size), torch.from_numpy(sample["labels"].copy())
        return resized(sample["image"], self.patch_size), sample["label"]


def to_float_pairs(batch, generator: torch.Generator):
    """(X_i, X_j normalised; o_ij; labels; X_i in [0, 1] for pixel targets)."""
    a, b, offset, a_label, b_label = batch
    a01 = a.float().div_(255)
    return normalize(a01), normalize(b.float().div_(255)), offset.float(), a_label, b_label, a01


def to_float_images(batch, generator: torch.Generator):
    images, labels = batch
    return normalize(images.float().div_(255)), labels


def check_task(ctx: kit.StageContext, name: str, task: str) -> None:
    """Refuse an input split of another task, naming what it is and what to give."""
    url = ctx.input(name)
    manifest = load_manifest(url)
    if manifest.task != task:
        what = {"patch_pairs": "patch-pair shards (kind scn-shapes or voc-pairs)",
                "classification": "labelled images (e.g. kind digits)"}[task]
        raise ConfigError(f"stages.{ctx.stage}.inputs.{name}: {storage.redact(url)} holds {manifest.task} samples "
                          f"(kind {manifest.kind}); give {what}")


def pair_stream(ctx: kit.StageContext, name: str, batch_size: int, patch_size: int, *, train: bool):
    """Patch pairs of input ``name``: training (shuffled, this rank's share) or in order."""
    check_task(ctx, name, "patch_pairs")
    return kit.stream(ctx, ctx.input(name), batch_size, PairTransform(patch_size), batch_transform=to_float_pairs,
                      train=train)


def image_stream(ctx: kit.StageContext, name: str, batch_size: int, patch_size: int, *, train: bool = True):
    """Labelled images of input ``name``: shuffled (the backbone's pretraining data) or in order
    (the probe's images)."""
    check_task(ctx, name, "classification")
    return kit.stream(ctx, ctx.input(name), batch_size, ImageTransform(patch_size), batch_transform=to_float_images,
                      train=train)
