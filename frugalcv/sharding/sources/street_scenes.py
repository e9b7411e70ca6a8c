"""Generated street scenes in two looks: a domain pair for unsupervised domain adaptation demos.

Every sample is a random street layout (``_street_layout``: sky, buildings with windows, road
with lane markings, sidewalks, terrain, trees, poles with signs and traffic lights, walls,
fences, cars, a bus, persons) rendered at 64x128 and labelled with the 19 Cityscapes train ids.
Split ``source`` (600) is the labelled source domain: flat colours, one base colour per
material with a small tint per object and mild noise, like a game render. Splits ``target``
(600, for adaptation: its masks are written but training must use only its images) and ``val``
(120, for evaluation) are the target domain: the same layouts' distribution in another look,
a fixed colour transform of the base colours (desaturation, warm tint, gamma, gain, haze),
textures from random crops of scikit-learn's sample photos (``load_sample_images``) on the
large surfaces, a per-image lighting gradient, noise and blur. The shift is one of colour
statistics and texture, not a shuffle of class colours, so aligning feature statistics between
the domains recovers much of it. SRC must be ``sklearn`` or ``-``. Sample ``i`` of a split is
drawn from a seed of (split, i) alone; keys are ``{split}_{i:04d}``.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
from PIL import Image, ImageFilter

from frugalcv.errors import SourceLayoutError

from ._common import CITYSCAPES_CLASSES, CITYSCAPES_MASK_DOC, png_bytes
from ._street_layout import MATERIAL_CLASS, MATERIALS, M, draw_layout
from .base import EncodedSample, Source, register_source

ACCEPTED_SRC = ("sklearn", "-")
HEIGHT, WIDTH = 64, 128
SPLIT_SIZES = {"source": 600, "target": 600, "val": 120}
SPLIT_DOMAIN = {"source": "source", "target": "target", "val": "target"}
SEED = 0x57EE7

# The source domain's base colour (RGB) of each material.
BASE_COLOURS = {
    "sky": (118, 170, 236), "road": (88, 88, 96), "lane marking": (235, 235, 220),
    "sidewalk": (172, 164, 152), "curb": (205, 200, 190), "building": (160, 118, 92),
    "window": (58, 82, 118), "wall": (196, 184, 150), "fence": (130, 104, 72),
    "pole": (112, 112, 120), "traffic light": (40, 42, 40), "lamp": (240, 70, 40),
    "sign": (235, 200, 30), "crown": (64, 140, 52), "trunk": (96, 68, 42),
    "terrain": (142, 160, 78), "clothes": (60, 60, 170), "skin": (226, 184, 150),
    "car body": (196, 34, 38), "car glass": (60, 84, 110), "wheel": (24, 24, 24),
    "bus body": (236, 170, 30), "bus glass": (70, 96, 120),
}  # fmt: skip
SOURCE_COLOURS = np.array([BASE_COLOURS[name] for name, _ in MATERIALS], dtype=np.float64)

# Target look of the base colours: x -> gain * (tint * mix(saturation) x) ** gamma + haze, in [0, 1].
TARGET_SATURATION, TARGET_TINT = 0.7, np.array([1.12, 0.93, 0.72])
TARGET_GAMMA, TARGET_GAIN, TARGET_HAZE = 1.35, 0.85, 0.07
LUMA = np.array([0.299, 0.587, 0.114])

# Target surfaces that get a photo texture: material -> (which crop, luminance strength, colour blend).
TEXTURED = {
    M["road"]: (0, 0.22, 0.06), M["sidewalk"]: (0, 0.20, 0.08), M["curb"]: (0, 0.1, 0.0),
    M["terrain"]: (2, 0.22, 0.15), M["building"]: (1, 0.28, 0.15), M["wall"]: (1, 0.22, 0.1),
    M["crown"]: (2, 0.30, 0.2), M["trunk"]: (2, 0.2, 0.05), M["sky"]: (1, 0.05, 0.0),
}  # fmt: skip


def target_colours(rgb: np.ndarray) -> np.ndarray:
    """The target domain's colour for each source colour (rows of RGB 0..255)."""
    x = rgb / 255.0
    grey = x @ LUMA
    x = TARGET_SATURATION * x + (1 - TARGET_SATURATION) * grey[:, None]
    x = np.clip(x * TARGET_TINT, 0, 1) ** TARGET_GAMMA
    return 255.0 * np.clip(TARGET_GAIN * x + TARGET_HAZE, 0, 1)


