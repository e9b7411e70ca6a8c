"""The dataset converters against tiny fixtures in the real on-disk layouts."""

from __future__ import annotations

import io
import json
import pickle
import shutil

import fsspec
import numpy as np
import png
import pytest
from dataset_fixtures import (
    CIFAR10_NAMES,
    CIFAR10_TEST_SIZE,
    CIFAR10_TRAIN_SIZES,
    CIFAR100_NAMES,
    CIFAR100_SIZES,
    CITYSCAPES_FRAMES,
    GTA5_NAMES,
    SYNTHIA_NAMES,
    VIDEO_ROWS,
    make_cifar10,
    make_cifar100,
    make_cityscapes,
    make_gta5,
    make_imagefolder,
    make_synthia,
    make_video_features,
    write_features,
)
from PIL import Image

from frugalcv.errors import FrugalError, SourceLayoutError
from frugalcv.sharding.sources import SOURCES, get_source

# The mappings as the dataset documentation states them, written out independently of the code.
CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
SYNTHIA_TRAIN_IDS = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8,
    1: 10, 10: 11, 17: 12, 8: 13, 19: 15, 12: 17, 11: 18,
}  # fmt: skip
CITYSCAPES_NAMES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]  # fmt: skip
ALL_KINDS = {
    "cifar10",
    "cifar100",
    "imagefolder",
    "cityscapes",
    "gta5",
    "synthia",
    "video-features",
    "digits",
    "street-scenes",
    "video-digits",
    "scn-shapes",
    "scn-digit-scenes",
}


