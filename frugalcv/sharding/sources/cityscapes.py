"""Cityscapes fine annotations: ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` with
``gtFine/{split}/{city}/*_gtFine_labelIds.png``, label ids mapped to the 19 train ids.

SRC is the folder holding ``leftImg8bit/`` and ``gtFine/`` (both zips extract there). Keys are
``{city}_{seq}_{frame}``. The test split's public labels are placeholders (all ignore), so its
masks carry no information; it is accepted for writing images to predict on.
"""

from __future__ import annotations

from frugalcv.errors import SourceLayoutError

from ._common import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAIN_ID,
    CITYSCAPES_MASK_DOC,
    join,
    list_dir,
    lookup_table,
    missing_files,
    read_bytes,
    read_label_ids,
    segmentation_fields,
    unique_keys,
)
from .base import EncodedSample, Source, register_source

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
TRAIN_ID_TABLE = lookup_table(CITYSCAPES_ID_TO_TRAIN_ID)


@register_source
class CityscapesSource(Source):
    kind = "cityscapes"
    task = "segmentation"
    splits = ("train", "val", "test")

    def __init__(self, root: str, split: str = "train"):
        super().__init__(root, split)
        image_root = join(root, "leftImg8bit", split)
        cities, _ = list_dir(image_root, f"the {split} images (leftImg8bit/{split}/{{city}}/)", self.kind)
        self.stems: list[str] = []  # "{city}/{city}_{seq}_{frame}"
        for city in cities:
            for name in list_dir(join(image_root, city), "a city folder", self.kind)[1]:
                if name.endswith(IMAGE_SUFFIX):
                    self.stems.append(f"{city}/{name[: -len(IMAGE_SUFFIX)]}")
        if not self.stems:
            raise SourceLayoutError(f"{self.kind}: no *{IMAGE_SUFFIX} files under {image_root!r}")
        label_root = join(root, "gtFine", split)
        missing = missing_files(label_root, [stem + LABEL_SUFFIX for stem in self.stems])
        if missing:
            raise SourceLayoutError(
                f"{self.kind}: expected the label {join(label_root, missing[0])!r} for the image "
                f"{join(image_root, missing[0].replace(LABEL_SUFFIX, IMAGE_SUFFIX))!r}, but it does not exist"
                + (f" ({len(missing) - 1} more labels are missing)" if len(missing) > 1 else "")
            )
        self.keys = unique_keys([stem.split("/", 1)[1] for stem in self.stems])

    def __len__(self) -> int:
        return len(self.stems)

    def class_names(self) -> list[str]:
        return list(CITYSCAPES_CLASSES)

    def schema(self) -> dict[str, str]:
        return {"png": "RGB image (original leftImg8bit PNG)", "mask.png": CITYSCAPES_MASK_DOC}

    def encode(self, index: int) -> EncodedSample:
        stem = self.stems[index]
        image_url = join(self.root, "leftImg8bit", self.split, stem + IMAGE_SUFFIX)
        label_url = join(self.root, "gtFine", self.split, stem + LABEL_SUFFIX)
        ids = read_label_ids(read_bytes(label_url), label_url)
        return EncodedSample(self.keys[index], segmentation_fields(image_url, label_url, ids, TRAIN_ID_TABLE))
