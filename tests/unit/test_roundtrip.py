"""Each dataset kind through the whole path: fixture -> write_shards -> iter_samples."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from dataset_fixtures import (
    make_cifar10,
    make_cifar100,
    make_cityscapes,
    make_gta5,
    make_imagefolder,
    make_synthia,
    make_video_features,
)
from PIL import Image

from frugalcv.sharding import iter_samples, load_manifest, write_shards
from frugalcv.sharding.sources import get_source

# kind -> (fixture builder, the splits it has)
FIXTURES = {
    "cifar10": (make_cifar10, {"train", "test"}),
    "cifar100": (make_cifar100, {"train", "test"}),
    "imagefolder": (make_imagefolder, {"train", "val"}),
    "cityscapes": (make_cityscapes, {"train", "val"}),
    "gta5": (make_gta5, {"all", "train", "val"}),
    "synthia": (make_synthia, {"all"}),
    "video-features": (make_video_features, {"train", "val", "test"}),
}


def expected_samples(source) -> list[dict]:
    """The source's samples decoded independently of the reader, in the documented sample dicts."""
    out = []
    for i in range(len(source)):
        sample = source.encode(i)
        d: dict = {"key": sample.key}
        for ext, data in sample.fields.items():
            if ext in ("png", "jpg"):
                d["image"] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            elif ext == "mask.png":
                d["mask"] = np.asarray(Image.open(io.BytesIO(data)))
            elif ext == "cls":
                d["label"] = int(data)
            elif ext == "features.npy":
                d["features"] = np.load(io.BytesIO(data), allow_pickle=False)
        out.append(d)
    return out


def assert_same(got: list[dict], want: list[dict]) -> None:
    assert [g["key"] for g in got] == [w["key"] for w in want]
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w), g["key"]
        for name, value in w.items():
            if isinstance(value, np.ndarray):
                assert g[name].dtype == value.dtype and g[name].shape == value.shape, (g["key"], name)
                assert (g[name] == value).all(), (g["key"], name)
            else:
                assert g[name] == value, (g["key"], name)


@pytest.mark.parametrize("kind", sorted(FIXTURES))
def test_every_split_survives_sharding(tmp_path, kind):
    make, splits = FIXTURES[kind]
    src = str(make(tmp_path / "src"))
    dst = tmp_path / "shards"
    manifests = write_shards(kind, src, str(dst), max_shard_samples=3, progress=False)
    assert set(manifests) == splits
    for split, manifest in manifests.items():
        source = get_source(kind, src, split)
        got = list(iter_samples(str(dst / split)))
        assert_same(got, expected_samples(source))
        on_disk = load_manifest(str(dst / split))
        assert on_disk.num_samples == len(source) and on_disk.classes == source.class_names()
        assert on_disk.task == source.task and on_disk.extra == json.loads(
            json.dumps(source.extra_manifest())
        )
        assert manifest.num_samples == len(source)
        if source.task == "classification":
            assert all(0 <= s["label"] < len(source.class_names()) for s in got)
        if source.task == "segmentation":
            assert all(s["mask"].shape == s["image"].shape[:2] for s in got)


def test_one_split_on_request(tmp_path):
    video = str(make_video_features(tmp_path / "video"))
    only_val = write_shards("video-features", video, str(tmp_path / "v"), split="val", progress=False)
    assert set(only_val) == {"val"} and only_val["val"].num_samples == 1


def test_digits_shards_offline(tmp_path):
    manifests = write_shards(
        "digits", "sklearn", str(tmp_path), split="test", max_shard_samples=100, progress=False
    )
    assert manifests["test"].num_samples == 360 and len(manifests["test"].shards) == 4
    samples = list(iter_samples(str(tmp_path / "test")))
    assert_same(samples[:20], expected_samples(get_source("digits", "-", "test"))[:20])
    assert all(s["image"].shape == (32, 32, 3) for s in samples)


def test_parallel_writing_gives_the_same_shards(tmp_path):
    kwargs = {"split": "test", "max_shard_samples": 100, "progress": False}
    a = write_shards("digits", "sklearn", str(tmp_path / "a"), **kwargs)["test"]
    b = write_shards("digits", "sklearn", str(tmp_path / "b"), workers=2, **kwargs)["test"]
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards] and len(a.shards) == 4
