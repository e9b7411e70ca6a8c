"""Pascal VOC patch pairs (``voc-pairs``) for spatial context networks, in the ``patch_pairs`` format.

SRC is the ``VOCdevkit/VOC2012`` folder; the images are those of ``ImageSets/Main/{split}.txt``.
Boxes per image come from ``pairs``:

- ``gt`` (default): the annotated objects (not those marked difficult, unless ``difficult``); every
  ordered pair of two distinct objects, ``max_pairs`` at most (spread evenly over that order);
  ``a.cls`` / ``b.cls`` hold their classes.
- ``proposals``: the ``proposals_per_image`` best-scoring boxes of the proposals file
  (``frugalcv.sharding.sources._proposals``) for the image; pairs as for ``gt``.
- ``random``: ``random_patches`` boxes of ``random_size`` pixels square at random positions (a seed of
  (``seed``, split, image index)); each unordered pair once (5 boxes: 10 pairs). Needs no annotations.

Boxes are clipped to the image and, for ``gt`` and ``proposals``, kept only with both sides at least
``min_size`` pixels. Sample ``k`` is pair ``p`` of image ``i`` (images in list order, pairs in order),
key ``{split}_{i:06d}_{p:02d}``; the pair counts, so the shard boundaries, are known before any
image is decoded (from the annotations' image sizes).
"""

from __future__ import annotations

import bisect
import io
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
from PIL import Image

from frugalcv.errors import FrugalError, SourceLayoutError
from frugalcv.sharding import storage

from ._common import read_bytes
from ._proposals import read_proposals
from ._voc_layout import (
    IMAGE_FOLDERS,
    VOC_CLASSES,
    VOC_FOLDERS,
    VOC_SPLITS,
    VocAnnotation,
    annotation_url,
    check_layout,
    image_set_url,
    image_url,
    read_annotation,
    read_image_set,
    require_files,
)
from .base import EncodedSample, Source, register_source, safe_key
from .patch_pairs import (
    DEFAULT_PATCH_SIZE,
    Box,
    big_enough,
    clip_box,
    image_rng,
    ordered_pairs,
    pair_fields,
    random_boxes,
    random_pairs,
)

PAIR_MODES = ("gt", "proposals", "random")


@dataclass(kw_only=True)
class VocPairOptions:
    """How ``voc-pairs`` chooses its boxes and stores its patches."""

    #: where the boxes come from: gt (annotated objects), proposals (a proposals file) or random (random squares)
    pairs: Literal["gt", "proposals", "random"] = "gt"
    #: the proposals file (path or fsspec URL; CSV image_id,x1,y1,x2,y2,score); needed with pairs: proposals
    proposals: str | None = None
    #: proposals kept per image, best score first
    proposals_per_image: int = 10
    #: gt and proposals: boxes with a side shorter than this many pixels (after clipping) are skipped
    min_size: int = 16
    #: gt and proposals: at most this many ordered pairs per image
    max_pairs: int = 20
    #: patches are stored resized to patch_size x patch_size (null: at their cropped size)
    patch_size: int | None = DEFAULT_PATCH_SIZE
    #: random: boxes per image (each unordered pair of them is one sample)
    random_patches: int = 5
    #: random: the boxes' side in pixels
    random_size: int = 64
    #: gt: also pair objects marked difficult
    difficult: bool = False
    #: random: the seed of the boxes (with the split and image index)
    seed: int = 0

    def problem(self) -> tuple[str, str] | None:
        """(field, what is wrong) for a setting that cannot work; None when they all can."""
        if self.pairs not in PAIR_MODES:
            return "pairs", f"{self.pairs!r}: use one of {', '.join(PAIR_MODES)}"
        if self.pairs == "proposals" and not self.proposals:
            return "proposals", "pairs: proposals needs the proposals file (CSV image_id,x1,y1,x2,y2,score)"
        if self.pairs != "proposals" and self.proposals:
            return "proposals", f"a proposals file is read only with pairs: proposals (pairs is {self.pairs!r})"
        for name, low in (("proposals_per_image", 2), ("max_pairs", 1), ("random_patches", 2),
                          ("random_size", 1), ("min_size", 0)):
            if getattr(self, name) < low:
                return name, f"{getattr(self, name)}: must be >= {low}"
        if self.patch_size is not None and self.patch_size < 1:
            return "patch_size", f"{self.patch_size}: must be >= 1 (or null: patches at their cropped size)"
        return None

    def __post_init__(self):
        bad = self.problem()
        if bad:
            raise FrugalError(f"voc-pairs: {bad[0]}: {bad[1]}")

    def record(self) -> dict:
        """The options as plain data (the proposals URL without credentials)."""
        out = {f.name: getattr(self, f.name) for f in fields(VocPairOptions)}
        if out["proposals"]:
            out["proposals"] = storage.redact(out["proposals"])
        return out