def decode_rgb(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.mode == "RGB"
    return np.asarray(image)


def decode_mask(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.mode == "L" and image.format == "PNG"
    return np.asarray(image)


def expected_train_ids(ids: np.ndarray, table: dict[int, int]) -> np.ndarray:
    """Pixel by pixel, the way the table reads."""
    out = np.empty(ids.shape, dtype=np.uint8)
    for (y, x), value in np.ndenumerate(ids):
        out[y, x] = table.get(int(value), 255)
    return out


def encode_all(source):
    samples = [source.encode(i) for i in range(len(source))]
    keys = [s.key for s in samples]
    assert len(set(keys)) == len(keys)
    assert all("." not in k and "/" not in k for k in keys)
    return samples


def assert_picklable_and_deterministic(source, index: int = 0):
    clone = pickle.loads(pickle.dumps(source))
    assert clone.encode(index) == source.encode(index)


def test_every_kind_is_registered_and_unknown_kinds_list_them():
    assert set(SOURCES) >= ALL_KINDS
    with pytest.raises(FrugalError, match="cifar10.*cityscapes"):
        get_source("cifar-10", "x", "train")
    with pytest.raises(FrugalError, match="unknown split 'val'.*train, test"):
        get_source("cifar10", "x", "val")


# --- CIFAR ---------------------------------------------------------------------------------------


def _raw_cifar(folder, names, labels_key):
    images, labels = [], []
    for name in names:
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images += [row.reshape(3, 32, 32).transpose(1, 2, 0) for row in batch[b"data"]]
        labels += batch[labels_key]
    return images, labels


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_pixels_labels_and_names(odd_tmp, split):
    folder = make_cifar10(odd_tmp)
    source = get_source("cifar10", str(folder), split)
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = _raw_cifar(folder, files, b"labels")
    assert len(source) == (sum(CIFAR10_TRAIN_SIZES) if split == "train" else CIFAR10_TEST_SIZE) == len(images)
    assert source.class_names() == CIFAR10_NAMES
    for i, sample in enumerate(encode_all(source)):
        assert set(sample.fields) == {"png", "cls"}
        assert (decode_rgb(sample.fields["png"]) == images[i]).all()
        assert int(sample.fields["cls"].decode("ascii")) == labels[i]
    assert_picklable_and_deterministic(source, len(source) - 1)


def test_cifar10_accepts_the_parent_folder(tmp_path):
    folder = make_cifar10(tmp_path)
    nested, direct = (
        get_source("cifar10", str(tmp_path), "train"),
        get_source("cifar10", str(folder), "train"),
    )
    assert len(nested) == len(direct) and nested.encode(5) == direct.encode(5)


def test_cifar10_missing_batch_names_it(tmp_path):
    folder = make_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(SourceLayoutError, match="data_batch_3"):
        get_source("cifar10", str(folder), "train")
    get_source("cifar10", str(folder), "test")  # the test split does not need it
    with pytest.raises(SourceLayoutError, match="batches.meta"):
        get_source("cifar10", str(tmp_path / "elsewhere"), "test")


def test_cifar100_fine_labels(tmp_path):
    folder = make_cifar100(tmp_path)
    for split in ("train", "test"):
        source = get_source("cifar100", str(tmp_path), split)
        images, labels = _raw_cifar(folder, [split], b"fine_labels")
        assert len(source) == CIFAR100_SIZES[split]
        assert source.class_names() == CIFAR100_NAMES
        for i, sample in enumerate(encode_all(source)):
            assert (decode_rgb(sample.fields["png"]) == images[i]).all()
            assert int(sample.fields["cls"]) == labels[i]
    (folder / "meta").unlink()
    with pytest.raises(SourceLayoutError, match="cifar-100-python/meta"):
        get_source("cifar100", str(tmp_path), "train")


# --- imagefolder ---------------------------------------------------------------------------------


def test_imagefolder_keeps_rgb_bytes_and_converts_the_rest(odd_tmp):
    base = make_imagefolder(odd_tmp)
    source = get_source("imagefolder", str(base), "train")
    assert source.class_names() == ["cat", "dog", "fish"]
    samples = {s.key: s for s in encode_all(source)}
    assert sorted(samples) == sorted(
        [
            "cat_cmyk_JPEG", "cat_gray_jpg", "cat_rgb_jpg",
            "dog_disguised_JPEG", "dog_palette_png", "dog_rgb_png", "dog_rgba_png", "fish_nemo_jpeg",
        ]
    )  # fmt: skip
    kept = {"cat_rgb_jpg": ("jpg", "cat/rgb.jpg"), "fish_nemo_jpeg": ("jpg", "fish/nemo.jpeg")}
    kept |= {"dog_rgb_png": ("png", "dog/rgb.png"), "dog_disguised_JPEG": ("png", "dog/disguised.JPEG")}
    for key, (ext, rel) in kept.items():
        assert samples[key].fields[ext] == (base / "train" / rel).read_bytes(), key
    converted = {"cat_gray_jpg": "cat/gray.jpg", "cat_cmyk_JPEG": "cat/cmyk.JPEG"}
    converted |= {"dog_rgba_png": "dog/rgba.png", "dog_palette_png": "dog/palette.png"}
    for key, rel in converted.items():
        assert set(samples[key].fields) == {"png", "cls"}, key
        expected = np.asarray(Image.open(base / "train" / rel).convert("RGB"))
        assert (decode_rgb(samples[key].fields["png"]) == expected).all(), key
    labels = {k: int(s.fields["cls"]) for k, s in samples.items()}
    assert labels["cat_gray_jpg"] == 0 and labels["dog_rgba_png"] == 1 and labels["fish_nemo_jpeg"] == 2
    assert_picklable_and_deterministic(source, 1)


def test_imagefolder_val_uses_train_class_indices(tmp_path):
    base = make_imagefolder(tmp_path)
    val = get_source("imagefolder", str(base), "val")
    assert val.class_names() == ["cat", "dog", "fish"] and len(val) == 2
    assert [int(val.encode(i).fields["cls"]) for i in range(2)] == [0, 1]
    (base / "val" / "zebra").mkdir()
    with pytest.raises(SourceLayoutError, match="zebra"):
        get_source("imagefolder", str(base), "val")
    shutil.rmtree(base / "train")
    alone = get_source("imagefolder", str(base), "val")
    assert alone.class_names() == ["cat", "dog", "zebra"]


def test_imagefolder_layout_errors(tmp_path):
    base = make_imagefolder(tmp_path)
    with pytest.raises(SourceLayoutError, match=r"imagefolder/test"):
        get_source("imagefolder", str(base), "test")
    flat = tmp_path / "flat" / "val"
    flat.mkdir(parents=True)
    Image.new("RGB", (2, 2)).save(flat / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(SourceLayoutError, match="1 loose files"):
        get_source("imagefolder", str(tmp_path / "flat"), "val")


# --- segmentation --------------------------------------------------------------------------------


def test_cityscapes_maps_every_label_id(odd_tmp):
    base = make_cityscapes(odd_tmp)
    for split, frames in CITYSCAPES_FRAMES.items():
        source = get_source("cityscapes", str(base), split)
        assert len(source) == len(frames) and source.class_names() == CITYSCAPES_NAMES
        samples = encode_all(source)
        for sample, (city, seq, frame) in zip(samples, sorted(frames), strict=True):
            stem = f"{city}_{seq}_{frame}"
            assert sample.key == stem and set(sample.fields) == {"png", "mask.png"}
            assert (
                sample.fields["png"]
                == (base / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png").read_bytes()
            )
            ids = np.asarray(Image.open(base / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"))
            assert set(range(41)) <= set(ids.ravel().tolist())
            assert (
                decode_mask(sample.fields["mask.png"]) == expected_train_ids(ids, CITYSCAPES_TRAIN_IDS)
            ).all()
    assert_picklable_and_deterministic(source)


def test_cityscapes_missing_label_names_it(tmp_path):
    base = make_cityscapes(tmp_path)
    (base / "gtFine/train/bochum/bochum_000000_000313_gtFine_labelIds.png").unlink()
    with pytest.raises(
        SourceLayoutError, match="gtFine/train/bochum/bochum_000000_000313_gtFine_labelIds.png"
    ):
        get_source("cityscapes", str(base), "train")
    with pytest.raises(SourceLayoutError, match="leftImg8bit/test"):
        get_source("cityscapes", str(base), "test")


def test_cityscapes_reads_any_fsspec_url(tmp_path):
    base = make_cityscapes(tmp_path)
    fs = fsspec.filesystem("memory")
    fs.put(str(base), "/fcv-cityscapes", recursive=True)
    try:
        remote = get_source("cityscapes", "memory://fcv-cityscapes", "val")
        local = get_source("cityscapes", str(base), "val")
        assert [remote.encode(i) for i in range(len(remote))] == [local.encode(i) for i in range(len(local))]
    finally:
        fs.rm("/fcv-cityscapes", recursive=True)


def test_gta5_maps_palette_indices_as_label_ids(tmp_path):
    base = make_gta5(tmp_path)
    source = get_source("gta5", str(base), "all")
    assert source.splits[0] == "all" and len(source) == len(GTA5_NAMES)
    for sample, name in zip(encode_all(source), GTA5_NAMES, strict=True):
        assert sample.key == name
        assert sample.fields["png"] == (base / "images" / f"{name}.png").read_bytes()
        label = Image.open(base / "labels" / f"{name}.png")
        ids = np.asarray(label)  # for mode P: the palette index, i.e. the label id
        assert set(range(41)) <= set(ids.ravel().tolist())
        assert (decode_mask(sample.fields["mask.png"]) == expected_train_ids(ids, CITYSCAPES_TRAIN_IDS)).all()
    assert [s.key for s in encode_all(get_source("gta5", str(base), "train"))] == ["00001", "00003", "00004"]
    assert [s.key for s in encode_all(get_source("gta5", str(base), "val"))] == ["00002"]
    assert_picklable_and_deterministic(source)


def test_gta5_layout_errors_and_size_mismatch(tmp_path):
    base = make_gta5(tmp_path)
    (base / "val.txt").unlink()
    with pytest.raises(SourceLayoutError, match=r"gta5/val\.txt"):
        get_source("gta5", str(base), "val")
    (base / "train.txt").write_text("00001.png\n09999.png\n")
    with pytest.raises(SourceLayoutError, match=r"images/09999\.png"):
        get_source("gta5", str(base), "train")
    # a label of another size than its image is resized to it (nearest neighbour)
    Image.fromarray(np.full((3, 4), 26, np.uint8)).save(base / "labels" / "00004.png")
    sample = get_source("gta5", str(base), "all").encode(3)
    assert (decode_mask(sample.fields["mask.png"]) == 13).all()
    assert decode_mask(sample.fields["mask.png"]).shape == decode_rgb(sample.fields["png"]).shape[:2]
    (base / "labels" / "00002.png").unlink()
    with pytest.raises(SourceLayoutError, match=r"labels/00002\.png"):
        get_source("gta5", str(base), "all")


def test_synthia_reads_16bit_labels_and_maps_them(odd_tmp):
    base = make_synthia(odd_tmp)
    source = get_source("synthia", str(base), "all")
    assert len(source) == len(SYNTHIA_NAMES) and source.class_names() == CITYSCAPES_NAMES
    for sample, name in zip(encode_all(source), SYNTHIA_NAMES, strict=True):
        assert sample.key == name
        assert sample.fields["png"] == (base / "RGB" / f"{name}.png").read_bytes()
        w, h, rows, info = png.Reader(filename=str(base / "GT/LABELS" / f"{name}.png")).read()
        assert info["bitdepth"] == 16 and info["planes"] == 3
        class_ids = np.array([list(r) for r in rows]).reshape(h, w, 3)[:, :, 0]
        assert {0, 3, 40, 259, 65535} <= set(class_ids.ravel().tolist())
        assert (
            decode_mask(sample.fields["mask.png"]) == expected_train_ids(class_ids, SYNTHIA_TRAIN_IDS)
        ).all()
    present = source.extra_manifest()["classes_present"]
    assert len(present) == 16
    assert {c["train_id"] for c in present} == set(range(19)) - {9, 14, 16}
    assert all(c["name"] == CITYSCAPES_NAMES[c["train_id"]] for c in present)
    assert_picklable_and_deterministic(source)


def test_synthia_layout_errors(tmp_path):
    base = make_synthia(tmp_path)
    (base / "GT/LABELS/0000001.png").unlink()
    with pytest.raises(SourceLayoutError, match=r"GT/LABELS/0000001\.png"):
        get_source("synthia", str(base), "all")
    shutil.rmtree(base / "GT")
    with pytest.raises(SourceLayoutError, match=r"GT/LABELS"):
        get_source("synthia", str(base), "all")


# --- video features ------------------------------------------------------------------------------


def test_video_features_csv_splits_and_float32(odd_tmp):
    base = make_video_features(odd_tmp)
    for split in ("train", "val", "test"):
        source = get_source("video-features", str(base), split)
        rows = sorted(r for r in VIDEO_ROWS if r[2] == split)
        assert len(source) == len(rows) and source.class_names() == ["archery", "bowling", "cooking"]
        for sample, (rel, label, *_rest) in zip(encode_all(source), rows, strict=True):
            assert sample.key == rel[: -len(".npy")].replace("/", "_")
            features = np.load(io.BytesIO(sample.fields["features.npy"]), allow_pickle=False)
            original = np.load(base / rel)
            assert features.dtype == np.float32 and features.shape == original.shape
            assert (features == original.astype(np.float32)).all()
            assert source.class_names()[int(sample.fields["cls"])] == label
    assert_picklable_and_deterministic(source)


def test_video_features_json_forms_and_class_list(tmp_path):
    base = tmp_path / "v"
    for seed, rel in enumerate(["b.npy", "a.npy", "c.npy"]):
        write_features(base, rel, 2, "float32", seed)
    # a list without split: everything is train; int labels name "0".."N-1"
    (base / "index.json").write_text(
        json.dumps([{"path": "b.npy", "label": 2}, {"path": "a.npy", "label": 0}])
    )
    source = get_source("video-features", str(base), "train")
    assert source.class_names() == ["0", "1", "2"]
    assert [(s.key, int(s.fields["cls"])) for s in encode_all(source)] == [("a", 0), ("b", 2)]
    with pytest.raises(SourceLayoutError, match="no split column"):
        get_source("video-features", str(base), "val")
    # a dict with classes; names and indices both accepted
    doc = {
        "classes": ["x", "y"],
        "videos": [
            {"path": "c.npy", "label": "y", "split": "val"},
            {"path": "a.npy", "label": 0, "split": "val"},
        ],
    }
    (base / "index.json").write_text(json.dumps(doc))
    source = get_source("video-features", str(base), "val")
    assert source.class_names() == ["x", "y"]
    assert [(s.key, int(s.fields["cls"])) for s in encode_all(source)] == [("a", 0), ("c", 1)]
    # classes.txt wins over the JSON list
    (base / "classes.txt").write_text("p\nq\ny\n")
    assert [int(s.fields["cls"]) for s in encode_all(get_source("video-features", str(base), "val"))] == [
        0,
        2,
    ]


def test_video_features_errors(tmp_path):
    base = make_video_features(tmp_path)
    (base / "features/archery/v_004.npy").unlink()
    with pytest.raises(SourceLayoutError, match=r"features/archery/v_004\.npy"):
        get_source("video-features", str(base), "val")
    (base / "index.csv").write_text("path,label,split\nfeatures/bowling/v_003.npy,bowling,dev\n")
    with pytest.raises(SourceLayoutError, match="'dev'"):
        get_source("video-features", str(base), "train")
    (base / "classes.txt").write_text("archery\n")
    (base / "index.csv").write_text("path,label\nfeatures/bowling/v_003.npy,bowling\n")
    with pytest.raises(SourceLayoutError, match="'bowling'"):
        get_source("video-features", str(base), "train")
    (base / "index.csv").unlink()
    with pytest.raises(SourceLayoutError, match=r"index\.csv.*index\.json"):
        get_source("video-features", str(base), "train")
    np.save(base / "bad.npy", np.zeros(3, np.float32))
    (base / "index.csv").write_text("path,label\nbad.npy,0\n")
    with pytest.raises(FrugalError, match="shape"):
        get_source("video-features", str(base), "train").encode(0)


# --- digits --------------------------------------------------------------------------------------


def test_digits_split_rule_and_images():
    from sklearn.datasets import load_digits

    digits = load_digits()
    train, test = get_source("digits", "sklearn", "train"), get_source("digits", "-", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.class_names() == [str(d) for d in range(10)]
    for source, indices in ((train, [1, 2, 1796]), (test, [0, 5, 1795])):
        for i in indices:
            sample = source.encode(source.indices.index(i))
            assert sample.key == f"digits_{i:04d}" and int(sample.fields["cls"]) == digits.target[i]
            gray = np.floor(digits.images[i] * 255 / 16 + 0.5).astype(np.uint8)
            expected = np.asarray(Image.fromarray(gray).resize((32, 32), Image.Resampling.BILINEAR))
            image = decode_rgb(sample.fields["png"])
            assert image.shape == (32, 32, 3) and (image == expected[:, :, None]).all()
    assert len({test.encode(i).key for i in range(len(test))}) == 360
    assert_picklable_and_deterministic(train, 100)
    with pytest.raises(SourceLayoutError, match="'sklearn' or '-'"):
        get_source("digits", "/data/digits", "train")
