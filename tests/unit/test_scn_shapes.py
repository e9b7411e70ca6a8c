"""The generated SCN shapes: determinism, counts, the offsets' directions, the record format, decoding."""

import io
import json
import pickle

import numpy as np
import pytest
from PIL import Image

from frugalcv.errors import ShardError, SourceLayoutError
from frugalcv.sharding.decode import decode_sample
from frugalcv.sharding.sources import get_source
from frugalcv.sharding.sources.scn_shapes import (
    BAND,
    CLASSES,
    GAP,
    IMAGE_SIZE,
    PATCH,
    pair_kinds,
    shapes_pair,
)


def test_counts_per_split_and_kind():
    kinds = pair_kinds()
    assert {s: len(k) for s, k in kinds.items()} == {"train": 600, "test": 200}
    every = kinds["train"] + kinds["test"]
    assert {k: every.count(k) for k in set(every)} == {"square": 300, "triangle": 300, "black": 200}
    assert len(get_source("scn-shapes", "-", "train")) == 600 and len(get_source("scn-shapes", "-", "test")) == 200
    assert len(set(kinds["test"])) == 3  # every kind is tested


def test_deterministic_and_picklable():
    source = get_source("scn-shapes", "-", "test")
    assert source.encode(3) == get_source("scn-shapes", "-", "test").encode(3)
    assert pickle.loads(pickle.dumps(source)).encode(5) == source.encode(5)
    assert source.encode(3) != source.encode(4)
    assert get_source("scn-shapes", "-", "train").encode(0).key == "train_000000_00"


def test_src_must_be_a_dash():
    with pytest.raises(SourceLayoutError, match="SRC must be '-'"):
        get_source("scn-shapes", "/data/shapes", "train")


@pytest.mark.parametrize("split", ["train", "test"])
def test_offset_directions_follow_the_partner_kind(split):
    for i in range(0, len(pair_kinds()[split]), 7):
        pair = shapes_pair(split, i)
        (ax, ay, ax2, ay2), (bx, by, _, _) = pair["box_a"], pair["box_b"]
        assert ax2 - ax == PATCH and ay2 - ay == PATCH and min(ax, ay) >= 0 and max(ax2, ay2) <= IMAGE_SIZE
        dx, dy = abs(ax - bx), abs(ay - by)
        if pair["kind"] == "square":
            assert dy <= BAND and dx >= GAP
        elif pair["kind"] == "triangle":
            assert dx <= BAND and dy >= GAP
        else:
            assert dx >= GAP and dy >= GAP


def test_record_format_and_decoding():
    sample = get_source("scn-shapes", "-", "train").encode(1)
    assert set(sample.fields) == {"a.png", "b.png", "offset.npy", "a.cls", "b.cls", "pair.json"}
    meta = json.loads(sample.fields["pair.json"])
    offset = np.load(io.BytesIO(sample.fields["offset.npy"]), allow_pickle=False)
    x1, y1, x2, y2 = meta["box_a"]
    u1, v1, u2, v2 = meta["box_b"]
    expected = np.array([x1 - u1, y1 - v1, x2 - u2, y1 - v1, x2 - u2, y2 - v2, x1 - u1, y2 - v2]) / IMAGE_SIZE
    assert offset.dtype == np.float32 and np.allclose(offset, expected)
    assert meta["image_size"] == [IMAGE_SIZE, IMAGE_SIZE] and meta["image"] == "train_000001"
    decoded = decode_sample(sample.key, sample.fields)
    assert decoded["a"].shape == decoded["b"].shape == (PATCH, PATCH, 3)
    assert decoded["b_label"] == CLASSES.index("circle") and decoded["a_label"] in (1, 2, 3)
    assert np.array_equal(decoded["offset"], offset) and decoded["pair"] == meta
    assert Image.open(io.BytesIO(sample.fields["a.png"])).mode == "RGB"


def test_black_partners_are_black_and_circles_bright():
    for i, kind in enumerate(pair_kinds()["train"][:40]):
        d = decode_sample("k", get_source("scn-shapes", "-", "train").encode(i).fields)
        centre = d["b"][12:20, 12:20].mean()
        assert centre > 180, (i, centre)
        if kind == "black":
            assert d["a"].mean() < 20


def test_a_bad_offset_member_is_named():
    fields = dict(get_source("scn-shapes", "-", "train").encode(0).fields)
    buf = io.BytesIO()
    np.save(buf, np.zeros(4, np.float32))
    fields["offset.npy"] = buf.getvalue()
    with pytest.raises(ShardError, match=r"train_000000_00\.offset\.npy.*8 finite corner offsets"):
        decode_sample("train_000000_00", fields, "shard-000000.tar")
