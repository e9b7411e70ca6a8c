"""Tiny datasets written in the exact on-disk layouts of the real ones.

Each ``make_<kind>(root) -> Path`` writes under ``root`` and returns the folder to pass as SRC.
Contents are seeded, so two calls write identical files. Segmentation labels contain every id
0..40 plus out-of-table values, for pixel-by-pixel checks of the id mapping.
"""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import png
from PIL import Image

# Every label id 0..40 and values outside every table: 6x8 = 48 pixels.
CITYSCAPES_LABEL_VALUES = np.array([*range(41), 255, 254, 100, 34, 45, 200, 128], dtype=np.uint8)
SYNTHIA_LABEL_VALUES = np.array([*range(41), 65535, 259, 1000, 256, 511, 300, 4096], dtype=np.uint16)
SEG_H, SEG_W = 6, 8


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def label_grid(values: np.ndarray, shift: int) -> np.ndarray:
    """[SEG_H, SEG_W] array holding ``values`` (48 of them), rolled by ``shift``."""
    return np.roll(values, shift).reshape(SEG_H, SEG_W)


def save_rgb_png(array: np.ndarray, path: Path, fmt: str = "PNG") -> None:
    """Written with another zlib level than the converters use, as files from other tools are."""
    Image.fromarray(array).save(path, format=fmt, compress_level=1)


def random_rgb(seed: int, h: int = SEG_H, w: int = SEG_W) -> np.ndarray:
    return _rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _write_pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar_batch(seed: int, n: int, labels_key: bytes, num_classes: int, name: bytes) -> dict:
    rng = _rng(seed)
    batch = {
        b"batch_label": name,
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        labels_key: [int(x) for x in rng.integers(0, num_classes, size=n)],
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }
    if labels_key == b"fine_labels":
        batch[b"coarse_labels"] = [int(x) for x in rng.integers(0, 20, size=n)]
    return batch


CIFAR10_TRAIN_SIZES = (3, 2, 4, 3, 2)
CIFAR10_TEST_SIZE = 4
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_cifar10(root: Path) -> Path:
    """``root/cifar-10-batches-py`` with 5 small train batches, a test batch and batches.meta."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(CIFAR10_TRAIN_SIZES, start=1):
        batch = _cifar_batch(i, n, b"labels", 10, f"training batch {i} of 5".encode())
        _write_pickle(folder / f"data_batch_{i}", batch)
    _write_pickle(
        folder / "test_batch", _cifar_batch(99, CIFAR10_TEST_SIZE, b"labels", 10, b"testing batch 1 of 1")
    )
    meta = {
        b"label_names": [n.encode() for n in CIFAR10_NAMES],
        b"num_cases_per_batch": 10000,
        b"num_vis": 3072,
    }
    _write_pickle(folder / "batches.meta", meta)
    (folder / "readme.html").write_text("<html></html>")
    return folder


CIFAR100_SIZES = {"train": 6, "test": 3}
CIFAR100_NAMES = [f"fine_{i:02d}" for i in range(100)]


def make_cifar100(root: Path) -> Path:
    """``root/cifar-100-python`` with train, test and meta."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for seed, (split, n) in enumerate(CIFAR100_SIZES.items()):
        _write_pickle(folder / split, _cifar_batch(seed + 10, n, b"fine_labels", 100, split.encode()))
    meta = {
        b"fine_label_names": [n.encode() for n in CIFAR100_NAMES],
        b"coarse_label_names": [f"coarse_{i:02d}".encode() for i in range(20)],
    }
    _write_pickle(folder / "meta", meta)
    return folder


def make_imagefolder(root: Path) -> Path:
    """``root/imagefolder/{train,val}/{class}/...`` with the file variants ImageNet really has.

    train/cat: RGB JPEG, grayscale JPEG, CMYK JPEG (upper-case .JPEG), a text file (not a sample)
    train/dog: RGB PNG, RGBA PNG, palette PNG, a PNG named .JPEG
    train/fish: one .jpeg; val/cat and val/dog: one image each (val has no fish).
    """
    base = Path(root) / "imagefolder"
    for d in ("train/cat", "train/dog", "train/fish", "val/cat", "val/dog"):
        (base / d).mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(random_rgb(1, 10, 12))
    rgb.save(base / "train/cat/rgb.jpg", quality=90)
    rgb.convert("L").save(base / "train/cat/gray.jpg", quality=90)
    rgb.convert("CMYK").save(base / "train/cat/cmyk.JPEG", quality=90)
    (base / "train/cat/notes.txt").write_text("not an image")
    save_rgb_png(random_rgb(2, 7, 5), base / "train/dog/rgb.png")
    Image.fromarray(np.dstack([random_rgb(3, 6, 6), np.full((6, 6), 128, np.uint8)])).save(
        base / "train/dog/rgba.png"
    )
    Image.fromarray(random_rgb(4, 5, 9)).quantize(8).save(base / "train/dog/palette.png")
    save_rgb_png(random_rgb(5, 4, 4), base / "train/dog/disguised.JPEG")
    Image.fromarray(random_rgb(6, 8, 8)).save(base / "train/fish/nemo.jpeg", quality=95)
    Image.fromarray(random_rgb(7, 9, 9)).save(base / "val/cat/val_cat.JPEG", format="JPEG")
    save_rgb_png(random_rgb(8, 3, 5), base / "val/dog/val_dog.png")
    return base


