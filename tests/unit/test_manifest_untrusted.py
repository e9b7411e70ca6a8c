"""A manifest is untrusted input: shard URLs stay inside the dataset's folder, counts are sane."""

import builtins
import json
import tracemalloc

import pytest
from synthetic import synthetic_image  # noqa: F401  (registers the synthetic-test kind)

from frugalcv.errors import ShardError
from frugalcv.sharding import ShardLoader, iter_samples, load_manifest, storage, write_shards


@pytest.fixture()
def dataset(tmp_path):
    write_shards("synthetic-test", "12", str(tmp_path / "d"), split="train", max_shard_samples=5, progress=False)
    return tmp_path / "d" / "train"


def edit(folder, change):
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def set_shard(field, value, index=0):
    def change(data):
        data["shards"][index][field] = value
    return change


@pytest.mark.parametrize("url", ["../other/x.tar", "/etc/passwd", "file:///etc/passwd", "http://127.0.0.1:9/x.tar",
                                 "a/../../x.tar", "", "./x.tar", "x\n.tar"])
def test_a_shard_url_leaving_the_folder_is_refused_before_any_read(dataset, tmp_path, url, monkeypatch):
    outside = tmp_path / "other"
    outside.mkdir()
    (outside / "x.tar").write_bytes(b"not read")
    edit(dataset, set_shard("url", url))
    touched = []
    real_url_to_fs, real_open = storage.url_to_fs, builtins.open
    monkeypatch.setattr(storage, "url_to_fs", lambda u: touched.append(str(u)) or real_url_to_fs(u))
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: touched.append(str(f)) or real_open(f, *a, **k))
    for read in (load_manifest, lambda u: list(iter_samples(u)), lambda u: ShardLoader(u, 4)):
        with pytest.raises(ShardError, match=r"manifest.json: shards\[0\]\.url: .* inside the dataset's folder"):
            read(str(dataset))
    shard_reads = [t for t in touched if str(dataset) in t and not t.endswith("manifest.json")]
    assert not shard_reads and not [t for t in touched if "x.tar" in t or "passwd" in t or "127.0.0.1" in t]
    assert touched  # the spies saw the manifest being read


@pytest.mark.parametrize("field,value,why", [
    ("samples", -5, "non-negative integer"), ("samples", "360", "non-negative integer"),
    ("samples", 10**15, "cannot fit in a shard"), ("samples", 100_000_000, "cannot fit in a shard"),
    ("samples", True, "non-negative integer"), ("bytes", -1, "non-negative integer"),
    ("samples", 2.5, "non-negative integer"), ("samples", 4.0, "non-negative integer"),
    ("samples", None, "non-negative integer"), ("bytes", "999", "non-negative integer"),
    ("bytes", 10**18, "larger than a shard can be"), ("first", -1, "non-negative integer"),
    ("first", 3, "must equal"), ("sha256", "abc", "64 lower-case hex"),
])
def test_bad_counts_are_refused_naming_the_manifest_and_field(dataset, field, value, why):
    edit(dataset, set_shard(field, value))
    tracemalloc.start()
    with pytest.raises(ShardError, match=rf"manifest.json: shards\[0\]\.{field}: .*{why}"):
        ShardLoader(str(dataset), 4)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 << 20  # nothing sized by the forged count was allocated


def test_forged_sizes_cannot_declare_an_absurd_dataset(dataset):
    """Shards that each look possible (1 TiB, 2**30 samples) but add up to an absurd dataset."""
    forged = [{"url": f"x{i}.tar", "samples": 1 << 30, "bytes": 1 << 40, "sha256": "0" * 64, "first": i << 30}
              for i in range(3)]
    edit(dataset, lambda d: d.__setitem__("shards", forged))
    tracemalloc.start()
    for read in (load_manifest, lambda u: list(iter_samples(u)), lambda u: len(ShardLoader(u, 4))):
        with pytest.raises(ShardError, match=r"manifest.json: shards\[2\]\.samples: .* more than frugalcv reads"):
            read(str(dataset))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 << 20


def test_malformed_shard_lists_are_refused(dataset):
    edit(dataset, lambda d: d.__setitem__("shards", "many"))
    with pytest.raises(ShardError, match="shards must be a list"):
        load_manifest(str(dataset))


def test_a_good_manifest_still_reads(dataset):
    assert len(list(iter_samples(str(dataset)))) == 12
