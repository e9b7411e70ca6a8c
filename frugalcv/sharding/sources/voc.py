"""Pascal VOC image-level classification (``voc``): the images of ``ImageSets/Main/{split}.txt`` with
multi-hot labels over the 20 classes, for linear-probe mAP.

SRC is the ``VOCdevkit/VOC2007`` or ``VOC2012`` folder. Sample ``i`` is the ``i``-th id of the list:
``jpg`` (the original JPEG bytes; a non-RGB JPEG becomes an RGB ``png``) and ``labels.npy``, uint8 [20]
in the standard class order, 1 where the image has an object of the class that is not marked
difficult (an image whose only dogs are difficult has 0 for dog). Keys are the image ids.
"""

from __future__ import annotations

import numpy as np

from ._common import image_field, read_bytes, unique_keys
from ._voc_layout import (
    VOC_CLASSES,
    VOC_SPLITS,
    check_layout,
    image_set_url,
    image_url,
    multi_hot,
    read_annotation,
    read_image_set,
    require_files,
)
from .base import EncodedSample, Source, register_source
from .patch_pairs import npy_bytes


@register_source
class VocSource(Source):
    kind = "voc"
    task = "classification"
    splits = VOC_SPLITS

    def __init__(self, root: str, split: str = "trainval"):
        super().__init__(root, split)
        check_layout(root, self.kind)
        self.ids = read_image_set(root, split, self.kind)
        listed = image_set_url(root, split)
        require_files(root, "JPEGImages", self.ids, ".jpg", listed, self.kind)
        require_files(root, "Annotations", self.ids, ".xml", listed, self.kind)
        self.keys = unique_keys(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def class_names(self) -> list[str]:
        return list(VOC_CLASSES)

    def schema(self) -> dict[str, str]:
        return {"jpg": "RGB image (original JPEG bytes; png where the JPEG is not RGB)",
                "labels.npy": "uint8 [20] multi-hot over the VOC classes (difficult-only objects: 0)"}

    def extra_manifest(self) -> dict:
        return {"image_set": f"ImageSets/Main/{self.split}.txt", "labels": "multi-hot, labels.npy"}

    def encode(self, index: int) -> EncodedSample:
        image_id = self.ids[index]
        labels = np.array(multi_hot(read_annotation(self.root, image_id, self.kind)), dtype=np.uint8)
        url = image_url(self.root, image_id)
        ext, data, _ = image_field(read_bytes(url), url)
        return EncodedSample(self.keys[index], {ext: data, "labels.npy": npy_bytes(labels)})

