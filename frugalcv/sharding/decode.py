"""Decode WebDataset fields into numpy samples.

classification: {"key", "image": HxWx3 uint8 RGB, "label": int}
segmentation:   {"key", "image": HxWx3 uint8 RGB, "mask": HxW uint8 train ids (255 = ignore)}
video_features: {"key", "features": TxD float32, "label": int}
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from frugalcv.errors import ShardError

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


def decode_image(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        if img.mode != "RGB":
            img = img.convert("RGB")
        return np.array(img)


def decode_mask(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        if img.mode != "L":
            raise ValueError(f"mask PNG has mode {img.mode}, expected L (8-bit train ids)")
        return np.array(img)


def decode_sample(key: str, fields: dict[str, bytes], url: str = "?") -> dict:
    """Decode one sample; any failure raises ShardError naming the shard and member."""
    out: dict = {"key": key}
    for ext, data in fields.items():
        try:
            if ext in IMAGE_EXTS:
                out["image"] = decode_image(data)
            elif ext == "cls":
                out["label"] = int(data)
            elif ext == "mask.png":
                out["mask"] = decode_mask(data)
            elif ext == "features.npy":
                out["features"] = np.load(io.BytesIO(data), allow_pickle=False)
            else:
                out[ext] = data
        except Exception as e:
            raise ShardError(f"{url}: member {key}.{ext} failed to decode: {type(e).__name__}: {e}") from e
    return out
