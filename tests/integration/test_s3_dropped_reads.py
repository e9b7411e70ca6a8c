"""Shard reads from S3 survive the endpoint dropping mid-shard: a real TCP proxy in front of
moto_server is stopped after some samples were read and started again on the same port."""

import logging
import re
from urllib.parse import urlparse

import fsspec
import pytest
from synthetic import synthetic_image  # noqa: F401  (registers the synthetic-test kind)
from tcp_proxy import TcpProxy

from frugalcv.errors import ShardError
from frugalcv.sharding import ShardLoader, iter_samples, write_shards

pytestmark = pytest.mark.integration

SAMPLES = 300  # one shard of about 600 kB, read in 8 kB range requests


@pytest.fixture
def shards(s3_bucket):
    url = f"s3://{s3_bucket}/drops"
    write_shards("synthetic-test", str(SAMPLES), url, split="train", max_shard_samples=SAMPLES // 2, progress=False)
    return f"{url}/train"


@pytest.fixture
def proxy(s3_endpoint, monkeypatch):
    """Reads go through the proxy; small range requests; quick retries (botocore's own are off)."""
    with TcpProxy(urlparse(s3_endpoint).port) as p:
        monkeypatch.setenv("AWS_ENDPOINT_URL", p.url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        monkeypatch.setenv("FRUGALCV_IO_BLOCK_BYTES", "8192")
        monkeypatch.setenv("FRUGALCV_IO_ATTEMPTS", "8")
        monkeypatch.setenv("FRUGALCV_IO_BACKOFF_S", "0.2")
        fsspec.filesystem("s3").clear_instance_cache()
        yield p
    fsspec.filesystem("s3").clear_instance_cache()


def drop_after(items, n, proxy, response_bytes, back_after=None):
    """Yield from ``items``; after ``n`` of them, drop the endpoint ``response_bytes`` into the
    responses that follow (inside a range request), and bring it back ``back_after`` s later."""
    for i, item in enumerate(items):
        yield item
        if i + 1 == n:
            proxy.drop_after(response_bytes, back_after)


def resumed_at(log: str) -> list[int]:
    return [int(b) for b in re.findall(r"train-00000\d\.tar: \w+ at byte (\d+) \(attempt", log)]


def test_a_read_resumes_mid_shard_when_the_endpoint_comes_back(shards, proxy, caplog):
    caplog.set_level(logging.WARNING, logger="frugalcv.sharding.stream")
    keys = [s["key"] for s in drop_after(iter_samples(shards), 40, proxy, 20_000, back_after=1.0)]
    assert keys == [f"s{i:05d}" for i in range(SAMPLES)]  # every sample exactly once, sha256 checked
    resumed = resumed_at(caplog.text)
    assert resumed and all(b > 40 * 2048 for b in resumed)  # reopened mid-shard, not from its start
    assert proxy.connections > 1 and "testing-secret-xyz" not in caplog.text


def test_the_loader_resumes_mid_shard_when_the_endpoint_comes_back(shards, proxy, caplog):
    caplog.set_level(logging.WARNING, logger="frugalcv.sharding.stream")
    expected = [k for b in ShardLoader(shards, 10, seed=2, cache_mb=0.5) for k in b["key"]]
    loader = ShardLoader(shards, 10, seed=2, cache_mb=0.5)  # a few passes over each shard
    keys = [k for b in drop_after(loader, 3, proxy, 30_000, back_after=1.0) for k in b["key"]]
    assert keys == expected and sorted(keys) == [f"s{i:05d}" for i in range(SAMPLES)]
    assert [b for b in resumed_at(caplog.text) if b > 0]


def test_an_endpoint_gone_for_good_names_the_shard_and_member(shards, proxy, monkeypatch):
    monkeypatch.setenv("FRUGALCV_IO_ATTEMPTS", "3")
    monkeypatch.setenv("FRUGALCV_IO_BACKOFF_S", "0.05")
    with pytest.raises(ShardError) as caught:
        for _ in drop_after(iter_samples(shards), 40, proxy, 20_000):
            pass
    message = str(caught.value)
    assert re.match(r"s3://frugal-\w+/drops/train/train-000000\.tar: reading (member 's000\d\d\.\w+'|the tar header "
                    r"after member 's000\d\d\.\w+') at byte \d+: the connection failed and did not come back: "
                    r"giving up after 3 attempts", message), message
    assert "\n" not in message and "Traceback" not in message and "testing-secret-xyz" not in message
