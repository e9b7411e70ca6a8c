"""Random street layouts for the ``street-scenes`` kind: a material per pixel, each material of one class.

Materials separate what looks different (a window, a wheel, a lane marking) from what it is
labelled (building, car, road). A pixel's label is its material's class, so the mask's class
boundaries are exactly the drawn shapes. The geometry is a one-point perspective: a horizon
row and a vanishing point, the road and the sidewalks as wedges that widen towards the bottom,
and objects sized by how far below the horizon they stand (``depth`` t: 0 at the horizon,
1 at the bottom row), drawn far to near.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# (material, Cityscapes train id): road 0, sidewalk 1, building 2, wall 3, fence 4, pole 5,
# traffic light 6, traffic sign 7, vegetation 8, terrain 9, sky 10, person 11, car 13, bus 15.
MATERIALS = (
    ("sky", 10), ("road", 0), ("lane marking", 0), ("sidewalk", 1), ("curb", 1),
    ("building", 2), ("window", 2), ("wall", 3), ("fence", 4), ("pole", 5),
    ("traffic light", 6), ("lamp", 6), ("sign", 7), ("crown", 8), ("trunk", 8),
    ("terrain", 9), ("clothes", 11), ("skin", 11), ("car body", 13), ("car glass", 13),
    ("wheel", 13), ("bus body", 15), ("bus glass", 15),
)  # fmt: skip
M = {name: i for i, (name, _) in enumerate(MATERIALS)}
MATERIAL_CLASS = np.array([train_id for _, train_id in MATERIALS], dtype=np.uint8)


class Canvas:
    """Two label images drawn in step: the material of each pixel and the object it belongs to."""

    def __init__(self, height: int, width: int):
        self.material = Image.new("L", (width, height), M["sky"])
        self.objects = Image.new("L", (width, height), 0)
        self._material, self._objects = ImageDraw.Draw(self.material), ImageDraw.Draw(self.objects)
        self.count = 0

    def new_object(self) -> int:
        """A fresh object id (1..255; later objects share 255), so that each object gets its own tint."""
        self.count = min(self.count + 1, 255)
        return self.count

    def polygon(self, points, material: str, obj: int) -> None:
        self._material.polygon(points, fill=M[material])
        self._objects.polygon(points, fill=obj)

    def rect(self, box, material: str, obj: int) -> None:
        x0, y0, x1, y1 = box
        box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        self._material.rectangle(box, fill=M[material])
        self._objects.rectangle(box, fill=obj)

    def ellipse(self, box, material: str, obj: int) -> None:
        self._material.ellipse(box, fill=M[material])
        self._objects.ellipse(box, fill=obj)

    def line(self, points, material: str, obj: int, width: int = 1) -> None:
        self._material.line(points, fill=M[material], width=width)
        self._objects.line(points, fill=obj, width=width)


@dataclass(frozen=True)
class Street:
    """The perspective frame: road centre, half-width and sidewalk width at each depth."""

    height: int
    horizon: float
    vanish_x: float
    centre_bottom: float
    road_half_top: float
    road_half_bottom: float
    walk_bottom: float

    def y(self, t: float) -> float:
        return self.horizon + t * (self.height - self.horizon)

    def centre(self, t: float) -> float:
        return self.vanish_x + t * (self.centre_bottom - self.vanish_x)

    def half(self, t: float) -> float:
        return self.road_half_top + t * (self.road_half_bottom - self.road_half_top)

    def walk(self, t: float) -> float:
        return 1.0 + t * self.walk_bottom

    def road_edge(self, t: float, side: int) -> float:
        return self.centre(t) + side * self.half(t)

    def outer_edge(self, t: float, side: int) -> float:
        return self.road_edge(t, side) + side * self.walk(t)

    def across(self, t: float, side: int, f: float) -> float:
        """The x that is ``f`` of the way from the road's edge to the sidewalk's outer edge (f > 1: beyond)."""
        return self.road_edge(t, side) + side * f * self.walk(t)


def random_street(rng: np.random.Generator, height: int, width: int) -> Street:
    vanish_x = width / 2 + rng.uniform(-0.17, 0.17) * width
    return Street(
        height=height,
        horizon=float(rng.integers(int(0.34 * height), int(0.52 * height))),
        vanish_x=vanish_x,
        centre_bottom=vanish_x + rng.uniform(-0.16, 0.16) * width,
        road_half_top=rng.uniform(0.5, 2.5),
        road_half_bottom=rng.uniform(0.26, 0.42) * width,
        walk_bottom=rng.uniform(0.10, 0.22) * width,
    )


def draw_skyline(c: Canvas, s: Street, rng: np.random.Generator, width: int) -> None:
    """Buildings of varied heights and widths (with windows) and tree lines along the horizon."""
    x = -float(rng.integers(0, 10))
    bottom = s.horizon + 2
    while x < width:
        w = float(rng.integers(8, 34))
        kind = rng.choice(["building", "trees", "gap"], p=[0.72, 0.2, 0.08])
        if kind == "building":
            top = bottom - rng.uniform(6, max(7.0, s.horizon + 6))
            obj = c.new_object()
            c.rect((x, top, x + w - 1, bottom), "building", obj)
            if rng.random() < 0.85:
                win, gap = int(rng.integers(1, 3)), int(rng.integers(2, 4))
                for wy in np.arange(top + 2, s.horizon - win - 1, win + gap):
                    for wx in np.arange(x + 2, x + w - win - 2, win + gap):
                        c.rect((wx, wy, wx + win - 1, wy + win), "window", obj)
        elif kind == "trees":
            obj = c.new_object()
            for _ in range(int(rng.integers(2, 5))):
                r = rng.uniform(3, 8)
                cx, cy = x + rng.uniform(0, w), bottom - rng.uniform(0.5, 1.2) * r
                c.ellipse((cx - r, cy - r, cx + r, bottom + 1), "crown", obj)
        x += w


def draw_ground(c: Canvas, s: Street, rng: np.random.Generator, width: int) -> None:
    """Verges (terrain or more sidewalk), the sidewalks, the road with curbs and lane markings."""
    h, bottom = s.horizon, s.height
    for side in (-1, 1):
        far = -2.0 if side < 0 else width + 2.0
        c.polygon(
            [(s.outer_edge(0, side), h), (far, h), (far, bottom), (s.outer_edge(1, side), bottom)],
            "terrain" if rng.random() < 0.6 else "sidewalk",
            c.new_object(),
        )
        c.polygon(
            [
                (s.outer_edge(0, side), h),
                (s.road_edge(0, side), h),
                (s.road_edge(1, side), bottom),
                (s.outer_edge(1, side), bottom),
            ],
            "sidewalk",
            c.new_object(),
        )
        if rng.random() < 0.3:  # a grass strip on the sidewalk
            t0, t1 = sorted(rng.uniform(0.1, 1.0, 2))
            c.polygon(
                [
                    (s.across(t0, side, 0.55), s.y(t0)),
                    (s.outer_edge(t0, side), s.y(t0)),
                    (s.outer_edge(t1, side), s.y(t1)),
                    (s.across(t1, side, 0.55), s.y(t1)),
                ],
                "terrain",
                c.new_object(),
            )
    road = c.new_object()
    c.polygon(
        [
            (s.road_edge(0, -1), h),
            (s.road_edge(0, 1), h),
            (s.road_edge(1, 1), bottom),
            (s.road_edge(1, -1), bottom),
        ],
        "road",
        road,
    )
    for side in (-1, 1):
        c.line([(s.road_edge(0.05, side), s.y(0.05)), (s.road_edge(1, side), bottom)], "curb", c.new_object())
    if rng.random() < 0.7:  # a dashed centre line
        t = 0.05
        while t < 1:
            t1 = min(1.0, t + 0.06 + 0.12 * t)
            half0, half1 = 0.2 + 0.8 * t, 0.2 + 0.8 * t1
            c.polygon(
                [
                    (s.centre(t) - half0, s.y(t)),
                    (s.centre(t) + half0, s.y(t)),
                    (s.centre(t1) + half1, s.y(t1)),
                    (s.centre(t1) - half1, s.y(t1)),
                ],
                "lane marking",
                road,
            )
            t = t1 + 0.05 + 0.1 * t1


def draw_barrier(c: Canvas, s: Street, rng: np.random.Generator, side: int) -> None:
    """A wall (solid) or fence (posts and rails) along the outer edge of one sidewalk."""
    t0, t1 = sorted(rng.uniform(0.02, 0.9, 2))
    tall = rng.uniform(6, 16)
    foot = [(s.outer_edge(t, side), s.y(t)) for t in (t0, t1)]
    head = [(x, y - 1 - tall * t) for (x, y), t in zip(foot, (t0, t1), strict=True)]
    obj = c.new_object()
    if rng.random() < 0.5:
        c.polygon([foot[0], foot[1], head[1], head[0]], "wall", obj)
        return
    for f in (0.15, 0.85):
        c.line(
            [
                (foot[0][0], foot[0][1] + f * (head[0][1] - foot[0][1])),
                (foot[1][0], foot[1][1] + f * (head[1][1] - foot[1][1])),
            ],
            "fence",
            obj,
            width=max(1, round(t1 * 2)),
        )
    for t in np.linspace(t0, t1, max(2, int((t1 - t0) * 14))):
        x, y = s.outer_edge(t, side), s.y(t)
        c.line([(x, y), (x, y - 1 - tall * t)], "fence", obj, width=max(1, round(t * 2)))


def car(c: Canvas, x: float, y: float, t: float, rng: np.random.Generator) -> None:
    w = 3 + t * rng.uniform(40, 56)
    hgt = w * rng.uniform(0.42, 0.55)
    obj = c.new_object()
    body_top = y - 0.62 * hgt
    c.rect((x - w / 2, body_top, x + w / 2, y - 0.12 * hgt), "car body", obj)
    cab = [
        (x - 0.36 * w, body_top),
        (x - 0.26 * w, y - hgt),
        (x + 0.26 * w, y - hgt),
        (x + 0.36 * w, body_top),
    ]
    c.polygon(cab, "car body", obj)
    if w > 8:
        inset = 0.06 * w
        c.polygon(
            [
                (cab[0][0] + inset, body_top),
                (cab[1][0] + inset * 0.6, y - hgt + inset * 0.6),
                (cab[2][0] - inset * 0.6, y - hgt + inset * 0.6),
                (cab[3][0] - inset, body_top),
            ],
            "car glass",
            obj,
        )
    r = max(0.8, 0.13 * w)
    for wx in (x - 0.3 * w, x + 0.3 * w):
        c.ellipse((wx - r, y - 2 * r, wx + r, y), "wheel", obj)


def bus(c: Canvas, x: float, y: float, t: float, rng: np.random.Generator) -> None:
    w = 5 + t * rng.uniform(55, 75)
    hgt = w * rng.uniform(0.6, 0.75)
    obj = c.new_object()
    c.rect((x - w / 2, y - hgt, x + w / 2, y - 0.1 * hgt), "bus body", obj)
    if w > 10:
        c.rect((x - 0.44 * w, y - 0.9 * hgt, x + 0.44 * w, y - 0.6 * hgt), "bus glass", obj)
    r = max(0.8, 0.09 * w)
    for wx in (x - 0.32 * w, x + 0.32 * w):
        c.ellipse((wx - r, y - 2 * r, wx + r, y), "wheel", obj)


def person(c: Canvas, x: float, y: float, t: float, rng: np.random.Generator) -> None:
    hgt = 4 + t * rng.uniform(24, 34)
    w = max(1.0, 0.26 * hgt)
    obj = c.new_object()
    leg = max(0.5, 0.1 * hgt)
    c.rect((x - w / 2, y - 0.45 * hgt, x - w / 2 + leg, y), "clothes", obj)
    c.rect((x + w / 2 - leg, y - 0.45 * hgt, x + w / 2, y), "clothes", obj)
    c.rect((x - w / 2, y - 0.82 * hgt, x + w / 2, y - 0.42 * hgt), "clothes", obj)
    head = 0.1 * hgt
    c.ellipse((x - head, y - hgt, x + head, y - 0.8 * hgt), "skin", obj)


def pole(c: Canvas, x: float, y: float, t: float, rng: np.random.Generator) -> None:
    """A pole carrying a traffic sign, a traffic light, or nothing (a lamp post)."""
    hgt = 8 + t * rng.uniform(36, 56)
    pw = max(1.0, t * 3)
    c.rect((x - pw / 2, y - hgt, x + pw / 2 - 1, y), "pole", c.new_object())
    size = 2 + t * rng.uniform(6, 10)
    top = y - hgt
    what = rng.choice(["sign", "light", "none"], p=[0.55, 0.3, 0.15])
    if what == "sign":
        shape, obj = rng.integers(0, 3), c.new_object()
        box = (x - size / 2, top - size * 0.8, x + size / 2, top + size * 0.2)
        if shape == 0:
            c.rect(box, "sign", obj)
        elif shape == 1:
            c.ellipse(box, "sign", obj)
        else:
            c.polygon([(box[0], box[1]), (box[2], box[1]), (x, box[3])], "sign", obj)
    elif what == "light":
        obj = c.new_object()
        lw, lh = max(1.5, 0.5 * size), 1.4 * size
        c.rect((x - lw / 2, top - lh * 0.7, x + lw / 2, top + lh * 0.3), "traffic light", obj)
        r = max(0.4, 0.28 * lw)
        cy = top - lh * 0.7 + lh * rng.choice([0.2, 0.5, 0.8])
        c.ellipse((x - r, cy - r, x + r, cy + r), "lamp", obj)


def tree(c: Canvas, x: float, y: float, t: float, rng: np.random.Generator) -> None:
    trunk_h, tw = 4 + t * rng.uniform(14, 24), max(1.0, t * 3)
    obj = c.new_object()
    c.rect((x - tw / 2, y - trunk_h, x + tw / 2 - 1, y), "trunk", obj)
    radius = 3 + t * rng.uniform(8, 16)
    for _ in range(int(rng.integers(2, 5))):
        cx = x + rng.uniform(-0.6, 0.6) * radius
        cy = y - trunk_h - rng.uniform(0.2, 0.9) * radius
        r = radius * rng.uniform(0.6, 1.0)
        c.ellipse((cx - r, cy - r, cx + r, cy + r), "crown", obj)


def draw_layout(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(material, object id) of every pixel of one random street scene, both HxW uint8."""
    c = Canvas(height, width)
    s = random_street(rng, height, width)
    draw_skyline(c, s, rng, width)
    draw_ground(c, s, rng, width)
    for side in (-1, 1):
        if rng.random() < 0.35:
            draw_barrier(c, s, rng, side)
    placed: list[tuple[float, Callable, float]] = []  # (depth, draw, x)
    for _ in range(int(rng.integers(0, 5))):
        t = rng.uniform(0.1, 1.0) ** 0.8
        placed.append((t, car, s.centre(t) + rng.uniform(-0.75, 0.75) * s.half(t)))
    if rng.random() < 0.15:
        t = rng.uniform(0.1, 0.8)
        placed.append((t, bus, s.centre(t) + rng.uniform(-0.5, 0.5) * s.half(t)))
    for draw, count, where in (
        (person, rng.integers(0, 5), (0.15, 0.85)),
        (pole, rng.integers(1, 4), (0.55, 0.9)),
        (tree, rng.integers(0, 4), (0.9, 1.6)),
    ):
        for _ in range(int(count)):
            t, side = rng.uniform(0.12, 0.95), int(rng.choice([-1, 1]))
            placed.append((t, draw, s.across(t, side, rng.uniform(*where))))
    for t, draw, x in sorted(placed, key=lambda p: p[0]):
        draw(c, x, s.y(t), t, rng)
    return np.asarray(c.material), np.asarray(c.objects)
