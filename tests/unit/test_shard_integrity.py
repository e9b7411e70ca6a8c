"""Readers check each shard's sha256 while they stream it, and resume a dropped read mid-shard."""

import hashlib
import io
import json

import pytest
from synthetic import synthetic_image  # noqa: F401  (registers the synthetic-test kind)

from frugalcv.errors import ShardError
from frugalcv.sharding import ShardLoader, iter_samples, storage, write_shards

N = 24


@pytest.fixture()
def dataset(tmp_path):
    write_shards("synthetic-test", str(N), str(tmp_path), split="train", max_shard_samples=8, progress=False)
    return tmp_path / "train"


def manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def set_sha256(folder, index, digest):
    data = manifest(folder)
    data["shards"][index]["sha256"] = digest
    (folder / "manifest.json").write_text(json.dumps(data))


def keys_of(loader):
    return [k for batch in loader for k in batch["key"]]


def read_all(url, **kw):
    return [s["key"] for s in iter_samples(str(url), **kw)]


# ----------------------------------------------------------------------------- sha256


def test_a_wrong_sha256_is_caught_by_iter_samples_naming_the_shard(dataset):
    set_sha256(dataset, 1, hashlib.sha256(b"other bytes").hexdigest())
    with pytest.raises(ShardError, match=r"train-000001\.tar: sha256 [0-9a-f]{16}… does not match the manifest's"):
        read_all(dataset)
    assert len(read_all(dataset, check_sha256=False)) == N


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("cache_mb", [16, 1e-3])  # one pass over each shard, or several (the last one checks)
def test_a_wrong_sha256_is_caught_by_the_loader_naming_the_shard(dataset, workers, cache_mb):
    set_sha256(dataset, 2, "0" * 64)
    with pytest.raises(ShardError) as caught:
        keys_of(ShardLoader(str(dataset), 4, num_workers=workers, cache_mb=cache_mb))
    message = str(caught.value)
    assert "train-000002.tar: sha256" in message and "does not match the manifest's 0000000000000000" in message
    assert "\n" not in message and "Traceback" not in message  # one line, also from a worker
    # on_error="skip" is for samples that fail to decode, not for a shard that changed
    with pytest.raises(ShardError, match=r"train-000002\.tar: sha256"):
        keys_of(ShardLoader(str(dataset), 4, num_workers=workers, cache_mb=cache_mb, on_error="skip"))
    assert len(keys_of(ShardLoader(str(dataset), 4, num_workers=workers, check_sha256=False))) == N


def test_changed_bytes_that_still_decode_are_caught(dataset):
    shard = dataset / "train-000000.tar"
    data = shard.read_bytes()
    at = data.index(b"s00003.cls") + 512  # the label's data block: "3"
    shard.write_bytes(data[:at] + b"4" + data[at + 1:])
    with pytest.raises(ShardError, match=r"train-000000\.tar: sha256"):
        read_all(dataset)
    with pytest.raises(ShardError, match=r"train-000000\.tar: sha256"):
        keys_of(ShardLoader(str(dataset), 4))


def test_bytes_after_the_archive_are_caught_as_a_size_mismatch(dataset):
    shard = dataset / "train-000001.tar"
    size = shard.stat().st_size
    shard.write_bytes(shard.read_bytes() + bytes(4 << 20))
    with pytest.raises(ShardError, match=rf"train-000001\.tar: holds more than {size} bytes but the manifest says {size}"):
        read_all(dataset)


def test_the_loader_checks_each_shard_once_per_worker_pass_from_byte_zero(dataset, monkeypatch):
    """Verification costs no second read: the last pass over a shard reads it once, start to end."""
    from frugalcv.sharding import stream

    finished = []
    real_finish = stream.ShardStream.finish

    def finish(self):
        real_finish(self)
        finished.append((self.shown, self.verifying, self.pos))

    monkeypatch.setattr(stream.ShardStream, "finish", finish)
    assert len(keys_of(ShardLoader(str(dataset), 4))) == N
    checked = sorted((url.rsplit("/", 1)[-1], pos) for url, verifying, pos in finished if verifying)
    assert checked == sorted((s["url"], s["bytes"]) for s in manifest(dataset)["shards"])  # each once, to its end


