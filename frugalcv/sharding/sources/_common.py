"""Helpers shared by the converters: fsspec paths and listings, image and mask encoding."""

from __future__ import annotations

import io
import posixpath
from collections import defaultdict
from collections.abc import Iterable

import fsspec
import numpy as np
from PIL import Image

from frugalcv.errors import FrugalError, SourceLayoutError

from .base import safe_key

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
IGNORE_ID = 255

# The 19 Cityscapes evaluation classes, indexed by train id.
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

# Cityscapes label id -> train id (labels.py of cityscapesScripts); every other id is ignored.
CITYSCAPES_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip


def join(root: str, *parts: str) -> str:
    """Join relative parts onto a local path or fsspec URL with '/'."""
    return (root if root.endswith("/") else root + "/") + "/".join(parts)


def exists(url: str) -> bool:
    fs, path = fsspec.core.url_to_fs(url)
    return fs.exists(path)


def read_bytes(url: str) -> bytes:
    with fsspec.open(url, "rb") as f:
        return f.read()


def list_dir(url: str, what: str, kind: str) -> tuple[list[str], list[str]]:
    """(sorted sub-folder names, sorted file names) of a folder; hidden entries are skipped.

    Raises SourceLayoutError naming ``url`` when the folder does not exist.
    """
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.isdir(path):
        raise SourceLayoutError(f"{kind}: expected {what} at {url!r}, but it is not a folder")
    dirs, files = [], []
    for entry in fs.ls(path, detail=True):
        name = posixpath.basename(entry["name"].rstrip("/"))
        if not name or name.startswith("."):
            continue
        (dirs if entry["type"] == "directory" else files).append(name)
    return sorted(dirs), sorted(files)


def missing_files(root: str, relpaths: Iterable[str]) -> list[str]:
    """The relative paths under ``root`` that do not exist, found with one listing per folder."""
    by_parent: dict[str, list[str]] = defaultdict(list)
    for rel in relpaths:
        parent, name = posixpath.split(rel)
        by_parent[parent].append(name)
    fs, root_path = fsspec.core.url_to_fs(root)
    missing = []
    for parent in sorted(by_parent):
        folder = join(root_path, parent) if parent else root_path
        try:
            present = {posixpath.basename(p.rstrip("/")) for p in fs.ls(folder, detail=False)}
        except FileNotFoundError:
            present = set()
        missing += [posixpath.join(parent, n) for n in by_parent[parent] if n not in present]
    return missing


def unique_keys(names: list[str]) -> list[str]:
    """``safe_key`` of each name, with ``_2``, ``_3``... appended where two names collide."""
    keys, taken = [], set()
    for name in names:
        base = key = safe_key(name)
        n = 1
        while key in taken:
            n += 1
            key = f"{base}_{n}"
        taken.add(key)
        keys.append(key)
    return keys


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    """Encode with PIL's PNG writer; the same pixels always give the same bytes."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def is_rgb8_png(data: bytes) -> bool:
    # IHDR is always the first chunk: bit depth at byte 24, colour type at byte 25 (2 = RGB).
    return data.startswith(PNG_SIGNATURE) and len(data) > 25 and data[24] == 8 and data[25] == 2


def image_field(data: bytes, url: str) -> tuple[str, bytes, tuple[int, int]]:
    """(extension, bytes, (width, height)) of the RGB image stored for a source file.

    An 8-bit RGB PNG or an RGB JPEG is kept byte for byte (the file's content decides, not its
    name); anything else (grayscale, CMYK, palette, alpha, 16-bit) is converted to RGB with PIL
    and written as PNG. Alpha is dropped, EXIF orientation is not applied.
    """
    try:
        image = Image.open(io.BytesIO(data))
        size = image.size
        if is_rgb8_png(data):
            return "png", data, size
        if data.startswith(JPEG_SIGNATURE) and image.format == "JPEG" and image.mode == "RGB":
            return "jpg", data, size
        return "png", png_bytes(image.convert("RGB")), size
    except OSError as e:
        raise FrugalError(f"cannot decode image {url!r}: {e}") from e


def read_label_ids(data: bytes, url: str) -> np.ndarray:
    """The label id of every pixel of a single-channel label PNG (palette indices for mode P)."""
    try:
        image = Image.open(io.BytesIO(data))
        if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
            raise FrugalError(
                f"label image {url!r} has mode {image.mode!r}; expected one channel of label ids "
                "(mode L, P or 16-bit)"
            )
        return np.asarray(image)
    except OSError as e:
        raise FrugalError(f"cannot decode label image {url!r}: {e}") from e


def lookup_table(mapping: dict[int, int], size: int = 65536) -> np.ndarray:
    table = np.full(size, IGNORE_ID, dtype=np.uint8)
    for src, dst in mapping.items():
        table[src] = dst
    return table


def map_ids(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Train id (uint8, 255 = ignore) of every label id; ids outside the table are ignored."""
    ids = ids.astype(np.int64, copy=False)
    inside = (ids >= 0) & (ids < len(table))
    out = np.full(ids.shape, IGNORE_ID, dtype=np.uint8)
    out[inside] = table[ids[inside]]
    return out


def check_same_size(image_size: tuple[int, int], mask: np.ndarray, image_url: str, label_url: str) -> None:
    if (mask.shape[1], mask.shape[0]) != tuple(image_size):
        raise FrugalError(
            f"image {image_url!r} is {image_size[0]}x{image_size[1]} but its label {label_url!r} is "
            f"{mask.shape[1]}x{mask.shape[0]}"
        )


def segmentation_fields(
    image_url: str, label_url: str, label_ids: np.ndarray, table: np.ndarray, resize_mask: bool = False
) -> dict[str, bytes]:
    """The image field plus ``mask.png``: label ids mapped through ``table`` to train ids.

    An image and label of different sizes are an error, unless ``resize_mask``: then the mask is
    resized to the image with nearest-neighbour sampling.
    """
    ext, data, size = image_field(read_bytes(image_url), image_url)
    mask = map_ids(label_ids, table)
    if resize_mask and (mask.shape[1], mask.shape[0]) != tuple(size):
        mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
    check_same_size(size, mask, image_url, label_url)
    return {ext: data, "mask.png": png_bytes(mask)}


CITYSCAPES_MASK_DOC = "train ids of the 19 Cityscapes classes (mode L PNG), 255 = ignore"
