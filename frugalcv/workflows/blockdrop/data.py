"""In-memory image batches for small classification sets (digits, CIFAR-sized debugging).

Stage functions take any iterable of ``(images_BCHW float, labels_B long)`` batches; this
module builds such iterables from shard URLs (``frugalcv.sharding.iter_samples``) or
tensors, reshuffled per epoch and deterministic given (seed, epoch).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from frugalcv.errors import ConfigError


def load_split(url: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read every sample of a sharded classification split: (uint8 [N, 3, H, W], long [N])."""
    from frugalcv.sharding import iter_samples

    images, labels = [], []
    for sample in iter_samples(url):
        images.append(np.asarray(sample["image"], dtype=np.uint8))
        labels.append(int(sample["label"]))
    if not images:
        raise ConfigError(f"no samples in {url!r}; is it a sharded split folder with a manifest.json?")
    images_NHWC = torch.from_numpy(np.stack(images))
    return images_NHWC.permute(0, 3, 1, 2).contiguous(), torch.tensor(labels, dtype=torch.long)


def digits_arrays(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn digits exactly as the ``digits`` shard kind encodes them, without shards.

    For development and tests only: stages read shards (``load_split``).
    """
    from sklearn.datasets import load_digits

    from frugalcv.sharding.sources.digits import digit_image

    if split not in ("train", "test"):
        raise ConfigError(f"digits split {split!r}: use 'train' or 'test'")
    digits = load_digits()
    index = [i for i in range(len(digits.images)) if (i % 5 == 0) == (split == "test")]
    images = np.stack([digit_image(digits.images[i]) for i in index])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.as_tensor(digits.target[index], dtype=torch.long)


def channel_stats(images_uint8: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 [N, C, H, W] images, in [0, 1] units."""
    x = images_uint8.float().div_(255.0)
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()


def normalize(images_uint8: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    x = images_uint8.float().div_(255.0)
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def resize(images_BCHW: torch.Tensor, size: int | None) -> torch.Tensor:
    """Square ``size`` x ``size`` images: area averaging when shrinking, bilinear when growing."""
    if not size or tuple(images_BCHW.shape[-2:]) == (size, size):
        return images_BCHW
    if size < 1:
        raise ConfigError(f"image_size={size}: must be a positive number of pixels")
    mode = "area" if size < images_BCHW.shape[-1] else "bilinear"
    return F.interpolate(images_BCHW.float(), size=(size, size), mode=mode)


def random_translate(images_BCHW: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` pixels and crop back at a random offset per image (no flips: digits)."""
    if pad <= 0:
        return images_BCHW
    b, _, h, w = images_BCHW.shape
    padded = F.pad(images_BCHW, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])


class TensorBatches:
    """Callable ``epoch -> iterator of (images, labels)`` over in-memory tensors.

    The order depends only on (seed, epoch); ``translate`` adds random-shift augmentation.
    Usable directly as the Trainer's ``data`` or, via ``iter(batches)``, as one pass.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, shuffle: bool = False,
                 seed: int = 0, translate: int = 0, drop_last: bool = False):
        if len(images) != len(labels):
            raise ConfigError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size}: must be >= 1")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.translate, self.drop_last = translate, drop_last

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __call__(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        n = len(self.images)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        for i in range(len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            images = self.images[index]
            if self.translate:
                images = random_translate(images, self.translate, gen)
            yield images, self.labels[index]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self(0)


def as_batches(data: Iterable) -> Iterable:
    """Evaluation helper: a TensorBatches-like callable becomes one pass over epoch 0."""
    return data(0) if callable(data) else data
