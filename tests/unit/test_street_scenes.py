"""The generated street-scenes domain pair: determinism, labels, the domain gap, shards."""

from __future__ import annotations

import hashlib
import io
import json
import pickle

import numpy as np
import pytest
from PIL import Image

from frugalcv.cli import main
from frugalcv.errors import SourceLayoutError
from frugalcv.sharding import iter_samples
from frugalcv.sharding.sources import get_source
from frugalcv.sharding.sources.street_scenes import StreetScenesSource
from frugalcv.sharding.writer import write_split

CITYSCAPES_NAMES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]  # fmt: skip


def decode(sample) -> tuple[np.ndarray, np.ndarray]:
    image, mask = (
        Image.open(io.BytesIO(sample.fields["png"])),
        Image.open(io.BytesIO(sample.fields["mask.png"])),
    )
    assert image.mode == "RGB" and mask.mode == "L" and mask.format == "PNG"
    return np.asarray(image), np.asarray(mask)


def decoded(split: str, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    source = get_source("street-scenes", "sklearn", split)
    return [decode(source.encode(i)) for i in range(n)]


def test_splits_names_manifest_and_src():
    sizes = {split: len(get_source("street-scenes", "-", split)) for split in ("source", "target", "val")}
    assert sizes == {"source": 600, "target": 600, "val": 120}
    source, val = (
        get_source("street-scenes", "sklearn", "source"),
        get_source("street-scenes", "sklearn", "val"),
    )
    assert source.class_names() == CITYSCAPES_NAMES and source.task == "segmentation"
    assert source.extra_manifest() == {"domain": "source", "image_size": [64, 128]}
    assert val.extra_manifest() == {"domain": "target", "image_size": [64, 128]}
    assert set(source.schema()) == {"png", "mask.png"}
    assert source.encode(7).key == "source_0007" and val.encode(119).key == "val_0119"
    with pytest.raises(SourceLayoutError, match="'sklearn' or '-'"):
        get_source("street-scenes", "/data/streets", "source")


def test_samples_are_deterministic_and_differ_between_samples_and_splits():
    for split in ("source", "target"):
        source = get_source("street-scenes", "sklearn", split)
        clone = pickle.loads(pickle.dumps(source))
        assert source.encode(3) == source.encode(3) == clone.encode(3)
    a = get_source("street-scenes", "sklearn", "target").encode(0).fields
    b = get_source("street-scenes", "sklearn", "val").encode(0).fields
    c = get_source("street-scenes", "sklearn", "target").encode(1).fields
    assert a["mask.png"] != b["mask.png"] and a["mask.png"] != c["mask.png"]


@pytest.mark.parametrize("split", ["source", "target"])
def test_shapes_and_labels(split):
    samples = decoded(split, 20)
    seen = set()
    for image, mask in samples:
        assert image.shape == (64, 128, 3) and image.dtype == np.uint8
        assert mask.shape == (64, 128) and mask.dtype == np.uint8
        values = set(np.unique(mask).tolist())
        assert values <= set(range(19)) | {255}
        assert (mask == 255).mean() < 0.01
        assert len(values) >= 5  # every scene has sky, road, sidewalk, ... not one flat class
        seen |= values
    for name in ("road", "sidewalk", "building", "pole", "vegetation", "terrain", "sky", "car", "person"):
        assert CITYSCAPES_NAMES.index(name) in seen, name
    assert len(seen - {255}) >= 8


def class_means(samples) -> dict[int, np.ndarray]:
    pixels = np.concatenate([image.reshape(-1, 3) for image, _ in samples]).astype(np.float64)
    labels = np.concatenate([mask.ravel() for _, mask in samples])
    return {int(k): pixels[labels == k].mean(0) for k in np.unique(labels) if (labels == k).sum() >= 50}


def test_the_domains_differ_in_colour_statistics_that_alignment_reduces():
    source, target = decoded("source", 20), decoded("target", 20)
    src_means, tgt_means = class_means(source), class_means(target)
    common = sorted(set(src_means) & set(tgt_means))
    assert len(common) >= 8
    gap = np.array([np.linalg.norm(src_means[k] - tgt_means[k]) for k in common])
    assert (gap > 25).mean() >= 0.7, dict(zip(common, gap.round(1), strict=True))
    # Matching the target's per-channel mean and std to the source's brings the classes closer.
    src_px = np.concatenate([im.reshape(-1, 3) for im, _ in source]).astype(np.float64)
    tgt_px = np.concatenate([im.reshape(-1, 3) for im, _ in target]).astype(np.float64)
    aligned = {
        k: (tgt_means[k] - tgt_px.mean(0)) / tgt_px.std(0) * src_px.std(0) + src_px.mean(0) for k in common
    }
    after = np.array([np.linalg.norm(src_means[k] - aligned[k]) for k in common])
    assert after.mean() < 0.75 * gap.mean()


class FirstSamples(StreetScenesSource):
    """The first dozen samples of a split: enough to shard through a process pool quickly."""

    def __len__(self) -> int:
        return 12


def test_shards_are_the_same_with_a_process_pool(tmp_path):
    digests = []
    for workers, out in ((0, tmp_path / "a"), (2, tmp_path / "b")):
        write_split(
            FirstSamples("sklearn", "target"), str(out), max_shard_samples=5, workers=workers, progress=False
        )
        digests.append(
            {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}
        )
    assert digests[0] == digests[1] and len(digests[0]) == 3


def test_cli_writes_a_split_that_reads_back(odd_tmp, capsys):
    assert main(["shard", "street-scenes", "sklearn", str(odd_tmp), "--split", "val", "--no-progress"]) == 0
    manifest = json.loads((odd_tmp / "val" / "manifest.json").read_text())
    assert manifest["kind"] == "street-scenes" and manifest["extra"]["domain"] == "target"
    assert not (odd_tmp / "source").exists()
    samples = list(iter_samples(str(odd_tmp / "val")))
    assert len(samples) == 120 and set(samples[0]) == {"key", "image", "mask"}
    image, mask = decode(get_source("street-scenes", "sklearn", "val").encode(5))
    assert samples[5]["key"] == "val_0005"
    assert (samples[5]["image"] == image).all() and (samples[5]["mask"] == mask).all()