CITYSCAPES_FRAMES = {
    "train": [("aachen", "000000", "000019"), ("aachen", "000001", "000019"), ("bochum", "000000", "000313")],
    "val": [("frankfurt", "000000", "000294"), ("lindau", "000000", "000019")],
}


def make_cityscapes(root: Path) -> Path:
    """``root/cityscapes`` with leftImg8bit/{split}/{city}/ and gtFine/{split}/{city}/ (all gtFine files)."""
    base = Path(root) / "cityscapes"
    n = 0
    for split, frames in CITYSCAPES_FRAMES.items():
        for city, seq, frame in frames:
            stem = f"{city}_{seq}_{frame}"
            img_dir, gt_dir = base / "leftImg8bit" / split / city, base / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            save_rgb_png(random_rgb(100 + n), img_dir / f"{stem}_leftImg8bit.png")
            ids = label_grid(CITYSCAPES_LABEL_VALUES, 7 * n)
            Image.fromarray(ids).save(gt_dir / f"{stem}_gtFine_labelIds.png")
            Image.fromarray(np.where(ids < 34, ids, 0).astype(np.uint8)).save(
                gt_dir / f"{stem}_gtFine_trainIds.png"
            )
            Image.fromarray(random_rgb(200 + n)).save(gt_dir / f"{stem}_gtFine_color.png")
            Image.fromarray(ids.astype(np.uint16) * 100).save(gt_dir / f"{stem}_gtFine_instanceIds.png")
            (gt_dir / f"{stem}_gtFine_polygons.json").write_text(json.dumps({"objects": []}))
            n += 1
    (base / "license.txt").write_text("fixture")
    return base


GTA5_NAMES = ["00001", "00002", "00003", "00004"]


def make_gta5(root: Path) -> Path:
    """``root/gta5/images/NNNNN.png`` + ``labels/NNNNN.png`` (palette PNGs, one mode L), train.txt/val.txt."""
    base = Path(root) / "gta5"
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "labels").mkdir(parents=True, exist_ok=True)
    palette = _rng(0).integers(0, 256, size=768, dtype=np.uint8).tolist()
    for n, name in enumerate(GTA5_NAMES):
        save_rgb_png(random_rgb(300 + n), base / "images" / f"{name}.png")
        label = Image.fromarray(label_grid(CITYSCAPES_LABEL_VALUES, 11 * n + 3))
        if n != 2:
            label = label.convert("P")
            label.putpalette(palette)
        label.save(base / "labels" / f"{name}.png")
    (base / "train.txt").write_text("00001.png\n00003.png\n\n00004\n")
    (base / "val.txt").write_text("00002.png\n")
    return base


SYNTHIA_NAMES = ["0000000", "0000001", "0000002"]


def write_png16(path: Path, planes_HWC: np.ndarray) -> None:
    """A 16-bit RGB PNG (SYNTHIA's label format), which PIL cannot write."""
    h, w, _ = planes_HWC.shape
    with open(path, "wb") as f:
        png.Writer(w, h, greyscale=False, bitdepth=16).write(
            f, planes_HWC.reshape(h, w * 3).astype(np.uint16)
        )


def make_synthia(root: Path) -> Path:
    """``root/synthia/RGB/*.png`` + ``GT/LABELS/*.png`` (16-bit, class id first channel) + GT/COLOR."""
    base = Path(root) / "synthia"
    for d in ("RGB", "GT/LABELS", "GT/COLOR"):
        (base / d).mkdir(parents=True, exist_ok=True)
    for n, name in enumerate(SYNTHIA_NAMES):
        save_rgb_png(random_rgb(400 + n), base / "RGB" / f"{name}.png")
        class_ids = label_grid(SYNTHIA_LABEL_VALUES, 5 * n + 1)
        instance_ids = _rng(500 + n).integers(0, 65536, size=class_ids.shape, dtype=np.uint16)
        write_png16(
            base / "GT/LABELS" / f"{name}.png", np.dstack([class_ids, instance_ids, instance_ids[::-1]])
        )
        Image.fromarray(random_rgb(600 + n)).save(base / "GT/COLOR" / f"{name}.png")
    return base


VIDEO_CLASSES = ["archery", "bowling", "cooking"]
# (path, label, split, T, dtype)
VIDEO_ROWS = [
    ("features/bowling/v_003.npy", "bowling", "train", 4, "float64"),
    ("features/archery/v_001.npy", "archery", "train", 3, "float32"),
    ("features/cooking/v_002.npy", "cooking", "train", 5, "float16"),
    ("features/archery/v_004.npy", "archery", "val", 2, "float32"),
    ("features/cooking/v_005.npy", "cooking", "test", 6, "float64"),
]
VIDEO_DIM = 5


def write_features(base: Path, rel: str, frames: int, dtype: str, seed: int) -> None:
    path = base / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, _rng(seed).standard_normal((frames, VIDEO_DIM)).astype(dtype))


def make_video_features(root: Path) -> Path:
    """``root/video`` with ``index.csv`` (path,label,split) and nested ``.npy`` [T, D] arrays."""
    base = Path(root) / "video"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "index.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        for seed, (rel, label, split, frames, dtype) in enumerate(VIDEO_ROWS):
            write_features(base, rel, frames, dtype, seed)
            writer.writerow([rel, label, split])
    return base
