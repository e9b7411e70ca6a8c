"""A tiny Pascal VOC tree in the real layout: JPEGImages/, Annotations/ (VOC-style XML), ImageSets/Main/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# image id -> (width, height, [(class, (xmin, ymin, xmax, ymax) 1-based inclusive, difficult)])
VOC_IMAGES = {
    "2008_000001": (64, 48, [("dog", (1, 1, 32, 24), 0), ("person", (33, 25, 64, 48), 0)]),
    "2008_000002": (48, 64, [("cat", (5, 5, 40, 40), 0), ("dog", (10, 30, 45, 60), 1)]),
    "2008_000003": (64, 64, [("car", (1, 1, 20, 20), 0), ("car", (30, 1, 60, 25), 0),
                             ("person", (10, 30, 40, 64), 0), ("bottle", (50, 50, 54, 54), 0)]),
    "2008_000004": (56, 40, [("bird", (3, 3, 30, 30), 1), ("bird", (20, 10, 50, 38), 0)]),
    "2008_000005": (40, 40, [("tvmonitor", (1, 1, 40, 40), 0)]),
}
VOC_SETS = {"train": ["2008_000001", "2008_000002", "2008_000003"], "val": ["2008_000004", "2008_000005"]}


def annotation_xml(image_id: str, width: int, height: int, objects) -> str:
    parts = [f"<annotation>\n\t<folder>VOC2012</folder>\n\t<filename>{image_id}.jpg</filename>\n"
             "\t<source>\n\t\t<database>The VOC2008 Database</database>\n\t\t<annotation>PASCAL VOC2008</annotation>\n"
             "\t\t<image>flickr</image>\n\t</source>\n"
             f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
             "\t<segmented>0</segmented>\n"]
    for name, (x1, y1, x2, y2), difficult in objects:
        part = ("\t\t<part>\n\t\t\t<name>head</name>\n\t\t\t<bndbox>\n\t\t\t\t<xmin>35</xmin>\n\t\t\t\t<ymin>26</ymin>\n"
                "\t\t\t\t<xmax>40</xmax>\n\t\t\t\t<ymax>30</ymax>\n\t\t\t</bndbox>\n\t\t</part>\n") if name == "person" else ""
        parts.append(f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
                     f"\t\t<difficult>{difficult}</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{x1}</xmin>\n"
                     f"\t\t\t<ymin>{y1}</ymin>\n\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>\n\t\t</bndbox>\n"
                     f"{part}\t</object>\n")
    parts.append("</annotation>\n")
    return "".join(parts)


def make_voc(root: Path) -> Path:
    """``root/VOC2012`` with the images of VOC_IMAGES and the lists train, val, trainval (and a per-class list)."""
    voc = root / "VOC2012"
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / folder).mkdir(parents=True)
    for n, (image_id, (w, h, objects)) in enumerate(VOC_IMAGES.items()):
        pixels = np.random.default_rng(n).integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=90)
        (voc / "Annotations" / f"{image_id}.xml").write_text(annotation_xml(image_id, w, h, objects))
    sets = {**VOC_SETS, "trainval": VOC_SETS["train"] + VOC_SETS["val"]}
    for split, ids in sets.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    (voc / "ImageSets" / "Main" / "dog_train.txt").write_text("2008_000001  1\n2008_000002  0\n2008_000003 -1\n")
    return voc
