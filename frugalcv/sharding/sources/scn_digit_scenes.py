"""Digits composed into scenes, for spatial context networks: patch pairs whose classes are tied
by where the two patches sit.

A scene is a 96x96 RGB canvas of 3x3 cells of 32 px, one of scikit-learn's digits
(``load_digits``, 8x8, values 0..16) in each cell. The **rule**: the digit to the right of a
``d`` is ``(d + 1) % 10`` and the one below it ``(d + 3) % 10``, so cell (row r, column c) holds
``(d0 + c + 3 r) % 10`` for the scene's top-left class ``d0``. Knowing a patch's digit and the
offset to its neighbour tells the neighbour's digit.

Each digit is upscaled to 22..28 px at a random spot of its cell, with a tinted ink (at a contrast
of 0.6..1 per digit) on a tinted background with a lighting ramp, 0..2 random strokes across the
scene, and pixel noise of std 3..10. A pair is two 4-neighbour cells (X_j, the bottom stream's,
and X_i, the one predicted): each patch is a square crop of 26..30 px around its digit, off-centre
by up to 2 px (so it also catches the edges of its neighbours), stored at 32x32. ``a.cls`` /
``b.cls`` are the digits' classes; ``pair.json`` adds ``digits``: the ``load_digits`` indices of
the two digits.

Source digits: only the 360 that kind ``digits`` keeps for its ``test`` split (``i % 5 == 0``,
never seen as labels by a backbone pretrained on its ``train``), each class's dealt alternately
to ``train`` scenes (even positions, 181 digits) and ``test`` scenes (odd positions, 179), so the
two splits share no digit image. ``train``: 300 scenes, ``test``: 100; 4 pairs a scene, drawn
without repetition from the scene's 24 ordered neighbour pairs; scene ``s`` of a split is drawn
from a seed of (split, s) alone. Keys are ``{split}_{scene:06d}_{pair:02d}``. SRC: ``-`` or
``sklearn``.
"""

from __future__ import annotations

import functools
import json
import zlib

import numpy as np
from PIL import Image, ImageDraw

from frugalcv.errors import SourceLayoutError

from ._digit_frames import digit_alpha, paint
from .base import EncodedSample, Source, register_source
from .patch_pairs import Box, pair_fields

ACCEPTED_SRC = ("-", "sklearn")
NUM_CLASSES = 10
GRID = 3
CELL = 32
IMAGE_SIZE = GRID * CELL
PATCH = 32  # stored patch side
#: the rule: the class one cell to the right (+ RIGHT) and one cell below (+ BELOW), modulo 10
RIGHT, BELOW = 1, 3
DIGIT_SIZE = (22, 28)  # side of an upscaled digit, px
CROP_SIZE = (26, 30)  # side of a patch's crop, px
CROP_JITTER = 2  # largest shift of a crop's centre from its digit's centre, px
STROKES = (0, 2)  # random strokes across a scene
NOISE = (3.0, 10.0)  # std of the pixel noise
PAIRS_PER_SCENE = 4
SCENES = {"train": 300, "test": 100}
#: the digits kind's test split: digit i with i % 5 == 0 (no backbone pretrained on its train saw it)
UNSEEN_EVERY = 5
SPLIT_SLOT = {"train": 0, "test": 1}  # a class's unseen digits alternate: even positions train, odd test
SEED = 0xD5CE


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images, data.target


@functools.lru_cache(maxsize=4)
def source_digits(split: str) -> tuple[np.ndarray, ...]:
    """Per class, the ``load_digits`` indices ``split``'s scenes draw from (disjoint across splits)."""
    targets = _digits()[1]
    unseen = np.arange(len(targets))[np.arange(len(targets)) % UNSEEN_EVERY == 0]
    return tuple(unseen[targets[unseen] == c][SPLIT_SLOT[split]::2] for c in range(NUM_CLASSES))


def cell_class(first: int, row: int, col: int) -> int:
    """The rule: ``(first + RIGHT * col + BELOW * row) % 10``."""
    return (first + RIGHT * col + BELOW * row) % NUM_CLASSES


