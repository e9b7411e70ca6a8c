"""Patch pairs for spatial context networks: which boxes of an image pair up, their offset, the stored fields.

A pair (X_i, X_j, o_ij) is two patches of one image and the offset of their boxes,
``o_ij = corners(b_i) - corners(b_j)``, with each box's corners ``(x1,y1),(x2,y1),(x2,y2),(x1,y2)``
flattened and x divided by the image width, y by its height. Boxes are ``(x1, y1, x2, y2)``
pixel edges (0-based; a box's width is ``x2 - x1``). Everything here is a pure function of its
arguments (random boxes of a seed), so shards written from them are reproducible.
"""

from __future__ import annotations

import itertools
import json
import math
import zlib

import numpy as np
from PIL import Image

from ._common import png_bytes

Box = tuple[float, float, float, float]
#: the side patches are resized to when stored (the training stage resizes again to its own input)
DEFAULT_PATCH_SIZE = 64


def corners(box: Box) -> np.ndarray:
    """``[x1, y1, x2, y1, x2, y2, x1, y2]``: top-left, top-right, bottom-right, bottom-left."""
    x1, y1, x2, y2 = box
    return np.array([x1, y1, x2, y1, x2, y2, x1, y2], dtype=np.float64)


def pair_offset(box_a: Box, box_b: Box, width: int, height: int) -> np.ndarray:
    """float32 [8]: ``corners(box_a) - corners(box_b)``, x values / ``width``, y values / ``height``."""
    scale = np.array([width, height] * 4, dtype=np.float64)
    return ((corners(box_a) - corners(box_b)) / scale).astype(np.float32)


def ordered_pairs(n: int, max_pairs: int | None = None) -> list[tuple[int, int]]:
    """Every ordered pair ``(i, j)`` of ``n`` boxes with ``i != j``, in order; over ``max_pairs`` of
    them, ``max_pairs`` spread evenly over that order (so every box still takes part)."""
    total = n * (n - 1)
    if max_pairs is None or total <= max_pairs:
        picks = range(total)
    else:
        picks = [k * total // max_pairs for k in range(max_pairs)]
    out = []
    for t in picks:
        i, r = divmod(t, n - 1)
        out.append((i, r if r < i else r + 1))
    return out


def clip_box(box: Box, width: int, height: int) -> Box:
    """The part of ``box`` inside a ``width`` x ``height`` image (possibly empty)."""
    x1, y1, x2, y2 = box
    return (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))


def big_enough(box: Box, min_size: float) -> bool:
    """Both sides of ``box`` at least ``min_size`` pixels (and more than 0)."""
    w, h = box[2] - box[0], box[3] - box[1]
    return w > 0 and h > 0 and w >= min_size and h >= min_size


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: the same boxes on every run and in every task."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index]))


def random_boxes(width: int, height: int, count: int, size: int, rng: np.random.Generator) -> list[Box]:
    """``count`` boxes of ``size`` x ``size`` pixels (the image's side where it is smaller) at uniformly
    random integer positions inside the image."""
    w, h = min(size, width), min(size, height)
    out = []
    for _ in range(count):
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        out.append((float(x), float(y), float(x + w), float(y + h)))
    return out


def random_pairs(count: int) -> list[tuple[int, int]]:
    """Each unordered pair of ``count`` random boxes once, as ``(i, j)`` with ``i < j`` (5 boxes: 10 pairs)."""
    return list(itertools.combinations(range(count), 2))


def crop_patch(image_HWC: np.ndarray, box: Box, patch_size: int | None) -> np.ndarray:
    """The pixels of ``box`` (clipped to the image, widened to whole pixels, at least 1x1), resized
    bilinearly to ``patch_size`` x ``patch_size`` (aspect not kept); at their own size when None."""
    height, width = image_HWC.shape[:2]
    x1, y1, x2, y2 = clip_box(box, width, height)
    left, top = min(int(math.floor(x1)), width - 1), min(int(math.floor(y1)), height - 1)
    right, bottom = max(int(math.ceil(x2)), left + 1), max(int(math.ceil(y2)), top + 1)
    patch = image_HWC[top:bottom, left:right]
    if patch_size is None:
        return np.ascontiguousarray(patch)
    return np.asarray(Image.fromarray(patch).resize((patch_size, patch_size), Image.Resampling.BILINEAR))


def npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def pair_fields(image_HWC: np.ndarray, image_id: str, box_a: Box, box_b: Box, patch_size: int | None,
                cls_a: int | None = None, cls_b: int | None = None) -> dict[str, bytes]:
    """The stored fields of one pair: ``a.png``, ``b.png``, ``offset.npy``, ``pair.json`` and, when the
    classes are known, ``a.cls`` / ``b.cls``. Boxes are clipped to the image first."""
    height, width = image_HWC.shape[:2]
    box_a, box_b = clip_box(box_a, width, height), clip_box(box_b, width, height)
    fields = {
        "a.png": png_bytes(crop_patch(image_HWC, box_a, patch_size)),
        "b.png": png_bytes(crop_patch(image_HWC, box_b, patch_size)),
        "offset.npy": npy_bytes(pair_offset(box_a, box_b, width, height)),
        "pair.json": json.dumps({"image": image_id, "image_size": [width, height],
                                 "box_a": list(box_a), "box_b": list(box_b)}).encode(),
    }
    if cls_a is not None and cls_b is not None:
        fields["a.cls"], fields["b.cls"] = str(cls_a).encode(), str(cls_b).encode()
    return fields
