"""Generated shapes for spatial context networks (dissertation Sec. 5.4.1): patch pairs whose
partner is decided by the offset alone.

Every sample is one 128x128 image on a noisy grey background holding a circle and one partner
patch, written as a patch pair (``patch_pairs``: X_j = the circle, X_i = the partner):

* ``square`` (300 pairs): offset horizontally, vertical difference <= 30 px (horizontal >= 40);
* ``triangle`` (300): offset vertically, horizontal difference <= 30 px (vertical >= 40);
* ``black`` (200): a black patch at a random offset outside both bands (both differences >= 40),
  so that the offset still tells the three kinds apart.

Shapes fill 32x32 boxes at a random scale (0.9..1) and grey level, with pixel noise, so that
the patches of one class differ a little. The 800 pairs are dealt to ``train`` (600) and ``test``
(200) by a fixed permutation; sample ``i`` of a split is drawn from a seed of (split, i) alone;
keys are ``{split}_{i:06d}_00``. SRC must be ``-``.
"""

from __future__ import annotations

import io
import json
import zlib

import numpy as np
from PIL import Image, ImageDraw

from frugalcv.errors import SourceLayoutError

from ._common import png_bytes
from .base import EncodedSample, Source, register_source

ACCEPTED_SRC = ("-",)
IMAGE_SIZE = 128
PATCH = 32
CLASSES = ("circle", "square", "triangle", "black")
PAIR_COUNTS = {"square": 300, "triangle": 300, "black": 200}
SPLIT_SIZES = {"train": 600, "test": 200}
BAND = 30  # the largest cross-axis difference of an aligned pair, px
GAP = 40  # the smallest along-axis difference (boxes of 32 px never overlap; a margin over BAND)
SEED = 0x5C4


def pair_kinds() -> dict[str, list[str]]:
    """The partner kind of every sample of each split (the fixed deal of the 800 pairs)."""
    kinds = [k for k, n in PAIR_COUNTS.items() for _ in range(n)]
    order = np.random.default_rng(SEED).permutation(len(kinds))
    dealt = [kinds[i] for i in order]
    return {"train": dealt[:SPLIT_SIZES["train"]], "test": dealt[SPLIT_SIZES["train"]:]}


_KINDS = pair_kinds()


def sample_rng(split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([SEED, zlib.crc32(split.encode()), index]))


def _partner_box(kind: str, circle: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
    """(x1, y1) of the partner's box: rejection sampling inside the image until ``kind``'s rule holds."""
    cx, cy = circle
    hi = IMAGE_SIZE - PATCH
    while True:
        x, y = int(rng.integers(0, hi + 1)), int(rng.integers(0, hi + 1))
        dx, dy = abs(x - cx), abs(y - cy)
        if kind == "square" and dy <= BAND and dx >= GAP:
            return x, y
        if kind == "triangle" and dx <= BAND and dy >= GAP:
            return x, y
        if kind == "black" and dx >= GAP and dy >= GAP:
            return x, y


def _shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int], rng: np.random.Generator) -> None:
    x, y = box
    scale = rng.uniform(0.9, 1.0)
    pad = (1 - scale) * PATCH / 2
    x1, y1, x2, y2 = x + pad, y + pad, x + PATCH - 1 - pad, y + PATCH - 1 - pad
    if shape == "black":
        draw.rectangle((x, y, x + PATCH - 1, y + PATCH - 1), fill=(0, 0, 0))
        return
    grey = int(rng.integers(230, 256))
    fill = (grey, grey, grey)
    if shape == "circle":
        draw.ellipse((x1, y1, x2, y2), fill=fill)
    elif shape == "square":
        draw.rectangle((x1, y1, x2, y2), fill=fill)
    else:
        draw.polygon(((x1 + x2) / 2, y1, x2, y2, x1, y2), fill=fill)


def shapes_pair(split: str, index: int) -> dict:
    """Sample ``index`` of ``split``: the image, both boxes (pixels, x1 y1 x2 y2) and the partner kind."""
    kind = _KINDS[split][index]
    rng = sample_rng(split, index)
    circle = (int(rng.integers(0, IMAGE_SIZE - PATCH + 1)), int(rng.integers(0, IMAGE_SIZE - PATCH + 1)))
    partner = _partner_box(kind, circle, rng)
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (110, 110, 110))
    draw = ImageDraw.Draw(image)
    _shape(draw, "circle", circle, rng)
    _shape(draw, kind, partner, rng)
    pixels = np.asarray(image, dtype=np.float64) + rng.normal(0, 4, (IMAGE_SIZE, IMAGE_SIZE, 3))
    pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    box = lambda xy: [xy[0], xy[1], xy[0] + PATCH, xy[1] + PATCH]  # noqa: E731
    return {"image": pixels, "kind": kind, "box_a": box(partner), "box_b": box(circle)}


def corners(box: list[int]) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.array([x1, y1, x2, y1, x2, y2, x1, y2], dtype=np.float64)


def offset(box_a: list[int], box_b: list[int], width: int, height: int) -> np.ndarray:
    """o = corners(box_a) - corners(box_b), x over the width, y over the height, float32 [8]."""
    return ((corners(box_a) - corners(box_b)) / np.array([width, height] * 4)).astype(np.float32)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


@register_source
class SCNShapesSource(Source):
    kind = "scn-shapes"
    task = "patch_pairs"
    splits = ("train", "test")

    def __init__(self, root: str, split: str = "train"):
        super().__init__(root, split)
        if str(root) not in ACCEPTED_SRC:
            raise SourceLayoutError(f"{self.kind}: the shapes are generated, so SRC must be '-', not {root!r}")

    def __len__(self) -> int:
        return SPLIT_SIZES[self.split]

    def class_names(self) -> list[str]:
        return list(CLASSES)

    def schema(self) -> dict[str, str]:
        return {
            "a.png": f"RGB patch X_i, {PATCH}x{PATCH} (the partner: square, triangle or black)",
            "b.png": f"RGB patch X_j, {PATCH}x{PATCH} (the circle)",
            "offset.npy": "float32 [8]: corners(box_a) - corners(box_b), x / width, y / height",
            "a.cls": "class of X_i (0 circle, 1 square, 2 triangle, 3 black)",
            "b.cls": "class of X_j",
            "pair.json": "image id, image_size [W, H], box_a, box_b (pixels)",
        }

    def encode(self, index: int) -> EncodedSample:
        pair = shapes_pair(self.split, index)
        image, (ax, ay, _, _), (bx, by, _, _) = pair["image"], pair["box_a"], pair["box_b"]
        meta = {"image": f"{self.split}_{index:06d}", "image_size": [IMAGE_SIZE, IMAGE_SIZE],
                "box_a": pair["box_a"], "box_b": pair["box_b"]}
        return EncodedSample(f"{self.split}_{index:06d}_00", {
            "a.png": png_bytes(image[ay:ay + PATCH, ax:ax + PATCH]),
            "b.png": png_bytes(image[by:by + PATCH, bx:bx + PATCH]),
            "offset.npy": _npy(offset(pair["box_a"], pair["box_b"], IMAGE_SIZE, IMAGE_SIZE)),
            "a.cls": str(CLASSES.index(pair["kind"])).encode("ascii"),
            "b.cls": str(CLASSES.index("circle")).encode("ascii"),
            "pair.json": json.dumps(meta, sort_keys=True).encode(),
        })

    def extra_manifest(self) -> dict:
        return {"image_size": [IMAGE_SIZE, IMAGE_SIZE], "patch_size": [PATCH, PATCH],
                "pairs": {k: _KINDS[self.split].count(k) for k in PAIR_COUNTS}}
