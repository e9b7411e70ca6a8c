"""The shard manifest: written last, so a folder without one is an incomplete dataset."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field

from frugalcv.errors import ShardError
from frugalcv.sharding import storage

MANIFEST_NAME = "manifest.json"
FORMAT = "frugalcv.shards"
FORMAT_VERSION = 1


_SHA256 = re.compile(r"[0-9a-f]{64}")
#: the smallest a tar member can be (a 512-byte header and one data block): bounds the samples a
#: shard of a given size can declare, so a forged count cannot drive a huge allocation
_MIN_SAMPLE_BYTES = 1024
#: bounds on what a manifest may declare, so that forged sizes cannot drive huge allocations
#: either: a shard is at most 1 TiB, a dataset at most 2**31 samples
_MAX_SHARD_BYTES = 1 << 40
_MAX_SAMPLES = 1 << 31


@dataclass(frozen=True)
class ShardInfo:
    url: str  # a file name relative to the manifest's folder (never absolute, never outside it)
    samples: int
    bytes: int
    sha256: str
    first: int  # global index of the shard's first sample


@dataclass
class Manifest:
    kind: str
    split: str
    task: str
    schema: dict[str, str]
    classes: list[str]
    shards: list[ShardInfo]
    extra: dict = field(default_factory=dict)
    writer: dict = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    #: where the manifest was read from (not serialised)
    location: str = field(default="", compare=False, repr=False)

    @property
    def num_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def num_bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    def shard_url(self, i: int) -> str:
        return storage.join(self.location, self.shards[i].url)

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("location")
        d["num_samples"] = self.num_samples
        return json.dumps(d, indent=1, sort_keys=True) + "\n"

    def changed_shards(self) -> list[str]:
        """The shards that are gone from the manifest's folder or whose size is not the recorded one
        (one listing of the folder; the bytes are not read)."""
        sizes = storage.file_sizes(self.location)
        return [s.url for s in self.shards if sizes.get(s.url) != s.bytes]

    def digest(self) -> str:
        """sha256 of the canonical manifest: the dataset's identity in lineage."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_json(cls, text: str, location: str) -> Manifest:
        where = storage.join(location, MANIFEST_NAME)
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ShardError(f"{storage.redact(where)}: not valid JSON ({e})") from e
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ShardError(f"{storage.redact(where)}: not a frugalcv shard manifest (format != {FORMAT!r})")
        if d.get("format_version", 0) > FORMAT_VERSION:
            raise ShardError(
                f"{storage.redact(where)}: format_version {d['format_version']} is newer than this "
                f"frugalcv understands ({FORMAT_VERSION}); upgrade frugalcv"
            )
        d.pop("num_samples", None)
        shards = d.get("shards")
        if not isinstance(shards, list) or not all(isinstance(s, dict) for s in shards):
            raise ShardError(f"{storage.redact(where)}: malformed manifest (shards must be a list of objects)")
        try:
            d["shards"] = [ShardInfo(**s) for s in shards]
            manifest = cls(**d, location=location)
        except (TypeError, KeyError) as e:
            raise ShardError(f"{storage.redact(where)}: malformed manifest ({e})") from e
        first = 0
        for i, shard in enumerate(manifest.shards):
            problem = _shard_problem(shard, first)
            if problem:
                raise ShardError(f"{storage.redact(where)}: shards[{i}].{problem}")
            first += shard.samples
            if first > _MAX_SAMPLES:
                raise ShardError(f"{storage.redact(where)}: shards[{i}].samples: the shards up to this one declare "
                                 f"{first} samples, more than frugalcv reads in one dataset ({_MAX_SAMPLES})")
        return manifest


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shard_problem(shard: ShardInfo, first: int) -> str | None:
    """What is wrong with one shard entry (``field: why``), or None: the manifest is untrusted input."""
    url = shard.url
    if not isinstance(url, str) or not url or "://" in url or url.startswith(("/", "\\")) or "\\" in url \
            or any(part in ("", ".", "..") for part in url.split("/")) or any(ord(c) < 32 for c in url):
        return f"url: {url!r} must be a file name inside the dataset's folder (no scheme, absolute path or '..')"
    for name in ("samples", "bytes", "first"):
        if not _count(getattr(shard, name)):
            return f"{name}: {getattr(shard, name)!r} must be a non-negative integer"
    if shard.bytes > _MAX_SHARD_BYTES:
        return f"bytes: {shard.bytes} is larger than a shard can be ({_MAX_SHARD_BYTES})"
    if shard.first != first:
        return f"first: {shard.first} must equal the samples of the shards before it ({first})"
    if shard.samples * _MIN_SAMPLE_BYTES > shard.bytes:
        return (f"samples: {shard.samples} cannot fit in a shard of {shard.bytes} bytes "
                f"(each sample takes at least {_MIN_SAMPLE_BYTES})")
    if not isinstance(shard.sha256, str) or not _SHA256.fullmatch(shard.sha256):
        return f"sha256: {shard.sha256!r} must be 64 lower-case hex digits"
    return None


def manifest_location(url: str) -> str:
    url = str(url).rstrip("/")
    return storage.parent(url) if url.endswith("/" + MANIFEST_NAME) or url == MANIFEST_NAME else url


def load_manifest(url: str) -> Manifest:
    """Read the manifest of the dataset at ``url`` (its folder or the manifest file).

    Raises ShardError naming the URL when the manifest is missing, explaining
    whether the folder holds split sub-datasets or an interrupted conversion.
    """
    loc = manifest_location(url)
    murl = storage.join(loc, MANIFEST_NAME)
    try:
        text = storage.read_bytes(murl).decode()
    except FileNotFoundError:
        raise ShardError(_missing_manifest_message(loc)) from None
    return Manifest.from_json(text, loc)


def _missing_manifest_message(loc: str) -> str:
    shown = storage.redact(loc)
    try:
        fs, path = storage.url_to_fs(loc)
        if not fs.exists(path):
            return f"{shown}: no such dataset (the folder does not exist)"
        entries = fs.ls(path, detail=False)
    except Exception:
        entries = []
    splits = sorted(
        e.rstrip("/").rsplit("/", 1)[-1] for e in entries if storage.exists(storage.join(f"{_proto(loc)}{e}", MANIFEST_NAME))
    )
    if splits:
        return f"{shown}: holds the splits {', '.join(splits)}; pass one of them, e.g. {shown.rstrip('/')}/{splits[0]}"
    if any(e.endswith(".tar") for e in entries):
        return (
            f"{shown}: incomplete dataset: shards but no {MANIFEST_NAME} (the conversion was interrupted); "
            "run the same `frugalcv shard` command again to finish it"
        )
    return f"{shown}: no {MANIFEST_NAME} here; this is not a frugalcv dataset"


def _proto(loc: str) -> str:
    return loc.split("://", 1)[0] + "://" if "://" in loc else ""