# ----------------------------------------------------------------------------- dropped reads


class FlakyFile:
    """A real file whose reads fail where ``plan`` says: each offset in ``drops`` fails once (as a
    dropped connection); from ``down_from`` on every read and every reopen fails."""

    def __init__(self, path, plan):
        self.f, self.plan = open(path, "rb"), plan  # noqa: SIM115
        plan["opened_at"].append(0)

    def _check(self, n):
        lo = self.f.tell()
        hi = lo + (n if n >= 0 else 1 << 40)
        if self.plan.get("down_from") is not None and hi > self.plan["down_from"]:
            raise ConnectionResetError("Connection reset by peer")
        for off in self.plan["drops"]:
            if lo <= off < hi:
                self.plan["drops"].remove(off)
                raise ConnectionResetError("Connection reset by peer")

    def read(self, n=-1):
        self._check(n)
        return self.f.read(n)

    def seek(self, pos, whence=io.SEEK_SET):
        out = self.f.seek(pos, whence)
        if whence == io.SEEK_SET:
            self.plan["opened_at"][-1] = pos
        return out

    def close(self):
        self.f.close()


@pytest.fixture()
def flaky(monkeypatch):
    plan = {"drops": [], "down_from": None, "opened_at": [], "refuse_reopen": False}

    def open_once(url, block_size=None):
        if plan["refuse_reopen"] and plan["opened_at"]:
            raise ConnectionRefusedError("Connection refused")
        return FlakyFile(storage.url_to_fs(url)[1], plan)

    monkeypatch.setattr(storage, "open_read_once", open_once)
    monkeypatch.setenv("FRUGALCV_IO_ATTEMPTS", "4")
    monkeypatch.setenv("FRUGALCV_IO_BACKOFF_S", "0.01")
    return plan


def test_a_dropped_read_resumes_at_the_byte_it_reached(dataset, flaky, caplog):
    expected = read_all(dataset)
    flaky["opened_at"].clear()
    flaky["drops"] = [5000, 5001, 9000]  # inside shard 0 (two in a row), then again later
    assert read_all(dataset) == expected  # every sample once, sha256 checked
    resumed = [at for at in flaky["opened_at"] if at > 0]
    assert len(resumed) == 3 and all(4000 < at <= 9000 for at in resumed)
    assert "reopening at that byte" in caplog.text and "train-000000.tar" in caplog.text


@pytest.mark.parametrize("workers", [0, 2])
def test_a_dropped_read_in_the_loader_resumes(dataset, flaky, workers):
    expected = keys_of(ShardLoader(str(dataset), 4, seed=1))
    flaky["drops"] = [3000, 7000]
    assert keys_of(ShardLoader(str(dataset), 4, seed=1, num_workers=workers)) == expected


@pytest.mark.parametrize("workers", [0, 2])
def test_a_connection_that_stays_down_names_the_shard_and_member(dataset, flaky, workers):
    flaky["down_from"], flaky["refuse_reopen"] = 6000, True
    read = (lambda: read_all(dataset)) if workers == 0 else (lambda: keys_of(ShardLoader(str(dataset), 4, num_workers=2)))
    with pytest.raises(ShardError) as caught:
        read()
    message = str(caught.value)
    assert "train-000000.tar: reading member 's0000" in message or "train-000000.tar: reading the tar header" in message
    assert "giving up after 4 attempts (FRUGALCV_IO_ATTEMPTS): ConnectionRefusedError" in message
    assert "\n" not in message and caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_non_transient_failure_mid_read_is_not_retried(dataset, flaky, monkeypatch):
    def denied(self, n=-1):
        raise PermissionError("Access Denied")

    monkeypatch.setattr(FlakyFile, "read", denied)
    with pytest.raises(ShardError, match=r"train-000000\.tar: reading the tar header after member '\(start of archive\)' "
                                         r"at byte 0: PermissionError: Access Denied"):
        read_all(dataset)
    assert flaky["opened_at"] == [0]