@dataclass(frozen=True)
class ImagePlan:
    """One image's boxes (with classes for gt) and its pairs as box indices."""

    image_id: str
    width: int
    height: int
    boxes: tuple[Box, ...]
    classes: tuple[int, ...] | None
    pairs: tuple[tuple[int, int], ...]


@register_source
class VocPairsSource(Source):
    kind = "voc-pairs"
    task = "patch_pairs"
    splits = VOC_SPLITS

    def __init__(self, root: str, split: str = "trainval", options: VocPairOptions | None = None, **settings):
        super().__init__(root, split)
        if options is None:
            allowed = [f.name for f in fields(VocPairOptions)]
            unknown = sorted(set(settings) - set(allowed))
            if unknown:
                raise FrugalError(f"{self.kind}: unknown option {unknown[0]!r}; options: {', '.join(allowed)}")
            options = VocPairOptions(**settings)
        self.options = options
        self.proposals_sha256: str | None = None
        random = options.pairs == "random"
        check_layout(root, self.kind, IMAGE_FOLDERS if random else VOC_FOLDERS)
        ids = read_image_set(root, split, self.kind)
        listed = image_set_url(root, split)
        require_files(root, "JPEGImages", ids, ".jpg", listed, self.kind)
        if random:
            self.plans = [self._random_plan(i) for i in ids]
        else:
            require_files(root, "Annotations", ids, ".xml", listed, self.kind)
            self.plans = self._annotated_plans(ids)
        counts = [len(p.pairs) for p in self.plans]
        if not sum(counts):
            raise SourceLayoutError(f"{self.kind}: no image of {listed!r} has two boxes to pair "
                                    f"(pairs: {options.pairs}, min_size: {options.min_size})")
        self.starts = np.cumsum([0] + counts).tolist()
        self._cache: tuple[int, np.ndarray] | None = None

    def _random_plan(self, image_id: str) -> ImagePlan:
        # the boxes need the image's size: drawn in encode; here only the pair count
        n = self.options.random_patches
        return ImagePlan(image_id, 0, 0, (), None, tuple(random_pairs(n)))

    def _annotated_plans(self, ids: list[str]) -> list[ImagePlan]:
        annotations = [read_annotation(self.root, i, self.kind) for i in ids]
        return self._gt_plans(annotations) if self.options.pairs == "gt" else self._proposal_plans(annotations)

    def _gt_plans(self, annotations: list[VocAnnotation]) -> list[ImagePlan]:
        o, plans = self.options, []
        for a in annotations:
            objects = [(clip_box(obj.box, a.width, a.height), obj.cls) for obj in a.objects
                       if o.difficult or not obj.difficult]
            kept = [(box, cls) for box, cls in objects if big_enough(box, o.min_size)]
            plans.append(ImagePlan(a.image_id, a.width, a.height, tuple(b for b, _ in kept),
                                   tuple(c for _, c in kept), tuple(ordered_pairs(len(kept), o.max_pairs))))
        return plans

    def _proposal_plans(self, annotations: list[VocAnnotation]) -> list[ImagePlan]:
        o = self.options
        sizes = {a.image_id: (a.width, a.height) for a in annotations}

        def accept(image_id: str, box: Box) -> Box | None:
            if image_id not in sizes:
                return None  # a proposal of an image of another split
            clipped = clip_box(box, *sizes[image_id])
            return clipped if big_enough(clipped, o.min_size) else None

        assert o.proposals is not None
        proposals = read_proposals(o.proposals, self.kind, o.proposals_per_image, accept)
        if not proposals.boxes:
            raise SourceLayoutError(f"{self.kind}: no proposal in {o.proposals!r} names an image of "
                                    f"{image_set_url(self.root, self.split)!r} with a box of at least "
                                    f"{o.min_size} pixels a side")
        self.proposals_sha256 = proposals.sha256
        plans = []
        for a in annotations:
            boxes = proposals.boxes.get(a.image_id, [])
            plans.append(ImagePlan(a.image_id, a.width, a.height, tuple(boxes), None,
                                   tuple(ordered_pairs(len(boxes), o.max_pairs))))
        return plans

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": None}  # a worker process decodes its own images

    def __len__(self) -> int:
        return self.starts[-1]

    def class_names(self) -> list[str]:
        return list(VOC_CLASSES) if self.options.pairs == "gt" else []

    def schema(self) -> dict[str, str]:
        out = {"a.png": "RGB patch X_i (the one whose representation is predicted)",
               "b.png": "RGB patch X_j", "offset.npy": "float32 [8] corners(b_i) - corners(b_j), x / W, y / H",
               "pair.json": "image id, image_size [W, H], box_a, box_b (pixel edges)"}
        if self.options.pairs == "gt":
            out.update({"a.cls": "class index of patch a", "b.cls": "class index of patch b"})
        return out

    def extra_manifest(self) -> dict:
        return {"pairs": self.options.pairs, "patch_size": self.options.patch_size, "images": len(self.plans),
                "images_with_pairs": sum(1 for p in self.plans if p.pairs)}

    def writer_params(self) -> dict:
        out = self.options.record()
        if self.proposals_sha256:
            out["proposals_sha256"] = self.proposals_sha256
        return out

    def locate(self, index: int) -> tuple[int, int]:
        """(image index, pair index) of sample ``index``."""
        image = bisect.bisect_right(self.starts, index) - 1
        return image, index - self.starts[image]

    def _image(self, image: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != image:
            plan = self.plans[image]
            url = image_url(self.root, plan.image_id)
            try:
                with Image.open(io.BytesIO(read_bytes(url))) as im:
                    pixels = np.asarray(im.convert("RGB"))
            except OSError as e:
                raise FrugalError(f"cannot decode image {url!r}: {e}") from e
            if plan.width and (pixels.shape[1], pixels.shape[0]) != (plan.width, plan.height):
                raise SourceLayoutError(
                    f"{self.kind}: {url!r} is {pixels.shape[1]}x{pixels.shape[0]} but "
                    f"{annotation_url(self.root, plan.image_id)!r} says {plan.width}x{plan.height}")
            self._cache = (image, pixels)
        return self._cache[1]

    def encode(self, index: int) -> EncodedSample:
        image, pair = self.locate(index)
        plan, pixels = self.plans[image], self._image(image)
        boxes = plan.boxes
        if self.options.pairs == "random":
            rng = image_rng(self.options.seed, self.split, image)
            boxes = tuple(random_boxes(pixels.shape[1], pixels.shape[0], self.options.random_patches,
                                       self.options.random_size, rng))
        i, j = plan.pairs[pair]
        cls_a, cls_b = (plan.classes[i], plan.classes[j]) if plan.classes is not None else (None, None)
        key = safe_key(f"{self.split}_{image:06d}_{pair:02d}")
        return EncodedSample(key, pair_fields(pixels, plan.image_id, boxes[i], boxes[j],
                                              self.options.patch_size, cls_a, cls_b))


__all__ = ["PAIR_MODES", "VOC_SPLITS", "VocPairOptions", "VocPairsSource"]
