"""The generated digit scenes: layout, determinism, the neighbour rule, the classes stored, disjoint
source digits per split, the record format."""

import io
import json
import pickle

import numpy as np
import pytest
from sklearn.datasets import load_digits

from frugalcv.errors import SourceLayoutError
from frugalcv.sharding.decode import decode_sample
from frugalcv.sharding.sources import get_source
from frugalcv.sharding.sources.scn_digit_scenes import (
    CELL,
    CROP_SIZE,
    GRID,
    IMAGE_SIZE,
    PAIRS_PER_SCENE,
    PATCH,
    SCENES,
    cell_class,
    neighbour_pairs,
    scene,
    scene_pairs,
    source_digits,
)

TARGETS = load_digits().target


def decoded(split: str, index: int) -> dict:
    sample = get_source("scn-digit-scenes", "-", split).encode(index)
    return decode_sample(sample.key, sample.fields)


def test_counts_keys_and_src():
    for split, scenes in SCENES.items():
        assert len(get_source("scn-digit-scenes", "sklearn", split)) == scenes * PAIRS_PER_SCENE
    source = get_source("scn-digit-scenes", "-", "train")
    assert [source.encode(i).key for i in (0, 3, 4)] == ["train_000000_00", "train_000000_03", "train_000001_00"]
    assert source.class_names() == [str(d) for d in range(10)]
    with pytest.raises(SourceLayoutError, match="SRC must be '-' or 'sklearn'"):
        get_source("scn-digit-scenes", "/data/digits", "train")


def test_deterministic_and_picklable():
    source = get_source("scn-digit-scenes", "-", "test")
    assert source.encode(5) == get_source("scn-digit-scenes", "-", "test").encode(5)
    assert pickle.loads(pickle.dumps(source)).encode(9) == source.encode(9)
    assert source.encode(5) != source.encode(6)
    assert not np.array_equal(scene("train", 0)["image"], scene("test", 0)["image"])


def test_neighbour_pairs_are_the_24_ordered_4_neighbours_of_the_grid():
    pairs = neighbour_pairs()
    assert len(pairs) == len(set(pairs)) == 24
    assert all(abs(ra - rb) + abs(ca - cb) == 1 for (ra, ca), (rb, cb) in pairs)


@pytest.mark.parametrize("split", ["train", "test"])
def test_scene_layout_and_the_rule(split):
    for index in range(0, SCENES[split], 13):
        drawn = scene(split, index)
        assert drawn["image"].shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and drawn["image"].dtype == np.uint8
        first = drawn["classes"][0]
        for cell, (cls, digit, (x, y)) in enumerate(zip(drawn["classes"], drawn["digits"], drawn["centres"], strict=True)):
            row, col = divmod(cell, GRID)
            assert cls == cell_class(first, row, col) == TARGETS[digit]
            assert col * CELL <= x < (col + 1) * CELL and row * CELL <= y < (row + 1) * CELL
        for right in range(GRID * GRID):  # the digit right of d is d+1, the one below d+3
            row, col = divmod(right, GRID)
            if col:
                assert drawn["classes"][right] == (drawn["classes"][right - 1] + 1) % 10
            if row:
                assert drawn["classes"][right] == (drawn["classes"][right - GRID] + 3) % 10


def test_pairs_crop_neighbouring_digits_and_carry_their_classes():
    for index in range(0, 40, 3):
        d = decoded("train", index)
        (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = d["pair"]["box_a"], d["pair"]["box_b"]
        for x1, y1, x2, y2 in (d["pair"]["box_a"], d["pair"]["box_b"]):
            assert x2 - x1 == y2 - y1 and CROP_SIZE[0] <= x2 - x1 <= CROP_SIZE[1]
            assert x1 >= 0 and y1 >= 0 and x2 <= IMAGE_SIZE and y2 <= IMAGE_SIZE
        assert d["a"].shape == d["b"].shape == (PATCH, PATCH, 3)
        digit_a, digit_b = d["pair"]["digits"]
        assert (d["a_label"], d["b_label"]) == (TARGETS[digit_a], TARGETS[digit_b])
        dx, dy = (ax1 + ax2 - bx1 - bx2) / 2, (ay1 + ay2 - by1 - by2) / 2  # centre of X_i minus centre of X_j
        if abs(dx) > abs(dy):  # X_i right (+1) or left (-1) of X_j
            assert d["a_label"] == (d["b_label"] + (1 if dx > 0 else -1)) % 10
        else:  # X_i below (+3) or above (-3)
            assert d["a_label"] == (d["b_label"] + (3 if dy > 0 else -3)) % 10


def test_one_scene_holds_distinct_pairs():
    cells = [(p["cell_a"], p["cell_b"]) for p in scene_pairs("test", 7)]
    assert len(cells) == len(set(cells)) == PAIRS_PER_SCENE


def test_train_and_test_draw_on_disjoint_digits_the_digits_kind_keeps_for_test():
    pools = {split: np.concatenate(source_digits(split)) for split in SCENES}
    assert not set(pools["train"]) & set(pools["test"])
    assert sorted(np.concatenate(list(pools.values())).tolist()) == list(range(0, len(TARGETS), 5))
    for split in SCENES:
        for cls, pool in enumerate(source_digits(split)):
            assert len(pool) >= 10 and (TARGETS[pool] == cls).all()
    used = {split: {digit for i in range(0, SCENES[split], 5) for digit in scene(split, i)["digits"]}
            for split in SCENES}
    assert used["train"] <= set(pools["train"]) and used["test"] <= set(pools["test"])
    digits_test_keys = {s.key for s in map(get_source("digits", "sklearn", "test").encode, range(3))}
    assert digits_test_keys == {"digits_0000", "digits_0005", "digits_0010"}  # the same i % 5 == 0 rule


def test_record_format():
    sample = get_source("scn-digit-scenes", "-", "test").encode(2)
    assert set(sample.fields) == {"a.png", "b.png", "offset.npy", "a.cls", "b.cls", "pair.json"}
    meta = json.loads(sample.fields["pair.json"])
    offset = np.load(io.BytesIO(sample.fields["offset.npy"]), allow_pickle=False)
    (x1, y1, x2, y2), (u1, v1, u2, v2) = meta["box_a"], meta["box_b"]
    expected = np.array([x1 - u1, y1 - v1, x2 - u2, y1 - v1, x2 - u2, y2 - v2, x1 - u1, y2 - v2]) / IMAGE_SIZE
    assert offset.dtype == np.float32 and np.allclose(offset, expected)
    assert meta["image"] == "test_000000" and meta["image_size"] == [IMAGE_SIZE, IMAGE_SIZE]
    assert len(meta["digits"]) == 2
