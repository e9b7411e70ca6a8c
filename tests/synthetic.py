"""A tiny in-test dataset source: deterministic random 8x8 RGB images with labels."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from frugalcv.sharding.sources.base import SOURCES, EncodedSample, Source, register_source


def synthetic_image(i: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)


class SyntheticSource(Source):
    kind = "synthetic-test"
    task = "classification"
    splits = ("train", "test")

    def __init__(self, root: str, split: str):
        super().__init__(root, split)
        self.n = int(root) if str(root).isdigit() else 50

    def __len__(self):
        return self.n

    def class_names(self):
        return [f"c{i}" for i in range(7)]

    def schema(self):
        return {"png": "RGB image", "cls": "class index"}

    def encode(self, index):
        buf = io.BytesIO()
        Image.fromarray(synthetic_image(index)).save(buf, format="PNG")
        return EncodedSample(f"s{index:05d}", {"png": buf.getvalue(), "cls": str(index % 7).encode()})


if SyntheticSource.kind not in SOURCES:
    register_source(SyntheticSource)
