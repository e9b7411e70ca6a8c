"""GTA5 ("Playing for Data"): ``SRC/images/NNNNN.png`` with ``SRC/labels/NNNNN.png``.

Labels hold Cityscapes label ids (palette PNGs: the palette index is the id) and are mapped to
the 19 Cityscapes train ids. Split ``all`` (the default, what domain adaptation trains on) is every
PNG in ``images/``. Splits ``train`` and ``val`` need a list file ``SRC/train.txt`` / ``SRC/val.txt``
with one image file name per line (``00001.png``; a bare ``00001`` gets ``.png`` added; blank
lines are skipped), e.g. written from the official ``split.mat``. A label whose size differs from
its image is resized to the image with nearest-neighbour sampling. Keys are the file stems.
"""

from __future__ import annotations

import posixpath

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
from .base import EncodedSample, Source, register_source, require_file

TRAIN_ID_TABLE = lookup_table(CITYSCAPES_ID_TO_TRAIN_ID)


@register_source
class Gta5Source(Source):
    kind = "gta5"
    task = "segmentation"
    splits = ("all", "train", "val")

    def __init__(self, root: str, split: str = "all"):
        super().__init__(root, split)
        image_root, label_root = join(root, "images"), join(root, "labels")
        if split == "all":
            files = list_dir(image_root, "the images folder (images/NNNNN.png)", self.kind)[1]
            self.names = [f for f in files if f.lower().endswith(".png")]
        else:
            list_url = join(root, f"{split}.txt")
            require_file(list_url, f"the {split} list file (one image name per line)", self.kind)
            lines = read_bytes(list_url).decode("utf-8").splitlines()
            stripped = (line.strip() for line in lines)
            names = {n if n.lower().endswith(".png") else n + ".png" for n in stripped if n}
            self.names = sorted(posixpath.basename(n) for n in names)
            missing = missing_files(image_root, self.names)
            if missing:
                raise SourceLayoutError(
                    f"{self.kind}: {list_url!r} lists {missing[0]!r}, but {join(image_root, missing[0])!r} does not exist"
                )
        if not self.names:
            raise SourceLayoutError(f"{self.kind}: no .png images in {image_root!r}")
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

    def encode(self, index: int) -> EncodedSample:
        name = self.names[index]
        image_url, label_url = join(self.root, "images", name), join(self.root, "labels", name)
        ids = read_label_ids(read_bytes(label_url), label_url)
        fields = segmentation_fields(image_url, label_url, ids, TRAIN_ID_TABLE, resize_mask=True)
        return EncodedSample(self.keys[index], fields)
