"""Image preprocessing of BlockDrop's stages, in two halves.

* Per sample, in the loader's workers (:class:`SampleTransform`): the geometry that differs from
  image to image, on ``uint8`` tensors. ``crop`` (CIFAR, digits): a resize to ``image_size``
  when one is given and the image differs; ``imagenet``: training RandomResizedCrop(``image_size``),
  evaluation resize to ``image_size`` · 256/224 + center crop ``image_size``.
* Per batch, on the training device (:class:`BatchTransform`): training's random translation
  (zero-pad by ``translate`` pixels, crop back: He et al.'s pad-4 crop) and horizontal flip, each
  drawn per image, then scaling to [0, 1] and the per-channel normalisation carried in every
  checkpoint. Whole-batch tensor ops: on a GPU they cost next to nothing, and the workers send
  ``uint8`` images (a quarter of the bytes of ``float32``).

Random draws depend only on (seed, epoch, position in the epoch, rank), so a resumed run
augments every image as the uninterrupted run did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from frugalcv.errors import ConfigError

#: per-channel mean/std in [0, 1] units
IMAGENET_STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
CIFAR10_STATS = ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])
CIFAR100_STATS = ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762])
KNOWN_STATS = {"imagenet": IMAGENET_STATS, "cifar10": CIFAR10_STATS, "cifar100": CIFAR100_STATS}


@dataclass
class Preprocess:
    """How a stage turns decoded samples ``{"image": HxWx3 uint8, "label"}`` into normalised batches."""

    augment: str = "crop"
    image_size: int | None = None
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])

    def __post_init__(self):
        if self.augment not in ("crop", "imagenet"):
            raise ConfigError(f"augment={self.augment!r}: use 'crop' (CIFAR-style) or 'imagenet'")
        if self.augment == "imagenet" and not self.image_size:
            self.image_size = 224

    def transforms(self, *, train: bool, translate: int = 0, hflip: bool = False,
                   normalize: bool = True) -> tuple[SampleTransform, BatchTransform]:
        """(the workers' per-sample transform, the device's per-batch transform)."""
        sample = SampleTransform(self.augment, self.image_size, train)
        batch = BatchTransform(translate=translate if train and self.augment == "crop" else 0,
                               hflip=train and hflip,
                               mean=list(self.mean) if normalize else None,
                               std=list(self.std) if normalize else None)
        return sample, batch

    def stats_transforms(self) -> tuple[SampleTransform, BatchTransform]:
        """Unnormalised [0, 1] images at the evaluation geometry (for dataset statistics)."""
        return self.transforms(train=False, normalize=False)

    def to_dict(self) -> dict:
        return {"augment": self.augment, "image_size": self.image_size, "mean": list(self.mean),
                "std": list(self.std)}


class SampleTransform:
    """Picklable ``sample dict -> (3xHxW uint8 tensor, label)`` for the loader's workers."""

    def __init__(self, augment: str, size: int | None, train: bool):
        self.augment, self.size, self.train = augment, size, train
        self.random_resized_crop = v2.RandomResizedCrop(size, antialias=True) if augment == "imagenet" else None

    def __call__(self, sample: dict):
        image = torch.from_numpy(sample["image"]).permute(2, 0, 1)
        size = self.size
        if self.augment == "imagenet":
            if self.train:
                image = self.random_resized_crop(image)
            else:
                image = TF.center_crop(TF.resize(image, round(size * 256 / 224), antialias=True), [size, size])
        elif size and tuple(image.shape[-2:]) != (size, size):
            # what TF.resize does for uint8 on the CPU, without its per-call checks
            image = F.interpolate(image.unsqueeze(0), size=(size, size), mode="bilinear", antialias=True,
                                  align_corners=False).squeeze(0)
        return image.contiguous(), int(sample["label"])


@dataclass
class BatchTransform:
    """``((N,3,H,W) uint8 images, labels), generator -> (float images, labels)`` on the images' device:
    random translation by up to ``translate`` pixels (zero padding) and horizontal flip, drawn per
    image from ``generator`` (a CPU generator), then [0, 1] scaling and ``mean``/``std`` normalisation."""

    translate: int = 0
    hflip: bool = False
    mean: list[float] | None = None
    std: list[float] | None = None

    def __call__(self, batch, generator: torch.Generator | None = None):
        images, labels = batch
        n, device = images.shape[0], images.device
        if self.translate > 0:
            t = self.translate
            shifts = torch.randint(0, 2 * t + 1, (2, n), generator=generator).to(device, non_blocking=True)
            images = translate_images(images, shifts[0], shifts[1], t)
        if self.hflip:
            flip = (torch.rand(n, generator=generator) < 0.5).to(device, non_blocking=True)
            images = torch.where(flip.view(n, 1, 1, 1), images.flip(-1), images)
        x = images.float().div_(255)
        if self.mean is not None:
            mean, std = self._stats(device)
            x = x.sub_(mean).div_(std)
        return x, labels

    def _stats(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean`` and ``std`` as (1, C, 1, 1) tensors on ``device``, made once per device."""
        cache = self.__dict__.setdefault("_on_device", {})
        if device not in cache:
            cache[device] = tuple(torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (self.mean, self.std))
        return cache[device]


def translate_images(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, pad: int) -> torch.Tensor:
    """Each image zero-padded by ``pad`` and cropped back to its size at offset (``dy``, ``dx``) in
    [0, 2·pad] (offset ``pad`` is the identity)."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = (dy.view(n, 1) + torch.arange(h, device=images.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * pad)
    images = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w, device=images.device)).view(n, 1, 1, w).expand(n, c, h, w)
    return images.gather(3, cols)


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