def neighbour_pairs() -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Every ordered pair of 4-neighbour cells ``((row, col) of X_i, (row, col) of X_j)``: 24 on 3x3."""
    cells = [(r, c) for r in range(GRID) for c in range(GRID)]
    return [(a, b) for a in cells for b in cells if abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1]


def _rng(*path: int | str) -> np.random.Generator:
    words = [zlib.crc32(p.encode()) if isinstance(p, str) else p for p in path]
    return np.random.default_rng(np.random.SeedSequence([SEED, *words]))


def _background(rng: np.random.Generator) -> np.ndarray:
    """A dark tinted background with a linear lighting ramp, float HxWx3."""
    base = rng.uniform(20, 90) + rng.normal(0, 12, 3)
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / (IMAGE_SIZE - 1) - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    ramp = rng.uniform(0, 40) * (np.cos(angle) * xs + np.sin(angle) * ys)
    return base + ramp[..., None]


def _strokes(rng: np.random.Generator) -> np.ndarray:
    image = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(STROKES[0], STROKES[1] + 1))):
        points = [tuple(float(v) for v in rng.uniform(0, IMAGE_SIZE, 2)) for _ in range(2)]
        draw.line(points, fill=int(rng.integers(90, 256)), width=int(rng.integers(1, 4)))
    return np.asarray(image, dtype=np.float64) / 255.0


@functools.lru_cache(maxsize=8)
def scene(split: str, index: int) -> dict:
    """Scene ``index`` of ``split``: ``image`` (HxWx3 uint8), per cell (row-major) its ``classes``,
    ``digits`` (``load_digits`` indices) and ``centres`` ((x, y) of its digit, px)."""
    rng = _rng(split, index)
    images, _ = _digits()
    pools = source_digits(split)
    first = int(rng.integers(NUM_CLASSES))
    canvas = _background(rng)
    ink = np.clip(rng.uniform(170, 255) + rng.normal(0, 25, 3), 110, 255)
    classes, digits, centres = [], [], []
    for row in range(GRID):
        for col in range(GRID):
            cls = cell_class(first, row, col)
            digit = int(rng.choice(pools[cls]))
            size = int(rng.integers(DIGIT_SIZE[0], DIGIT_SIZE[1] + 1))
            x = col * CELL + int(rng.integers(0, CELL - size + 1))
            y = row * CELL + int(rng.integers(0, CELL - size + 1))
            alpha = np.zeros((IMAGE_SIZE, IMAGE_SIZE))
            alpha[y:y + size, x:x + size] = digit_alpha(images[digit], size) * rng.uniform(0.6, 1.0)
            canvas = paint(canvas, alpha, ink)
            classes.append(cls)
            digits.append(digit)
            centres.append((x + size / 2, y + size / 2))
    canvas = paint(canvas, _strokes(rng) * rng.uniform(0.4, 0.9), np.clip(ink + rng.normal(0, 30, 3), 0, 255))
    noisy = canvas + rng.normal(0, rng.uniform(*NOISE), canvas.shape)
    return {"image": np.clip(np.rint(noisy), 0, 255).astype(np.uint8), "classes": classes, "digits": digits,
            "centres": centres}


def crop_box(centre: tuple[float, float], rng: np.random.Generator) -> Box:
    """A square crop of CROP_SIZE around ``centre``, shifted by up to CROP_JITTER, inside the scene."""
    side = int(rng.integers(CROP_SIZE[0], CROP_SIZE[1] + 1))
    cx, cy = (c + int(rng.integers(-CROP_JITTER, CROP_JITTER + 1)) for c in centre)
    x = int(np.clip(round(cx - side / 2), 0, IMAGE_SIZE - side))
    y = int(np.clip(round(cy - side / 2), 0, IMAGE_SIZE - side))
    return (float(x), float(y), float(x + side), float(y + side))


def scene_pairs(split: str, index: int) -> list[dict]:
    """The PAIRS_PER_SCENE pairs of scene ``index``: cells (``cell_a``, ``cell_b``, row-major), boxes."""
    rng = _rng(split, index, "pairs")
    every = neighbour_pairs()
    picks = rng.choice(len(every), PAIRS_PER_SCENE, replace=False)
    centres = scene(split, index)["centres"]
    out = []
    for (ra, ca), (rb, cb) in (every[int(k)] for k in picks):
        a, b = ra * GRID + ca, rb * GRID + cb
        out.append({"cell_a": a, "cell_b": b, "box_a": crop_box(centres[a], rng),
                    "box_b": crop_box(centres[b], rng)})
    return out


@register_source
class SCNDigitScenesSource(Source):
    kind = "scn-digit-scenes"
    task = "patch_pairs"
    splits = ("train", "test")

    def __init__(self, root: str, split: str = "train"):
        super().__init__(root, split)
        if str(root) not in ACCEPTED_SRC:
            raise SourceLayoutError(f"{self.kind}: the scenes are generated from scikit-learn's digits, so SRC "
                                    f"must be '-' or 'sklearn', not {root!r}")

    def __len__(self) -> int:
        return SCENES[self.split] * PAIRS_PER_SCENE

    def class_names(self) -> list[str]:
        return [str(d) for d in range(NUM_CLASSES)]

    def schema(self) -> dict[str, str]:
        return {
            "a.png": f"RGB patch X_i (a digit's crop), {PATCH}x{PATCH}",
            "b.png": f"RGB patch X_j (a 4-neighbour digit's crop), {PATCH}x{PATCH}",
            "offset.npy": "float32 [8]: corners(box_a) - corners(box_b), x / width, y / height",
            "a.cls": "digit of X_i (0-9)",
            "b.cls": "digit of X_j (0-9); right of d: (d+1)%10, below d: (d+3)%10",
            "pair.json": "image id, image_size [W, H], box_a, box_b (pixels), digits (load_digits indices)",
        }

    def encode(self, index: int) -> EncodedSample:
        number, slot = divmod(index, PAIRS_PER_SCENE)
        drawn = scene(self.split, number)
        pair = scene_pairs(self.split, number)[slot]
        a, b = pair["cell_a"], pair["cell_b"]
        image_id = f"{self.split}_{number:06d}"
        fields = pair_fields(drawn["image"], image_id, pair["box_a"], pair["box_b"], PATCH,
                             drawn["classes"][a], drawn["classes"][b])
        meta = json.loads(fields["pair.json"])
        meta["digits"] = [drawn["digits"][a], drawn["digits"][b]]
        fields["pair.json"] = json.dumps(meta, sort_keys=True).encode()
        return EncodedSample(f"{image_id}_{slot:02d}", fields)

    def extra_manifest(self) -> dict:
        return {"image_size": [IMAGE_SIZE, IMAGE_SIZE], "patch_size": [PATCH, PATCH], "scenes": SCENES[self.split],
                "pairs_per_scene": PAIRS_PER_SCENE, "rule": {"right": RIGHT, "below": BELOW}}
