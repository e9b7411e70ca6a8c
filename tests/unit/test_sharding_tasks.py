"""A dataset written by N array tasks (``frugalcv.sharding.tasks``): ranges, identity, manifest last, rerun."""

import hashlib
from pathlib import Path

import pytest
from synthetic import SyntheticSource

from frugalcv.errors import FrugalError
from frugalcv.sharding import load_manifest
from frugalcv.sharding.tasks import (
    finish_shards,
    finish_split,
    shard_bounds,
    task_shards,
    write_shards_task,
    write_split_task,
)
from frugalcv.sharding.writer import write_split


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))}


@pytest.mark.parametrize("num_shards,tasks", [(10, 3), (7, 7), (3, 5), (0, 2), (1, 1), (100, 8)])
def test_task_ranges_are_disjoint_contiguous_and_cover_every_shard(num_shards, tasks):
    ranges = [task_shards(num_shards, t, tasks) for t in range(tasks)]
    flat = [i for r in ranges for i in r]
    assert flat == list(range(num_shards))  # disjoint, in order, covering
    assert all(r.step == 1 for r in ranges)
    sizes = [len(r) for r in ranges]
    assert max(sizes) - min(sizes) <= 1
    if tasks > num_shards:
        assert sizes.count(0) == tasks - num_shards  # more tasks than shards: some have nothing to do


def test_bad_task_index_and_bounds():
    with pytest.raises(FrugalError, match="0 <= task < tasks"):
        task_shards(4, 2, 2)
    assert shard_bounds(23, 5) == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]
    assert shard_bounds(0, 5) == []


def test_tasks_write_byte_identical_shards_and_the_same_manifest(tmp_path):
    ref = write_split(SyntheticSource("37", "train"), str(tmp_path / "ref"), max_shard_samples=5, progress=False)
    out = tmp_path / "out"
    for t in (2, 0, 1):  # any order: the tasks are independent
        write_split_task(SyntheticSource("37", "train"), str(out), t, 3, max_shard_samples=5)
    m = finish_split(SyntheticSource("37", "train"), str(out), max_shard_samples=5)
    assert _digests(out) == _digests(tmp_path / "ref") and len(m.shards) == 8
    assert (out / "manifest.json").read_bytes() == (tmp_path / "ref" / "manifest.json").read_bytes()
    assert m.digest() == ref.digest()
    assert not (out / "_progress").exists()


def test_manifest_is_written_only_after_every_task(tmp_path):
    src = SyntheticSource("20", "train")
    write_split_task(src, str(tmp_path), 0, 2, max_shard_samples=5)
    assert not (tmp_path / "manifest.json").exists()  # a task never writes it
    with pytest.raises(FrugalError, match=r"2 of 4 shard\(s\) missing \(indices 2, 3\)"):
        finish_split(src, str(tmp_path), max_shard_samples=5)
    assert not (tmp_path / "manifest.json").exists()
    write_split_task(src, str(tmp_path), 1, 2, max_shard_samples=5)
    assert finish_split(src, str(tmp_path), max_shard_samples=5).num_samples == 20
    assert load_manifest(str(tmp_path)).num_samples == 20


class Counting(SyntheticSource):
    calls: list[int] = []

    def encode(self, index):
        Counting.calls.append(index)
        return super().encode(index)


def test_rerun_writes_only_the_missing_shards(tmp_path):
    for t in range(3):
        write_split_task(Counting("30", "train"), str(tmp_path), t, 3, max_shard_samples=4)
    before = _digests(tmp_path)
    (tmp_path / "train-000005.tar").unlink()  # deleted
    (tmp_path / "train-000001.tar").write_bytes(b"partial")  # a shard of the wrong size
    Counting.calls = []
    reports = [write_split_task(Counting("30", "train"), str(tmp_path), t, 3, max_shard_samples=4) for t in range(3)]
    assert sorted(Counting.calls) == [4, 5, 6, 7, 20, 21, 22, 23]  # shards 1 and 5 only
    assert [(r.written, r.skipped) for r in reports] == [(1, 1), (0, 3), (1, 2)]  # 8 shards: tasks 0-1, 2-4, 5-7
    finish_split(Counting("30", "train"), str(tmp_path), max_shard_samples=4)
    assert _digests(tmp_path) == before
    Counting.calls = []  # complete: a rerun does nothing
    assert write_split_task(Counting("30", "train"), str(tmp_path), 0, 3, max_shard_samples=4).written == 0
    assert Counting.calls == []


def test_a_shard_gone_after_the_manifest_is_written_again_by_its_task_alone(tmp_path):
    for t in range(3):
        write_split_task(Counting("30", "train"), str(tmp_path), t, 3, max_shard_samples=4)
    finish_split(Counting("30", "train"), str(tmp_path), max_shard_samples=4)
    before = _digests(tmp_path)
    (tmp_path / "train-000006.tar").unlink()
    Counting.calls = []
    reports = [write_split_task(Counting("30", "train"), str(tmp_path), t, 3, max_shard_samples=4) for t in range(3)]
    assert sorted(Counting.calls) == [24, 25, 26, 27] and [r.written for r in reports] == [0, 0, 1]
    m = finish_split(Counting("30", "train"), str(tmp_path), max_shard_samples=4)
    assert _digests(tmp_path) == before and m.num_samples == 30


def test_single_process_resume_continues_from_task_shards(tmp_path):
    write_split_task(SyntheticSource("20", "train"), str(tmp_path / "out"), 0, 2, max_shard_samples=5)
    write_split(SyntheticSource("20", "train"), str(tmp_path / "out"), max_shard_samples=5, progress=False)
    write_split(SyntheticSource("20", "train"), str(tmp_path / "ref"), max_shard_samples=5, progress=False)
    assert _digests(tmp_path / "out") == _digests(tmp_path / "ref")


def test_tasks_need_max_shard_samples_and_shards_within_max_bytes(tmp_path):
    with pytest.raises(FrugalError, match="needs max_shard_samples"):
        write_split_task(SyntheticSource("10", "train"), str(tmp_path / "a"), 0, 2)
    with pytest.raises(FrugalError, match="would pass max_shard_bytes=8000.*lower max_shard_samples"):
        write_split_task(SyntheticSource("40", "train"), str(tmp_path / "b"), 0, 2, max_shard_samples=20,
                         max_shard_bytes=8000)


def test_every_split_by_kind(tmp_path):
    for t in range(2):
        write_shards_task("synthetic-test", "9", str(tmp_path), "train", t, 2, max_shard_samples=2)
    assert finish_shards("synthetic-test", "9", str(tmp_path), "train", max_shard_samples=2)["train"].num_samples == 9
