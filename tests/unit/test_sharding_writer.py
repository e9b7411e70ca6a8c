import hashlib
import json
from pathlib import Path

import pytest
from synthetic import SyntheticSource, synthetic_image

from frugalcv.errors import FrugalError, ShardError
from frugalcv.sharding import iter_samples, load_manifest, summary, verify, write_shards
from frugalcv.sharding.writer import write_split


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))}


def test_roundtrip_and_manifest(odd_tmp):
    out = write_shards("synthetic-test", "23", str(odd_tmp), split="train", max_shard_samples=5, progress=False)
    m = out["train"]
    assert m.num_samples == 23 and [s.samples for s in m.shards] == [5, 5, 5, 5, 3]
    assert [s.first for s in m.shards] == [0, 5, 10, 15, 20]
    samples = list(iter_samples(str(odd_tmp / "train")))
    assert [s["key"] for s in samples] == [f"s{i:05d}" for i in range(23)]
    for i, s in enumerate(samples):
        assert (s["image"] == synthetic_image(i)).all() and s["label"] == i % 7
    disk = json.loads((odd_tmp / "train" / "manifest.json").read_text())
    assert disk["format_version"] == 1 and disk["kind"] == "synthetic-test" and disk["classes"][0] == "c0"
    assert disk["shards"][0]["sha256"] == hashlib.sha256((odd_tmp / "train" / "train-000000.tar").read_bytes()).hexdigest()
    assert not (odd_tmp / "train" / "_progress").exists()
    info = summary(str(odd_tmp / "train"))
    assert info["num_samples"] == 23 and info["num_shards"] == 5


def test_same_input_gives_byte_identical_shards(tmp_path):
    write_shards("synthetic-test", "30", str(tmp_path / "a"), split="train", max_shard_samples=7, progress=False)
    write_shards("synthetic-test", "30", str(tmp_path / "b"), split="train", max_shard_samples=7, workers=2, progress=False)
    a, b = _digests(tmp_path / "a" / "train"), _digests(tmp_path / "b" / "train")
    assert a == b and len(a) == 5
    assert (tmp_path / "a/train/manifest.json").read_bytes() == (tmp_path / "b/train/manifest.json").read_bytes()


def test_max_shard_bytes_limits_shard_size(tmp_path):
    m = write_shards("synthetic-test", "40", str(tmp_path), split="train", max_shard_bytes=20000, progress=False)["train"]
    assert len(m.shards) > 1 and all(s.bytes <= 20000 for s in m.shards)
    assert m.num_samples == 40


class Flaky(SyntheticSource):
    calls: list[int] = []
    fail_at: int | None = None

    def encode(self, index):
        Flaky.calls.append(index)
        if index == Flaky.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        return super().encode(index)


def test_interrupted_conversion_resumes_after_last_complete_shard(tmp_path):
    ref = tmp_path / "ref"
    write_split(SyntheticSource("37", "train"), str(ref), max_shard_samples=5, progress=False)
    out = tmp_path / "out"
    Flaky.fail_at, Flaky.calls = 23, []
    with pytest.raises(KeyboardInterrupt):
        write_split(Flaky("37", "train"), str(out), max_shard_samples=5, progress=False)
    assert not (out / "manifest.json").exists()  # incomplete: readers refuse it
    with pytest.raises(ShardError, match="incomplete dataset"):
        load_manifest(str(out))
    Flaky.fail_at, Flaky.calls = None, []
    m = write_split(Flaky("37", "train"), str(out), max_shard_samples=5, progress=False)
    assert Flaky.calls[0] == 20  # shards 0..3 (samples 0..19) were complete
    assert _digests(out) == _digests(ref) and m.num_samples == 37
    # a second run finds it complete and does nothing
    Flaky.calls = []
    write_split(Flaky("37", "train"), str(out), max_shard_samples=5, progress=False)
    assert Flaky.calls == []


def test_a_complete_dataset_with_a_shard_gone_writes_it_again(tmp_path, caplog):
    out = tmp_path / "out"
    write_split(SyntheticSource("37", "train"), str(out), max_shard_samples=5, progress=False)
    before = _digests(out)
    manifest = (out / "manifest.json").read_bytes()
    (out / "train-000004.tar").unlink()
    (out / "train-000006.tar").write_bytes(b"cut short")
    Flaky.fail_at, Flaky.calls = None, []
    with caplog.at_level("WARNING"):
        m = write_split(Flaky("37", "train"), str(out), max_shard_samples=5, progress=False)
    assert "2 of 8 shards are missing or changed size (train-000004.tar, train-000006.tar)" in caplog.text
    assert Flaky.calls[0] == 20  # shards 0..3 were intact and kept
    assert _digests(out) == before and (out / "manifest.json").read_bytes() == manifest
    assert m.num_samples == 37 and not (out / "_progress").exists()


