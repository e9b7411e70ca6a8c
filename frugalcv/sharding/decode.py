"""Decode WebDataset fields into numpy samples.

classification: {"key", "image": HxWx3 uint8 RGB, "label": int} (or "labels": [C] uint8 multi-hot)
segmentation:   {"key", "image": HxWx3 uint8 RGB, "mask": HxW uint8 train ids (255 = ignore)}
video_features: {"key", "features": TxD float32, "label": int, "coarse": TxD' float32 (when present)}
video_frames:   {"key", "frames": TxHxWx3 uint8 RGB, "label": int, "informative": T uint8 0/1 marks}
patch_pairs:    {"key", "a": HxWx3 uint8 (X_i), "b": HxWx3 uint8 (X_j), "offset": float32 [8],
                 "a_label" / "b_label": int (when known), "pair": dict (pair.json)}
"""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from frugalcv.errors import ShardError

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


#: JPEG start-of-frame markers (they carry the image's height and width)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header, or None when the markers do not parse."""
    i, n = 2, len(data)
    while i + 9 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF:
            return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _decode_jpeg(data: bytes) -> np.ndarray | None:
    """A JPEG decoded by torchvision's libjpeg-turbo (cheaper per image than PIL), as an HxWx3 view;
    None where the header does not parse, the image is larger than PIL's decompression-bomb limit
    or torchvision fails: PIL then decodes it (and names what is wrong)."""
    size = jpeg_size(data)
    limit = Image.MAX_IMAGE_PIXELS
    if size is None or 0 in size or (limit is not None and size[0] * size[1] > limit):
        return None
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None
    try:
        chw = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        return None
    return chw.permute(1, 2, 0).numpy()


def decode_image(data: bytes) -> np.ndarray:
    if data[:2] == b"\xff\xd8":
        image = _decode_jpeg(data)
        if image is not None:
            return image
    with Image.open(io.BytesIO(data)) as img:
        if img.mode != "RGB":
            img = img.convert("RGB")
        return np.array(img)


def decode_mask(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        if img.mode != "L":
            raise ValueError(f"mask PNG has mode {img.mode}, expected L (8-bit train ids)")
        return np.array(img)


def decode_array(
    data: bytes, *, dtype: type, ndim: int, channels: int | None = None, expected: str
) -> np.ndarray:
    """A ``.npy`` member (no pickle), refused unless it has ``dtype``, ``ndim`` and ``channels`` last."""
    array = np.load(io.BytesIO(data), allow_pickle=False)
    if array.dtype != dtype or array.ndim != ndim or (channels is not None and array.shape[-1] != channels):
        raise ValueError(f"holds a {array.dtype} array of shape {list(array.shape)}; expected {expected}")
    return array


def decode_informative(data: bytes) -> np.ndarray:
    """Per frame, 1 where it shows the class and 0 where it does not."""
    marks = decode_array(data, dtype=np.uint8, ndim=1, expected="uint8 [T] 0/1 marks")
    if marks.size and marks.max() > 1:
        raise ValueError(f"holds marks up to {marks.max()}; expected 0 or 1 per frame")
    return marks


#: patch-pair members (the patch-pair record format) -> the decoded sample's key
PAIR_IMAGES = {"a.png": "a", "b.png": "b"}
PAIR_LABELS = {"a.cls": "a_label", "b.cls": "b_label"}


def decode_offset(data: bytes) -> np.ndarray:
    """o_ij: the four box corners' differences, float32 [8] (x over the image width, y over its height)."""
    offset = decode_array(data, dtype=np.float32, ndim=1, expected="float32 [8] corner offsets")
    if offset.shape != (8,) or not np.isfinite(offset).all():
        raise ValueError(f"holds {list(offset.shape)} values (finite: {bool(np.isfinite(offset).all())}); "
                         "expected 8 finite corner offsets")
    return offset


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
                out["features"] = decode_array(data, dtype=np.float32, ndim=2, expected="float32 [T, D] features")
            elif ext == "coarse.npy":
                out["coarse"] = decode_array(data, dtype=np.float32, ndim=2, expected="float32 [T, D] features")
            elif ext == "frames.npy":
                out["frames"] = decode_array(
                    data, dtype=np.uint8, ndim=4, channels=3, expected="uint8 [T, H, W, 3] RGB frames"
                )
            elif ext == "informative.npy":
                out["informative"] = decode_informative(data)
            elif ext == "labels.npy":
                out["labels"] = decode_array(data, dtype=np.uint8, ndim=1, expected="uint8 [C] multi-hot labels")
            elif ext in PAIR_IMAGES:
                out[PAIR_IMAGES[ext]] = decode_image(data)
            elif ext in PAIR_LABELS:
                out[PAIR_LABELS[ext]] = int(data)
            elif ext == "offset.npy":
                out["offset"] = decode_offset(data)
            elif ext == "pair.json":
                out["pair"] = json.loads(data)
            else:
                out[ext] = data
        except Exception as e:
            raise ShardError(f"{url}: member {key}.{ext} failed to decode: {type(e).__name__}: {e}") from e
    per_frame = "frames" if "frames" in out else "features"
    for name, unit in (("informative", "marks"), ("coarse", "rows")):
        if name in out and per_frame in out and len(out[name]) != len(out[per_frame]):
            raise ShardError(
                f"{url}: member {key}.{name}.npy has {len(out[name])} {unit} for "
                f"{len(out[per_frame])} frames in {key}.{per_frame}.npy; expected one per frame"
            )
    return out
