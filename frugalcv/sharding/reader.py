"""Read shards: stream decoded samples, verify checksums, summarise a dataset."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from frugalcv.errors import ShardError
from frugalcv.sharding import storage
from frugalcv.sharding.decode import decode_sample
from frugalcv.sharding.manifest import Manifest, load_manifest
from frugalcv.sharding.stream import ShardStream
from frugalcv.sharding.tario import iter_samples_raw


def iter_samples(url: str, decode: bool = True, check_sha256: bool = True) -> Iterator[dict]:
    """Every sample of the dataset at ``url`` in stored order, decoded to numpy values.

    With ``decode=False`` samples are ``{"key", "fields": {ext: bytes}}``. Each shard's bytes
    are hashed as they stream by and checked against the manifest at the shard's end (its
    samples have been yielded by then; see ``stream.py``). A dropped connection is resumed
    at the byte it reached. Raises ShardError naming the shard (and member) on a sha256 or
    size mismatch, truncation, decode failure or a connection that does not come back.
    """
    m = load_manifest(url)
    for i in range(len(m.shards)):
        yield from iter_shard(m, i, decode=decode, check_sha256=check_sha256)


def iter_shard(m: Manifest, i: int, decode: bool = True, check_sha256: bool = True) -> Iterator[dict]:
    info = m.shards[i]
    count = 0
    with ShardStream(m.shard_url(i), sha256=info.sha256 if check_sha256 else None, size=info.bytes) as f:
        shown = f.shown
        for _, key, fields in iter_samples_raw(f, shown):
            count += 1
            yield decode_sample(key, fields, shown) if decode else {"key": key, "fields": fields}
        f.finish()
    if count != info.samples:
        raise ShardError(f"{shown}: holds {count} samples but the manifest says {info.samples}")


@dataclass
class VerifyReport:
    url: str
    shards: int = 0
    samples: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (shard url, reason)

    @property
    def ok(self) -> bool:
        return not self.bad


def verify(url: str, decode: bool = False) -> VerifyReport:
    """Re-read every shard: size, sha256, sample count and archive structure (and decoding)."""
    m = load_manifest(url)
    report = VerifyReport(url=storage.redact(url))
    for i, info in enumerate(m.shards):
        surl = m.shard_url(i)
        shown = storage.redact(surl)
        report.shards += 1
        try:
            data = storage.read_bytes(surl)
        except FileNotFoundError:
            report.bad.append((shown, "missing"))
            continue
        reasons = []
        if len(data) != info.bytes:
            reasons.append(f"size {len(data)} != manifest {info.bytes}")
        digest = hashlib.sha256(data).hexdigest()
        if digest != info.sha256:
            reasons.append(f"sha256 {digest[:12]}… != manifest {info.sha256[:12]}…")
        try:
            import io

            n = 0
            for _, key, fields in iter_samples_raw(io.BytesIO(data), shown):
                n += 1
                if decode:
                    decode_sample(key, fields, shown)
            if n != info.samples:
                reasons.append(f"{n} samples != manifest {info.samples}")
            report.samples += n
        except ShardError as e:
            reasons.append(str(e).removeprefix(f"{shown}: "))
        if reasons:
            report.bad.append((shown, "; ".join(reasons)))
    return report


def summary(url: str) -> dict:
    """The manifest summary printed by ``frugalcv shards info``."""
    m = load_manifest(url)
    return {
        "url": storage.redact(m.location),
        "kind": m.kind,
        "split": m.split,
        "task": m.task,
        "format_version": m.format_version,
        "num_samples": m.num_samples,
        "num_shards": len(m.shards),
        "bytes": m.num_bytes,
        "num_classes": len(m.classes),
        "classes": m.classes,
        "schema": m.schema,
        "extra": m.extra,
        "manifest_sha256": m.digest(),
    }
