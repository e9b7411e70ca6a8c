"""Reading the Pascal VOC layout: ``ImageSets/Main/{split}.txt``, ``Annotations/{id}.xml``, ``JPEGImages/{id}.jpg``.

SRC is the ``VOC2007`` / ``VOC2012`` folder itself (``VOCdevkit/VOC2012``). Annotation boxes are VOC's
1-based inclusive pixel indices; :func:`parse_annotation` turns them into 0-based edges
``(xmin - 1, ymin - 1, xmax, ymax)``, so a box's width is ``x2 - x1`` pixels. XML with a DOCTYPE or an
entity declaration is refused before parsing: VOC files have none, and nothing is expanded.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from frugalcv.errors import SourceLayoutError

from ._common import join, list_dir, missing_files, read_bytes

#: the 20 VOC classes in the standard order (class index = position)
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
VOC_SPLITS = ("trainval", "train", "val", "test")
#: an image id: letters, digits, ``_``, ``-`` and inner dots; never a path (no ``/``, ``\``, ``..``)
_IMAGE_ID = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")
#: the folders of a VOC year, and those a source that reads no annotations needs
VOC_FOLDERS = ("JPEGImages", "Annotations", "ImageSets")
IMAGE_FOLDERS = ("JPEGImages", "ImageSets")
_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


@dataclass(frozen=True)
class VocObject:
    """One annotated object: class index into VOC_CLASSES, box (x1, y1, x2, y2) as 0-based edges."""

    cls: int
    box: tuple[float, float, float, float]
    difficult: bool


@dataclass(frozen=True)
class VocAnnotation:
    image_id: str
    width: int
    height: int
    objects: tuple[VocObject, ...]


def check_image_id(image_id: str, where: str, kind: str) -> str:
    """``image_id`` when it is a plain file stem; SourceLayoutError naming ``where`` for anything path-like."""
    if not _IMAGE_ID.fullmatch(image_id):
        raise SourceLayoutError(f"{kind}: {where}: image id {image_id!r} is not a plain file name "
                                "(letters, digits, '_', '-', '.'; no '/', '\\' or '..')")
    return image_id


def image_set_url(root: str, split: str) -> str:
    return join(root, "ImageSets", "Main", f"{split}.txt")


def read_image_set(root: str, split: str, kind: str) -> list[str]:
    """The image ids listed in ``ImageSets/Main/{split}.txt``, in file order (first column of each line)."""
    url = image_set_url(root, split)
    _, files = list_dir(join(root, "ImageSets", "Main"), "the image lists (ImageSets/Main/)", kind)
    if f"{split}.txt" not in files:
        raise SourceLayoutError(f"{kind}: expected the {split} image list at {url!r}, but it does not exist")
    ids = []
    for n, line in enumerate(read_bytes(url).decode("utf-8", errors="replace").splitlines(), start=1):
        if line.strip():
            ids.append(check_image_id(line.split()[0], f"{url}:{n}", kind))
    if not ids:
        raise SourceLayoutError(f"{kind}: the image list {url!r} is empty")
    return ids


def require_files(root: str, folder: str, ids: list[str], suffix: str, list_url: str, kind: str) -> None:
    """SourceLayoutError naming the first ``{folder}/{id}{suffix}`` that ``list_url`` lists but is missing."""
    list_dir(join(root, folder), f"the {folder}/ folder", kind)
    missing = missing_files(join(root, folder), [i + suffix for i in ids])
    if missing:
        more = f" ({len(missing) - 1} more are missing)" if len(missing) > 1 else ""
        raise SourceLayoutError(f"{kind}: {list_url!r} lists {missing[0][: -len(suffix)]!r}, but "
                                f"{join(root, folder, missing[0])!r} does not exist{more}")


def _text(node: ET.Element, path: str, url: str, kind: str) -> str:
    found = node.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise SourceLayoutError(f"{kind}: {url}: malformed annotation: no <{path}>")
    return found.text.strip()


def _number(node: ET.Element, path: str, url: str, kind: str) -> float:
    text = _text(node, path, url, kind)
    try:
        return float(text)
    except ValueError:
        raise SourceLayoutError(f"{kind}: {url}: malformed annotation: <{path}> is {text!r}, not a number") from None


def parse_annotation(data: bytes, url: str, image_id: str, kind: str) -> VocAnnotation:
    """One ``Annotations/{id}.xml``; SourceLayoutError naming ``url`` when it is malformed.

    An object whose class is not one of the 20 is an error; ``difficult`` is 0 when absent."""
    if _DECLARATION.search(data):
        raise SourceLayoutError(f"{kind}: {url}: refused: the XML declares a DOCTYPE or entities")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise SourceLayoutError(f"{kind}: {url}: malformed XML: {e}") from None
    width, height = int(_number(root, "size/width", url, kind)), int(_number(root, "size/height", url, kind))
    if width < 1 or height < 1:
        raise SourceLayoutError(f"{kind}: {url}: malformed annotation: image size {width}x{height}")
    objects = []
    for obj in root.iter("object"):
        name = _text(obj, "name", url, kind)
        if name not in VOC_CLASSES:
            raise SourceLayoutError(f"{kind}: {url}: unknown class {name!r}; VOC classes: {', '.join(VOC_CLASSES)}")
        x1, y1, x2, y2 = (_number(obj, f"bndbox/{k}", url, kind) for k in ("xmin", "ymin", "xmax", "ymax"))
        if not (x1 <= x2 and y1 <= y2):
            raise SourceLayoutError(f"{kind}: {url}: malformed box of a {name}: ({x1}, {y1}, {x2}, {y2})")
        difficult = obj.find("difficult")
        flag = difficult is not None and (difficult.text or "0").strip() not in ("", "0")
        objects.append(VocObject(VOC_CLASSES.index(name), (x1 - 1, y1 - 1, x2, y2), flag))
    return VocAnnotation(image_id, width, height, tuple(objects))


def annotation_url(root: str, image_id: str) -> str:
    return join(root, "Annotations", f"{image_id}.xml")


def image_url(root: str, image_id: str) -> str:
    return join(root, "JPEGImages", f"{image_id}.jpg")


def read_annotation(root: str, image_id: str, kind: str) -> VocAnnotation:
    url = annotation_url(root, image_id)
    return parse_annotation(read_bytes(url), url, image_id, kind)


def check_layout(root: str, kind: str, folders: tuple[str, ...] = VOC_FOLDERS) -> None:
    """SourceLayoutError naming the first of the VOC ``folders`` that is missing, with a hint for VOCdevkit/."""
    for folder in folders:
        try:
            list_dir(join(root, folder), f"the {folder}/ folder of a VOC year (SRC is VOCdevkit/VOC2012)", kind)
        except SourceLayoutError as e:
            dirs = list_dir(root, "the VOC folder", kind)[0]
            years = [d for d in dirs if d.startswith("VOC")]
            hint = f"; SRC holds {', '.join(years)}: point it at one of them" if years else ""
            raise SourceLayoutError(f"{e}{hint}") from None


def multi_hot(annotation: VocAnnotation) -> list[int]:
    """Per VOC class, 1 where the image has an object of it that is not difficult."""
    labels = [0] * len(VOC_CLASSES)
    for obj in annotation.objects:
        if not obj.difficult:
            labels[obj.cls] = 1
    return labels