TARGET_COLOURS = target_colours(SOURCE_COLOURS)


def sample_rng(split: str, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of ``split``: the same numbers in any process."""
    return np.random.default_rng(np.random.SeedSequence([SEED, zlib.crc32(split.encode()), index]))


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(np.asarray(image, dtype=np.uint8) for image in load_sample_images().images)


def photo_crop(rng: np.random.Generator) -> np.ndarray:
    """A random crop of a sample photo, resized to the scene: HxWx3 float in 0..1."""
    photo = _photos()[int(rng.integers(len(_photos())))]
    scale = rng.uniform(2.0, 5.0)
    ch, cw = round(HEIGHT * scale), round(WIDTH * scale)
    y, x = int(rng.integers(0, photo.shape[0] - ch + 1)), int(rng.integers(0, photo.shape[1] - cw + 1))
    crop = Image.fromarray(photo[y : y + ch, x : x + cw]).resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)
    return np.asarray(crop, dtype=np.float64) / 255.0


def render_source(material: np.ndarray, objects: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The source look: flat base colours, a small tint per object, mild noise."""
    tint = rng.normal(0, 9, (256, 3))
    image = SOURCE_COLOURS[material] + tint[objects] + rng.normal(0, 3, material.shape + (3,))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_target(material: np.ndarray, objects: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The target look: transformed colours, photo textures, a lighting gradient, noise and blur."""
    tint = rng.normal(0, 9, (256, 3))
    image = TARGET_COLOURS[material] + tint[objects]
    crops = [photo_crop(rng) for _ in range(3)]
    for m, (which, strength, blend) in TEXTURED.items():
        where = material == m
        if not where.any():
            continue
        crop = crops[which]
        luma = crop @ LUMA
        detail = (luma - luma.mean()) / (luma.std() + 1e-6)
        surface = image[where] * (1 + strength * np.clip(detail[where], -2.5, 2.5))[:, None]
        image[where] = (1 - blend) * surface + blend * 255.0 * crop[where]
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * (xs / WIDTH - 0.5) + np.sin(angle) * (ys / HEIGHT - 0.5)
    light = rng.uniform(0.85, 1.1) * (1 + rng.uniform(0.3, 0.6) * ramp)
    image = image * light[..., None] + rng.normal(0, 6, image.shape)
    out = Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8))
    return np.asarray(out.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 0.8))))


def street_scene(split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(HxWx3 uint8 image, HxW uint8 train ids) of sample ``index`` of ``split``."""
    rng = sample_rng(split, index)
    material, objects = draw_layout(rng, HEIGHT, WIDTH)
    render = render_source if SPLIT_DOMAIN[split] == "source" else render_target
    return render(material, objects, rng), MATERIAL_CLASS[material]


@register_source
class StreetScenesSource(Source):
    kind = "street-scenes"
    task = "segmentation"
    splits = ("source", "target", "val")

    def __init__(self, root: str, split: str = "source"):
        super().__init__(root, split)
        if str(root) not in ACCEPTED_SRC:
            raise SourceLayoutError(
                f"{self.kind}: the scenes are generated (textures from scikit-learn's sample images), "
                f"so SRC must be 'sklearn' or '-', not {root!r}"
            )

    def __len__(self) -> int:
        return SPLIT_SIZES[self.split]

    def class_names(self) -> list[str]:
        return list(CITYSCAPES_CLASSES)

    def schema(self) -> dict[str, str]:
        return {
            "png": f"RGB image, {HEIGHT}x{WIDTH} (generated street scene)",
            "mask.png": CITYSCAPES_MASK_DOC,
        }

    def encode(self, index: int) -> EncodedSample:
        image, mask = street_scene(self.split, index)
        return EncodedSample(
            f"{self.split}_{index:04d}", {"png": png_bytes(image), "mask.png": png_bytes(mask)}
        )

    def extra_manifest(self) -> dict:
        return {"domain": SPLIT_DOMAIN[self.split], "image_size": [HEIGHT, WIDTH]}
