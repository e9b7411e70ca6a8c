"""scikit-learn's bundled handwritten digits (``sklearn.datasets.load_digits``): the offline demo data.

1797 images of 8x8 pixels with values 0..16. Each is scaled to uint8 (``round(v * 255 / 16)``),
resized to 32x32 with PIL's bilinear filter (so CIFAR-sized models run on it unchanged),
replicated to 3 channels and written as PNG. Sample ``i`` is in ``test`` when ``i % 5 == 0``,
else in ``train`` (1437 train, 360 test). SRC must be ``sklearn`` or ``-``: the data ships with
scikit-learn. Class names are "0".."9"; keys are ``digits_{i:04d}`` with the global index.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from frugalcv.errors import SourceLayoutError

from ._common import png_bytes
from .base import EncodedSample, Source, register_source

ACCEPTED_SRC = ("sklearn", "-")
IMAGE_SIZE = 32


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images, data.target


def digit_image(values_8x8: np.ndarray) -> np.ndarray:
    """The 32x32x3 uint8 image stored for one 8x8 digit of values 0..16."""
    gray = np.floor(values_8x8 * 255.0 / 16.0 + 0.5).astype(np.uint8)
    big = Image.fromarray(gray).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(big.convert("RGB"))


@register_source
class DigitsSource(Source):
    kind = "digits"
    task = "classification"
    splits = ("train", "test")

    def __init__(self, root: str, split: str = "train"):
        super().__init__(root, split)
        if str(root) not in ACCEPTED_SRC:
            raise SourceLayoutError(
                f"{self.kind}: the source is scikit-learn's bundled copy, so SRC must be 'sklearn' or '-', "
                f"not {root!r}"
            )
        n = len(_digits()[1])
        self.indices = [i for i in range(n) if (i % 5 == 0) == (split == "test")]

    def __len__(self) -> int:
        return len(self.indices)

    def class_names(self) -> list[str]:
        return [str(d) for d in range(10)]

    def schema(self) -> dict[str, str]:
        return {"png": "RGB image, 32x32 (8x8 digit resized bilinearly)", "cls": "digit 0-9"}

    def encode(self, index: int) -> EncodedSample:
        i = self.indices[index]
        images, targets = _digits()
        return EncodedSample(
            f"digits_{i:04d}",
            {"png": png_bytes(digit_image(images[i])), "cls": str(int(targets[i])).encode("ascii")},
        )
