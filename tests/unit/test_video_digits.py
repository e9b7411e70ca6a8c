"""The generated digit videos: determinism, shapes, where the class shows, shards and decoding."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import pickle

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from frugalcv.cli import main
from frugalcv.errors import ShardError, SourceLayoutError
from frugalcv.sharding import iter_samples
from frugalcv.sharding.decode import decode_sample
from frugalcv.sharding.sources import get_source
from frugalcv.sharding.sources.video_digits import VideoDigitsSource, digit_pools, split_labels
from frugalcv.sharding.writer import write_split


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def decoded(sample) -> tuple[np.ndarray, np.ndarray, int]:
    fields = sample.fields
    frames = np.load(io.BytesIO(fields["frames.npy"]), allow_pickle=False)
    informative = np.load(io.BytesIO(fields["informative.npy"]), allow_pickle=False)
    return frames, informative, int(fields["cls"])


@functools.lru_cache(maxsize=2)
def videos(split: str, n: int) -> tuple[tuple[np.ndarray, np.ndarray, int], ...]:
    source = get_source("video-digits", "sklearn", split)
    return tuple(decoded(source.encode(i)) for i in range(n))


def test_splits_names_manifest_and_src():
    sizes = {split: len(get_source("video-digits", "-", split)) for split in ("train", "val")}
    assert sizes == {"train": 1200, "val": 300}
    source = get_source("video-digits", "sklearn", "train")
    assert source.task == "video_frames" and source.class_names() == [str(d) for d in range(10)]
    assert source.extra_manifest() == {"frames": 16, "frame_size": [32, 32], "coarse_size": [8, 8]}
    assert set(source.schema()) == {"frames.npy", "informative.npy", "cls"}
    assert source.encode(7).key == "train_0007"
    with pytest.raises(SourceLayoutError, match="'sklearn' or '-'"):
        get_source("video-digits", "/data/digits", "train")


def test_videos_are_deterministic_and_differ_between_videos_and_splits():
    source = get_source("video-digits", "sklearn", "val")
    clone = pickle.loads(pickle.dumps(source))
    assert source.encode(3) == source.encode(3) == clone.encode(3)
    a = source.encode(0).fields["frames.npy"]
    assert a != source.encode(1).fields["frames.npy"]
    assert a != get_source("video-digits", "sklearn", "train").encode(0).fields["frames.npy"]


def test_shapes_dtypes_and_where_the_class_shows():
    marks = []
    for frames, informative, label in videos("val", 60):
        assert frames.shape == (16, 32, 32, 3) and frames.dtype == np.uint8
        assert informative.shape == (16,) and informative.dtype == np.uint8
        assert set(np.unique(informative).tolist()) <= {0, 1} and 0 <= label < 10
        marks.append(informative)
    marks = np.array(marks)
    assert set(marks.sum(1).tolist()) <= set(range(2, 7)) and len(set(marks.sum(1).tolist())) >= 4
    assert len({tuple(m) for m in marks}) >= 0.9 * len(marks)  # positions vary from video to video
    assert marks.any(0).all()  # every position is informative in some video
    assert 0.25 <= (marks[:, :4].sum(1) == 0).mean() <= 0.7  # the first frames often miss the class


def test_classes_are_balanced_and_the_splits_use_disjoint_digits():
    assert (np.bincount(split_labels("train")) == 120).all()
    assert (np.bincount(split_labels("val")) == 30).all()
    counts = np.bincount([label for _, _, label in videos("val", 60)], minlength=10)
    assert counts.min() >= 2 and counts.max() <= 12
    from sklearn.datasets import load_digits

    images = load_digits().images
    even, odd = ({im.tobytes() for im in images[p::2]} for p in (0, 1))
    train, val = (np.concatenate(digit_pools(split)) for split in ("train", "val"))
    assert len(train) + len(val) == len(images)
    assert all(im.tobytes() in even for im in train) and all(im.tobytes() in odd for im in val)


# Nearest template: normalised correlation with the class means of sklearn's digits, best over
# positions and a few sizes. Good enough to read a digit, blind to where the video hides it.
SIZES = (10, 12, 24, 28, 32)


@functools.lru_cache(maxsize=1)
def templates() -> dict[int, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    means = [data.images[data.target == c].mean(0).astype(np.float32) for c in range(10)]
    out = {}
    for s in SIZES:
        t = np.stack([np.asarray(Image.fromarray(m, mode="F").resize((s, s), Image.BILINEAR)) for m in means])
        t = t.reshape(10, -1) - t.reshape(10, -1).mean(1, keepdims=True)
        out[s] = t / np.linalg.norm(t, axis=1, keepdims=True)
    return out


def nearest_template(frame: np.ndarray) -> int:
    grey = frame.astype(np.float64).mean(-1)
    best = np.full(10, -np.inf)
    for s, t in templates().items():
        windows = sliding_window_view(grey, (s, s)).reshape(-1, s * s)
        windows = windows - windows.mean(1, keepdims=True)
        windows /= np.linalg.norm(windows, axis=1, keepdims=True) + 1e-6
        best = np.maximum(best, (windows @ t.T).max(0))
    return int(best.argmax())


def coarse_view(frame: np.ndarray) -> np.ndarray:
    """8x8 average pooling, shown again at 32x32."""
    pooled = frame.reshape(8, 4, 8, 4, 3).mean((1, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(pooled).resize((32, 32), Image.BILINEAR))


def test_informative_frames_show_the_class_and_clutter_does_not():
    fine, coarse, clutter = [], [], []
    for frames, informative, label in videos("val", 30):
        for frame, shows in zip(frames, informative, strict=True):
            if shows:
                fine.append(nearest_template(frame) == label)
                coarse.append(nearest_template(coarse_view(frame)) == label)
            else:
                clutter.append(nearest_template(frame) == label)
    assert np.mean(fine) >= 0.7, np.mean(fine)
    assert np.mean(clutter) <= 0.2, np.mean(clutter)  # chance is 0.1
    assert np.mean(fine) - np.mean(coarse) >= 0.15, (np.mean(fine), np.mean(coarse))  # weak digits


class FirstVideos(VideoDigitsSource):
    """The first few videos of a split: enough to shard through a process pool quickly."""

    def __len__(self) -> int:
        return 6


def test_shards_are_the_same_with_a_process_pool(tmp_path):
    digests = []
    for workers, out in ((0, tmp_path / "a"), (2, tmp_path / "b")):
        write_split(
            FirstVideos("sklearn", "val"), str(out), max_shard_samples=4, workers=workers, progress=False
        )
        digests.append(
            {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}
        )
    assert digests[0] == digests[1] and len(digests[0]) == 2


def test_cli_writes_a_split_that_reads_back(odd_tmp):
    assert main(["shard", "video-digits", "sklearn", str(odd_tmp), "--split", "val", "--no-progress"]) == 0
    manifest = json.loads((odd_tmp / "val" / "manifest.json").read_text())
    assert manifest["kind"] == "video-digits" and manifest["task"] == "video_frames"
    assert manifest["extra"] == {"frames": 16, "frame_size": [32, 32], "coarse_size": [8, 8]}
    assert not (odd_tmp / "train").exists()
    samples = list(iter_samples(str(odd_tmp / "val")))
    assert len(samples) == 300 and set(samples[0]) == {"key", "frames", "label", "informative"}
    frames, informative, label = videos("val", 60)[5]
    assert samples[5]["key"] == "val_0005" and samples[5]["label"] == label
    assert samples[5]["frames"].dtype == np.uint8 and (samples[5]["frames"] == frames).all()
    assert (samples[5]["informative"] == informative).all()


GOOD = np.zeros((16, 32, 32, 3), np.uint8)


@pytest.mark.parametrize(
    ("member", "array", "match"),
    [
        (
            "frames.npy",
            GOOD.astype(np.float32),
            r"v_0001\.frames\.npy.*float32.*expected uint8 \[T, H, W, 3\]",
        ),
        ("frames.npy", GOOD[..., 0], r"v_0001\.frames\.npy.*shape \[16, 32, 32\]"),
        ("informative.npy", np.zeros((16, 1), np.uint8), r"v_0001\.informative\.npy.*uint8 \[T\]"),
        ("informative.npy", np.full(16, 2, np.uint8), r"v_0001\.informative\.npy.*0 or 1"),
        ("informative.npy", np.zeros(15, np.uint8), r"v_0001\.informative\.npy has 15 marks for 16 frames"),
    ],
)
def test_bad_arrays_are_refused_naming_the_member(member, array, match):
    fields = {"frames.npy": npy(GOOD), "informative.npy": npy(np.zeros(16, np.uint8)), "cls": b"3"}
    fields[member] = npy(array)
    with pytest.raises(ShardError, match=match):
        decode_sample("v_0001", fields, "mem://val-000000.tar")


class FloatFrames(FirstVideos):
    def encode(self, index: int):
        sample = super().encode(index)
        frames = np.load(io.BytesIO(sample.fields["frames.npy"])).astype(np.float32) / 255
        return type(sample)(sample.key, {**sample.fields, "frames.npy": npy(frames)})


def test_a_shard_with_float_frames_is_refused_when_read(tmp_path):
    write_split(FloatFrames("sklearn", "val"), str(tmp_path / "val"), progress=False)
    with pytest.raises(ShardError, match=r"val-000000\.tar: member val_0000\.frames\.npy.*float32"):
        list(iter_samples(str(tmp_path / "val")))
