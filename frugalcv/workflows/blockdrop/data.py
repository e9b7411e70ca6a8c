"""In-memory batches for tests and development: the training steps take any iterable of
``(images_BCHW float, labels_B long)`` batches. Stages never use this module: they stream their
splits from shards (``kit.stream``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from frugalcv.errors import ConfigError


def digits_arrays(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn digits exactly as the ``digits`` shard kind encodes them, without shards.

    For development and tests only: stages stream shards.
    """
    from sklearn.datasets import load_digits

    from frugalcv.sharding.sources.digits import digit_image

    if split not in ("train", "test"):
        raise ConfigError(f"digits split {split!r}: use 'train' or 'test'")
    digits = load_digits()
    index = [i for i in range(len(digits.images)) if (i % 5 == 0) == (split == "test")]
    images = np.stack([digit_image(digits.images[i]) for i in index])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.as_tensor(digits.target[index], dtype=torch.long)


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