def test_rerun_with_other_settings_is_refused(tmp_path):
    write_shards("synthetic-test", "12", str(tmp_path), split="train", max_shard_samples=5, progress=False)
    with pytest.raises(FrugalError, match="other settings"):
        write_shards("synthetic-test", "12", str(tmp_path), split="train", max_shard_samples=6, progress=False)


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_catches_flipped_byte_and_truncation(tmp_path):
    write_shards("synthetic-test", "20", str(tmp_path), split="train", max_shard_samples=5, progress=False)
    ds = tmp_path / "train"
    assert verify(str(ds)).ok
    _flip_byte(ds / "train-000001.tar", 700)
    trunc = ds / "train-000003.tar"
    trunc.write_bytes(trunc.read_bytes()[:1500])
    report = verify(str(ds))
    bad = dict(report.bad)
    assert set(bad) == {str(ds / "train-000001.tar"), str(ds / "train-000003.tar")}
    assert "sha256" in bad[str(ds / "train-000001.tar")]
    assert "truncated" in bad[str(ds / "train-000003.tar")]


def test_reading_a_truncated_shard_names_it(tmp_path):
    write_shards("synthetic-test", "10", str(tmp_path), split="train", max_shard_samples=5, progress=False)
    shard = tmp_path / "train" / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:2000])
    with pytest.raises(ShardError, match=r"train-000001\.tar.*truncated"):
        list(iter_samples(str(tmp_path / "train")))


def test_corrupt_member_names_shard_and_member(tmp_path):
    write_shards("synthetic-test", "5", str(tmp_path), split="train", progress=False)
    shard = tmp_path / "train" / "train-000000.tar"
    data = bytearray(shard.read_bytes())
    # members: s00000.cls (header + 1 block), then s00000.png's header; corrupt the PNG's IHDR
    png_data = 3 * 512
    assert data[png_data + 1 : png_data + 4] == b"PNG"
    data[png_data + 16 : png_data + 24] = b"\xff" * 8
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"train-000000\.tar: member s00000\.png failed to decode"):
        list(iter_samples(str(tmp_path / "train")))


def test_missing_manifest_messages(tmp_path):
    with pytest.raises(ShardError, match="does not exist"):
        load_manifest(str(tmp_path / "nope"))
    write_shards("synthetic-test", "4", str(tmp_path / "ds"), progress=False)
    with pytest.raises(ShardError, match="holds the splits test, train"):
        load_manifest(str(tmp_path / "ds"))
    (tmp_path / "ds" / "train" / "manifest.json").write_text("{not json")
    with pytest.raises(ShardError, match=r"manifest\.json: not valid JSON"):
        load_manifest(str(tmp_path / "ds" / "train"))


def test_unknown_kind_lists_known(tmp_path):
    with pytest.raises(FrugalError, match="known kinds: .*synthetic-test"):
        write_shards("nope", "x", str(tmp_path))


def test_memory_filesystem_roundtrip():
    m = write_shards("synthetic-test", "9", "memory://frugal-test/ds", split="train", max_shard_samples=4, progress=False)
    assert m["train"].num_samples == 9
    assert len(list(iter_samples("memory://frugal-test/ds/train"))) == 9
    assert verify("memory://frugal-test/ds/train").ok


def test_webdataset_reads_our_shards(tmp_path):
    import webdataset as wds

    write_shards("synthetic-test", "6", str(tmp_path), split="train", progress=False)
    ds = wds.WebDataset(str(tmp_path / "train" / "train-000000.tar"), shardshuffle=False).decode("rgb8")
    got = [(s["__key__"], s["cls"], s["png"].shape) for s in ds]
    assert got == [(f"s{i:05d}", i % 7, (8, 8, 3)) for i in range(6)]


def test_encoding_workers_die_of_sigterm_whatever_handler_the_parent_installed():
    """Pool.terminate ends its workers with SIGTERM; one that ran an inherited Python handler instead
    (a stage's checkpoint-on-signal, a program's cleanup) would leave the pool waiting for ever."""
    import signal

    from frugalcv.sharding.writer import _init_worker

    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        _init_worker(None)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)
