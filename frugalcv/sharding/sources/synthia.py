"""SYNTHIA-RAND-CITYSCAPES: ``SRC/RGB/*.png`` with ``SRC/GT/LABELS/*.png``.

The label PNGs are 16-bit with the SYNTHIA class id in the first channel (the second holds
instance ids), which PIL cannot read, so they are decoded with pypng. Class ids are mapped to
Cityscapes train ids; 16 of the 19 Cityscapes classes exist in SYNTHIA (terrain, truck and train
do not), which the manifest records under ``classes_present``: papers report SYNTHIA->Cityscapes
mIoU over these 16 (or 13) classes. Class names are the 19 Cityscapes names, so that train ids
mean the same thing in both datasets. Split ``all`` only; keys are the file stems.
"""

from __future__ import annotations

import posixpath

import numpy as np
import png

from frugalcv.errors import FrugalError, SourceLayoutError

from ._common import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_MASK_DOC,
    join,
    list_dir,
    lookup_table,
    missing_files,
    read_bytes,
    segmentation_fields,
    unique_keys,
)
from .base import EncodedSample, Source, register_source

# SYNTHIA class id -> Cityscapes train id.
SYNTHIA_ID_TO_TRAIN_ID = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8,
    1: 10, 10: 11, 17: 12, 8: 13, 19: 15, 12: 17, 11: 18,
}  # fmt: skip
TRAIN_ID_TABLE = lookup_table(SYNTHIA_ID_TO_TRAIN_ID)
TRAIN_IDS_PRESENT = sorted(SYNTHIA_ID_TO_TRAIN_ID.values())


def read_synthia_label(data: bytes, url: str) -> np.ndarray:
    """The first channel of a (16-bit, multi-channel) label PNG as an [H, W] integer array."""
    try:
        width, height, rows, info = png.Reader(bytes=data).asDirect()
        planes = info["planes"]
        dtype = np.uint16 if info["bitdepth"] > 8 else np.uint8
        pixels = np.vstack([np.asarray(row, dtype=dtype) for row in rows])
    except png.Error as e:
        raise FrugalError(f"cannot decode label image {url!r}: {e}") from e
    return pixels.reshape(height, width, planes)[:, :, 0]


@register_source
class SynthiaSource(Source):
    kind = "synthia"
    task = "segmentation"
    splits = ("all",)

    def __init__(self, root: str, split: str = "all"):
        super().__init__(root, split)
        image_root, label_root = join(root, "RGB"), join(root, "GT", "LABELS")
        files = list_dir(image_root, "the RGB images folder (RGB/*.png)", self.kind)[1]
        self.names = [f for f in files if f.lower().endswith(".png")]
        if not self.names:
            raise SourceLayoutError(f"{self.kind}: no .png images in {image_root!r}")
        list_dir(label_root, "the 16-bit label folder (GT/LABELS/*.png)", self.kind)
        missing = missing_files(label_root, self.names)
        if missing:
            raise SourceLayoutError(
                f"{self.kind}: expected the label {join(label_root, missing[0])!r} for the image "
                f"{join(image_root, missing[0])!r}, but it does not exist"
                + (f" ({len(missing) - 1} more labels are missing)" if len(missing) > 1 else "")
            )
        self.keys = unique_keys([posixpath.splitext(n)[0] for n in self.names])

    def __len__(self) -> int:
        return len(self.names)

    def class_names(self) -> list[str]:
        return list(CITYSCAPES_CLASSES)

    def schema(self) -> dict[str, str]:
        return {"png": "RGB image (original PNG bytes when 8-bit RGB)", "mask.png": CITYSCAPES_MASK_DOC}

    def extra_manifest(self) -> dict:
        return {
            "classes_present": [{"train_id": i, "name": CITYSCAPES_CLASSES[i]} for i in TRAIN_IDS_PRESENT],
            "classes_absent": [
                {"train_id": i, "name": name}
                for i, name in enumerate(CITYSCAPES_CLASSES)
                if i not in TRAIN_IDS_PRESENT
            ],
        }

    def encode(self, index: int) -> EncodedSample:
        name = self.names[index]
        image_url, label_url = join(self.root, "RGB", name), join(self.root, "GT", "LABELS", name)
        ids = read_synthia_label(read_bytes(label_url), label_url)
        return EncodedSample(self.keys[index], segmentation_fields(image_url, label_url, ids, TRAIN_ID_TABLE))
