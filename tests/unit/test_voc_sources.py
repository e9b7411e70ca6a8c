"""The Pascal VOC kinds (``voc``, ``voc-pairs``) and the patch-pair functions, on a tiny VOC tree."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from voc_fixtures import VOC_IMAGES, make_voc

from frugalcv.errors import ConfigError, FrugalError, SourceLayoutError
from frugalcv.sharding import iter_samples, load_manifest, write_shards
from frugalcv.sharding.sources import get_source
from frugalcv.sharding.sources._proposals import read_proposals
from frugalcv.sharding.sources.patch_pairs import ordered_pairs, pair_offset

VOC_ORDER = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
             "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


@pytest.fixture
def voc(tmp_path):
    return make_voc(tmp_path)


def npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def test_offset_is_corners_of_a_minus_corners_of_b_over_the_image_size():
    a, b = (10.0, 20.0, 30.0, 60.0), (50.0, 0.0, 100.0, 40.0)  # a left of and below b
    # by hand: corners (x1,y1),(x2,y1),(x2,y2),(x1,y2); x / 200, y / 100
    want = [(10 - 50) / 200, (20 - 0) / 100, (30 - 100) / 200, (20 - 0) / 100,
            (30 - 100) / 200, (60 - 40) / 100, (10 - 50) / 200, (60 - 40) / 100]
    got = pair_offset(a, b, 200, 100)
    assert got.dtype == np.float32 and got.shape == (8,)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(pair_offset(b, a, 200, 100), -got)


def test_ordered_pairs_are_every_distinct_pair_capped_evenly():
    assert ordered_pairs(3) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    assert ordered_pairs(1) == [] and ordered_pairs(0) == []
    capped = ordered_pairs(6, max_pairs=10)
    assert len(capped) == len(set(capped)) == 10 and all(i != j for i, j in capped)
    assert {i for i, _ in capped} == set(range(6))  # spread over every box, not the first ones only


def test_voc_labels_are_multi_hot_without_difficult_only_classes(voc):
    source = get_source("voc", str(voc), "trainval")
    assert source.class_names() == VOC_ORDER and len(source) == 5
    labels = {}
    for i in range(len(source)):
        sample = source.encode(i)
        assert sample.fields["jpg"] == (voc / "JPEGImages" / f"{sample.key}.jpg").read_bytes()
        labels[sample.key] = {VOC_ORDER[c] for c in np.flatnonzero(npy(sample.fields["labels.npy"]))}
        assert npy(sample.fields["labels.npy"]).dtype == np.uint8
    assert labels == {"2008_000001": {"dog", "person"}, "2008_000002": {"cat"},  # its dog is difficult
                      "2008_000003": {"car", "person", "bottle"}, "2008_000004": {"bird"},  # one of 2 birds difficult
                      "2008_000005": {"tvmonitor"}}


def test_gt_pairs_counts_classes_and_offsets(voc):
    source = get_source("voc-pairs", str(voc), "train")
    # image 1: dog, person -> 2; image 2: the dog is difficult -> 0; image 3: the 4 px bottle is too small -> 6
    assert len(source) == 8 and source.class_names() == VOC_ORDER
    first = source.encode(0)
    assert first.key == "train_000000_00"
    meta = json.loads(first.fields["pair.json"])
    assert meta == {"image": "2008_000001", "image_size": [64, 48], "box_a": [0.0, 0.0, 32.0, 24.0],
                    "box_b": [32.0, 24.0, 64.0, 48.0]}  # VOC's 1-based inclusive boxes as 0-based edges
    np.testing.assert_allclose(npy(first.fields["offset.npy"]), [-0.5] * 8)  # a is up-left of b by half
    assert (first.fields["a.cls"], first.fields["b.cls"]) == (b"11", b"14")  # dog, person
    assert Image.open(io.BytesIO(first.fields["a.png"])).size == (64, 64)
    assert [source.encode(k).key for k in (2, 7)] == ["train_000002_00", "train_000002_05"]
    assert len(get_source("voc-pairs", str(voc), "train", difficult=True)) == 10
    assert len(get_source("voc-pairs", str(voc), "train", max_pairs=3)) == 2 + 3


def test_proposals_file_top_boxes_and_errors(voc, tmp_path):
    good = tmp_path / "boxes.csv"
    good.write_text("image_id,x1,y1,x2,y2,score\n# EdgeBox top boxes\n"
                    "2008_000001,0,0,30,30,0.5\n2008_000001,10,10,50,40,0.9\n2008_000001,0,0,8,8,0.99\n"
                    "2008_000001,20,0,90,30,0.7\n2008_000001,1,1,20,20,0.1\n\n2009_999999,0,0,10,10,1\n")
    kept = read_proposals(str(good), "voc-pairs", 3, lambda i, box: box if box[2] - box[0] >= 16 else None)
    assert kept.boxes == {"2008_000001": [(10.0, 10.0, 50.0, 40.0), (20.0, 0.0, 90.0, 30.0), (0.0, 0.0, 30.0, 30.0)]}
    source = get_source("voc-pairs", str(voc), "train", pairs="proposals", proposals=str(good), proposals_per_image=3)
    assert len(source) == 6 and source.class_names() == []  # 3 boxes of image 1 (clipped), none elsewhere
    sample = source.encode(0)
    assert "a.cls" not in sample.fields and json.loads(sample.fields["pair.json"])["box_b"] == [20.0, 0.0, 64.0, 30.0]
    for line, problem in (("2008_000001,1,2,3,0.5", "expected 6"), ("2008_000001,a,2,3,4,0.5", "numbers"),
                          ("2008_000001,10,2,5,4,0.5", "x1 < x2"), ("../etc/passwd,0,0,4,4,1", "not a plain file")):
        bad = tmp_path / "bad.csv"
        bad.write_text(f"2008_000001,0,0,30,30,0.5\n{line}\n")
        with pytest.raises(SourceLayoutError, match=problem) as e:
            read_proposals(str(bad), "voc-pairs", 3, lambda i, box: box)
        assert f"{bad}:2" in str(e.value)
    with pytest.raises(FrugalError, match="needs the proposals file"):
        get_source("voc-pairs", str(voc), "train", pairs="proposals")


def test_random_patches_are_deterministic_and_need_no_annotations(voc):
    def boxes(**kw):
        s = get_source("voc-pairs", str(voc), "val", pairs="random", random_size=16, **kw)
        return [(s.encode(k).key, s.encode(k).fields) for k in range(len(s))]

    one, two = boxes(), boxes()
    assert len(one) == 2 * 10 and one == two  # 5 boxes -> 10 pairs per image, byte-identical
    assert one[10][0] == "val_000001_00"
    meta = [json.loads(f["pair.json"]) for _, f in one]
    for m in meta:
        w, h = m["image_size"]
        for x1, y1, x2, y2 in (m["box_a"], m["box_b"]):
            assert (x2 - x1, y2 - y1) == (16, 16) and 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h
    assert [f["pair.json"] for _, f in boxes(seed=1)] != [f["pair.json"] for _, f in one]
    shutil.rmtree(voc / "Annotations")  # random squares need no annotations
    assert boxes() == one


def test_layout_errors_name_the_file_at_fault(voc):
    (voc / "Annotations" / "2008_000002.xml").write_text("<annotation><size><width>4</width>")
    with pytest.raises(SourceLayoutError, match="2008_000002.xml.*malformed XML"):
        get_source("voc-pairs", str(voc), "train")
    (voc / "Annotations" / "2008_000002.xml").write_text(
        '<!DOCTYPE a [<!ENTITY x "y">]><annotation>&x;</annotation>')
    with pytest.raises(SourceLayoutError, match="2008_000002.xml.*DOCTYPE"):
        get_source("voc-pairs", str(voc), "train")
    (voc / "JPEGImages" / "2008_000004.jpg").unlink()
    with pytest.raises(SourceLayoutError, match=r"val.txt.*'2008_000004'.*JPEGImages/2008_000004.jpg"):
        get_source("voc", str(voc), "val")
    (voc / "ImageSets" / "Main" / "val.txt").write_text("2008_000005\n../../secret\n")
    with pytest.raises(SourceLayoutError, match=r"val.txt:2.*'../../secret'.*not a plain file"):
        get_source("voc", str(voc), "val")
    with pytest.raises(SourceLayoutError, match="test image list.*test.txt"):
        get_source("voc", str(voc), "test")
    with pytest.raises(SourceLayoutError, match="JPEGImages.*SRC holds VOC2012"):
        get_source("voc", str(voc.parent), "train")


def test_shards_through_the_writer_read_back(voc, tmp_path):
    out = write_shards("voc-pairs", str(voc), str(tmp_path / "pairs"), "train", max_shard_samples=3,
                       options={"pairs": "gt", "patch_size": 32}, progress=False)["train"]
    assert out.task == "patch_pairs" and out.num_samples == 8 and len(out.shards) == 3
    m = load_manifest(str(tmp_path / "pairs" / "train"))
    assert m.writer["params"]["source"]["patch_size"] == 32 and m.extra["images_with_pairs"] == 2
    samples = list(iter_samples(str(tmp_path / "pairs" / "train"), decode=False))
    source = get_source("voc-pairs", str(voc), "train", patch_size=32)
    assert [s["fields"] for s in samples] == [source.encode(k).fields for k in range(8)]
    assert Image.open(io.BytesIO(samples[0]["fields"]["b.png"])).size == (32, 32)
    labels = write_shards("voc", str(voc), str(tmp_path / "cls"), "val", progress=False)["val"]
    decoded = list(iter_samples(labels.location))
    assert [d["image"].shape for d in decoded] == [(h, w, 3) for w, h, _ in (VOC_IMAGES["2008_000004"],
                                                                            VOC_IMAGES["2008_000005"])]
    assert decoded[1]["labels"].dtype == np.uint8 and decoded[1]["labels"].tolist() == [0] * 19 + [1]


def test_scn_mine_params_are_checked_when_the_pipeline_loads():
    from frugalcv.workflows.pipeline.stages import stage_info

    info = stage_info("scn.mine")
    assert info.build_params({"src": "voc", "pairs": "random"}).options()["pairs"] == "random"
    for params, problem in (({"pairs": "proposals"}, "proposals"), ({"splits": ["trian"]}, "unknown split"),
                            ({"tasks": 2}, "max_shard_samples"), ({"pairs": "edgebox"}, "pairs")):
        with pytest.raises(ConfigError, match=problem):
            info.build_params({"src": "voc", **params})
