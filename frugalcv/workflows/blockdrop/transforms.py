"""Image preprocessing of BlockDrop's stages (torchvision transforms v2), run in loader workers.

Two recipes, chosen by ``augment``:

* ``crop`` (CIFAR, digits): optional resize to ``image_size``; training adds a random crop after
  zero-padding by ``translate`` pixels (He et al.'s pad-4 crop) and, with ``hflip``, a random
  horizontal flip;
* ``imagenet``: training RandomResizedCrop(``image_size``) + flip; evaluation resize to
  ``image_size`` · 256/224 + center crop ``image_size``.

Then scale to [0, 1] and normalise with the per-channel mean/std carried in every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torchvision.transforms import v2

from frugalcv.errors import ConfigError

#: per-channel mean/std in [0, 1] units
IMAGENET_STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
CIFAR10_STATS = ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])
CIFAR100_STATS = ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762])
KNOWN_STATS = {"imagenet": IMAGENET_STATS, "cifar10": CIFAR10_STATS, "cifar100": CIFAR100_STATS}


@dataclass
class Preprocess:
    """How a stage turns a decoded sample ``{"image": HxWx3 uint8, "label"}`` into ``(CHW float, label)``."""

    augment: str = "crop"
    image_size: int | None = None
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])

    def __post_init__(self):
        if self.augment not in ("crop", "imagenet"):
            raise ConfigError(f"augment={self.augment!r}: use 'crop' (CIFAR-style) or 'imagenet'")
        if self.augment == "imagenet" and not self.image_size:
            self.image_size = 224

    def transform(self, *, train: bool, translate: int = 0, hflip: bool = False) -> SampleTransform:
        ops: list = [v2.ToImage()]
        size = self.image_size
        if self.augment == "imagenet":
            if train:
                ops.append(v2.RandomResizedCrop(size, antialias=True))
            else:
                ops += [v2.Resize(round(size * 256 / 224), antialias=True), v2.CenterCrop(size)]
        else:
            if size:
                ops.append(v2.Resize((size, size), antialias=True))
            if train and translate > 0:
                ops.append(v2.RandomCrop(size, padding=translate) if size else _PadCrop(translate))
        if train and hflip:
            ops.append(v2.RandomHorizontalFlip())
        ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        return SampleTransform(v2.Compose(ops))

    def stats_transform(self) -> SampleTransform:
        """Unnormalised [0, 1] images at the evaluation geometry (for dataset statistics)."""
        plain = Preprocess(self.augment, self.image_size)
        return plain.transform(train=False)

    def to_dict(self) -> dict:
        return {"augment": self.augment, "image_size": self.image_size, "mean": list(self.mean),
                "std": list(self.std)}


class _PadCrop(torch.nn.Module):
    """Random crop back to the input's own size after zero-padding by ``pad`` pixels."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, image):
        h, w = image.shape[-2:]
        return v2.RandomCrop((h, w), padding=self.pad)(image)


class SampleTransform:
    """Picklable ``sample dict -> (image tensor, label)`` for the loader's workers."""

    def __init__(self, compose):
        self.compose = compose

    def __call__(self, sample: dict):
        return self.compose(sample["image"]), int(sample["label"])


def dataset_stats(batches) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over batches of unnormalised [0, 1] images (streamed)."""
    total = sq = None
    count = 0
    for images, _ in batches:
        x = images.double()
        s, q = x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3))
        total, sq = (s, q) if total is None else (total + s, sq + q)
        count += x.shape[0] * x.shape[2] * x.shape[3]
    if not count:
        raise ConfigError("no samples to compute the normalisation statistics from")
    mean = total / count
    std = (sq / count - mean * mean).clamp_min(1e-6).sqrt()
    return mean.tolist(), std.clamp_min(1e-3).tolist()
