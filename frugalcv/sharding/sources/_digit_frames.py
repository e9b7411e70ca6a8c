"""Frames for the ``video-digits`` kind: a video's look, digits painted on it, and the clutter.

Everything is drawn as float RGB in 0..255 on a ``FRAME`` x ``FRAME`` canvas: a shape is an alpha
map (0..1) painted in a colour, so a contrast below 1 blends the shape into the background.
Digits are scikit-learn's 8x8 digits (values 0..16) resized bilinearly, as in the ``digits`` kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

FRAME = 32
#: the side of the coarse view (FRAME / 4 average-pooled)
COARSE = 8

#: (size in pixels, contrast) ranges of a strong (readable at any resolution) and a weak digit: a
#: weak one is small and faint, so 8x8 pooling keeps a blob where it is but not its shape.
STRONG_SIZE, STRONG_CONTRAST = (22, 32), (0.65, 1.0)
WEAK_SIZE, WEAK_CONTRAST = (10, 13), (0.3, 0.5)
CLUTTER_KINDS = ("blank", "noise", "strokes", "fragment", "blob")
CLUTTER_P = (0.25, 0.2, 0.2, 0.15, 0.2)


@dataclass(frozen=True)
class VideoLook:
    """What every frame of one video shares: background, ink colour, noise and a moving blob."""

    background: np.ndarray  # FRAME x FRAME x 3 float
    ink: np.ndarray  # 3 floats
    noise: float
    blob_start: np.ndarray  # (y, x)
    blob_velocity: np.ndarray  # pixels per frame
    blob_sigma: float
    blob_colour: np.ndarray


def video_look(rng: np.random.Generator) -> VideoLook:
    """A dark background with a tint and a lighting ramp, a bright ink, a blob's trajectory."""
    base = rng.uniform(25, 80) + rng.normal(0, 8, 3)
    ys, xs = np.mgrid[0:FRAME, 0:FRAME] / (FRAME - 1) - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    ramp = rng.uniform(0, 24) * (np.cos(angle) * xs + np.sin(angle) * ys)
    heading = rng.uniform(0, 2 * np.pi)
    return VideoLook(
        background=base + ramp[..., None],
        ink=np.clip(rng.uniform(205, 250) + rng.normal(0, 12, 3), 170, 255),
        noise=rng.uniform(4, 10),
        blob_start=rng.uniform(4, FRAME - 4, 2),
        blob_velocity=rng.uniform(0.8, 2.0) * np.array([np.sin(heading), np.cos(heading)]),
        blob_sigma=rng.uniform(2.5, 5.0),
        blob_colour=rng.uniform(60, 255, 3),
    )


def paint(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """``canvas`` with ``colour`` blended in where ``alpha`` (HxW, 0..1) says."""
    a = alpha[..., None]
    return canvas * (1 - a) + colour * a


def digit_alpha(values_8x8: np.ndarray, size: int) -> np.ndarray:
    """An 8x8 digit (0..16) as a ``size`` x ``size`` alpha map, resized bilinearly."""
    image = Image.fromarray((values_8x8 / 16.0).astype(np.float32), mode="F")
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64).clip(0, 1)


def place(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A FRAME x FRAME alpha map with ``alpha`` at a random position inside it."""
    h, w = alpha.shape
    y, x = int(rng.integers(0, FRAME - h + 1)), int(rng.integers(0, FRAME - w + 1))
    out = np.zeros((FRAME, FRAME))
    out[y : y + h, x : x + w] = alpha
    return out


def finish(
    canvas: np.ndarray, look: VideoLook, rng: np.random.Generator, extra_noise: float = 0.0
) -> np.ndarray:
    """The frame as uint8: a per-frame brightness flicker and pixel noise added."""
    noisy = canvas + rng.normal(0, 4) + rng.normal(0, look.noise + extra_noise, canvas.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def digit_frame(values_8x8: np.ndarray, weak: bool, look: VideoLook, rng: np.random.Generator) -> np.ndarray:
    """An informative frame: the digit, jittered in size, position, contrast and noise."""
    (lo, hi), (clo, chi) = (WEAK_SIZE, WEAK_CONTRAST) if weak else (STRONG_SIZE, STRONG_CONTRAST)
    alpha = place(digit_alpha(values_8x8, int(rng.integers(lo, hi + 1))), rng) * rng.uniform(clo, chi)
    return finish(paint(look.background, alpha, look.ink), look, rng, extra_noise=rng.uniform(0, 6))


def strokes_alpha(rng: np.random.Generator) -> np.ndarray:
    """One to three random lines or arcs, 2-3 pixels wide."""
    image = Image.new("L", (FRAME, FRAME))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):
        points = [tuple(float(v) for v in rng.uniform(0, FRAME, 2)) for _ in range(2)]
        width = int(rng.integers(2, 4))
        if rng.random() < 0.5:
            draw.line(points, fill=255, width=width)
        else:
            (x0, y0), (x1, y1) = points
            box = (min(x0, x1), min(y0, y1), max(x0, x1) + 4, max(y0, y1) + 4)
            start = float(rng.uniform(0, 360))
            draw.arc(box, start, start + float(rng.uniform(90, 240)), fill=255, width=width)
    return np.asarray(image, dtype=np.float64) / 255.0


def fragment_alpha(values_8x8: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A part of a full-size digit (a third to a half of it, from one side), at a random position."""
    size = int(rng.integers(STRONG_SIZE[0], STRONG_SIZE[1] + 1))
    alpha = digit_alpha(values_8x8, size)
    cut = int(rng.integers(size // 3, size // 2 + 1))
    part = (alpha[:cut], alpha[-cut:], alpha[:, :cut], alpha[:, -cut:])[int(rng.integers(4))]
    return place(part, rng)


def blob_alpha(look: VideoLook, t: int) -> np.ndarray:
    """The video's Gaussian blob at frame ``t``: it moves in a line, reflected at the borders."""
    span = FRAME - 1
    y, x = np.abs((look.blob_start + t * look.blob_velocity + span) % (2 * span) - span)
    ys, xs = np.mgrid[0:FRAME, 0:FRAME]
    return np.exp(-((ys - y) ** 2 + (xs - x) ** 2) / (2 * look.blob_sigma**2))


def clutter_frame(
    kind: str, t: int, other_digit: np.ndarray, look: VideoLook, rng: np.random.Generator
) -> np.ndarray:
    """A frame that does not show the class: ``kind`` is one of ``CLUTTER_KINDS``."""
    canvas = look.background
    if kind == "noise":  # fine and coarse noise, strong enough to hide any shape
        coarse = np.kron(rng.normal(0, rng.uniform(10, 25), (COARSE, COARSE, 3)), np.ones((4, 4, 1)))
        return finish(canvas + coarse, look, rng, extra_noise=rng.uniform(20, 40))
    if kind == "strokes":
        canvas = paint(canvas, strokes_alpha(rng) * rng.uniform(0.4, 1.0), look.ink)
    elif kind == "fragment":
        canvas = paint(canvas, fragment_alpha(other_digit, rng) * rng.uniform(0.5, 1.0), look.ink)
    elif kind == "blob":
        canvas = paint(canvas, blob_alpha(look, t) * rng.uniform(0.5, 0.9), look.blob_colour)
    return finish(canvas, look, rng)
