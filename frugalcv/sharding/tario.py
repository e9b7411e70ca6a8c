"""Deterministic WebDataset tar writing and a fast streaming tar reader.

Shards are plain POSIX tars readable by ``tar`` and by the ``webdataset`` package:
one member ``{key}.{ext}`` per field, fields of a sample adjacent. Every header
field that could vary between runs (mtime, owner, mode) is fixed, so the same
samples give byte-identical shards.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from zlib import adler32

from frugalcv.errors import ShardError, ShardStreamLost

BLOCK = 512
_RECORD = tarfile.RECORDSIZE  # tarfile pads the archive to a multiple of this
_ZERO_BLOCK = bytes(BLOCK)


def member_bytes(name: str, size: int) -> int:
    """Bytes a member takes in the archive (GNU long names add a header and a block)."""
    n = BLOCK + (size + BLOCK - 1) // BLOCK * BLOCK
    if len(name.encode()) >= 100:
        n += BLOCK + (len(name.encode()) + 1 + BLOCK - 1) // BLOCK * BLOCK
    return n


def sample_bytes(key: str, fields: dict[str, bytes]) -> int:
    return sum(member_bytes(f"{key}.{ext}", len(v)) for ext, v in fields.items())


class TarBuilder:
    """Builds one shard in memory; ``finish()`` returns (bytes, sha256 hex)."""

    def __init__(self):
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w", format=tarfile.GNU_FORMAT)  # noqa: SIM115
        self.samples = 0
        self.nbytes = 0  # archive bytes so far, excluding the end-of-archive padding

    def add(self, key: str, fields: dict[str, bytes]) -> None:
        for ext in sorted(fields):
            data = fields[ext]
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o444
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self.samples += 1
        self.nbytes = self._buf.tell()

    def finish(self) -> tuple[bytes, str]:
        self._tar.close()
        data = self._buf.getvalue()
        return data, hashlib.sha256(data).hexdigest()


def _octal(field: bytes) -> int:
    field = field.rstrip(b"\0 ").strip()
    if field and field[0] & 0x80:  # GNU base-256 for huge sizes
        return int.from_bytes(field[1:], "big")
    return int(field or b"0", 8)


def _checksum_ok(header: bytes) -> bool:
    """The unsigned header checksum: the byte sum with the checksum field counted as 8 spaces."""
    field = header[148:156]
    try:
        stored = _octal(field)
    except ValueError:
        return False
    # sum(header) is the hot spot of reading small samples; Adler-32's low half is
    # (1 + byte sum) mod 65521, exact for each 256-byte half (at most 256 * 255 < 65521).
    total = (adler32(header[:256]) & 0xFFFF) + (adler32(header[256:]) & 0xFFFF) - 2
    return stored == total - sum(field) + 8 * 32


def iter_members(f, url: str, wanted=None) -> Iterator[tuple[int, str, str, bytes | None]]:
    """Stream (sample_index, key, ext, data) from a tar file object.

    Samples are numbered in archive order. When ``wanted`` (a set of sample indices)
    is given, members of other samples are skipped without being read into memory
    and yield ``data = None``. A short read or a bad header raises ShardError naming
    ``url`` and the member.
    """
    sample = -1
    current_key = None
    long_name = None
    last_member = "(start of archive)"
    reading = None  # the member whose data is being read (None: a header)
    read = f.read
    try:
        while True:
            reading = None
            header = read(BLOCK)
            if len(header) == 0:
                raise ShardError(f"{url}: truncated shard: archive ends without an end marker after {last_member!r}")
            if len(header) < BLOCK:
                raise ShardError(f"{url}: truncated shard: partial header after member {last_member!r}")
            if header == _ZERO_BLOCK:
                return
            if not _checksum_ok(header):
                raise ShardError(f"{url}: corrupt tar header after member {last_member!r} (bad checksum)")
            size = _octal(header[124:136])
            typeflag = header[156:157]
            padded = (size + BLOCK - 1) // BLOCK * BLOCK
            if typeflag == b"L":  # GNU long name: the data is the next member's name
                raw = read(padded)
                if len(raw) < padded:
                    raise ShardError(f"{url}: truncated shard inside a long-name record after {last_member!r}")
                long_name = raw[:size].rstrip(b"\0").decode()
                continue
            name = long_name or header[:100].rstrip(b"\0").decode()
            prefix = header[345:500].rstrip(b"\0").decode() if header[257:262] == b"ustar" and header[257:265] != b"ustar  \0" else ""
            if prefix:
                name = f"{prefix}/{name}"
            long_name = None
            if typeflag not in (b"0", b"\0"):
                if padded:
                    f.seek(padded, io.SEEK_CUR)
                continue
            base = name.rsplit("/", 1)[-1]
            dirpart = name[: len(name) - len(base)]
            key, _, ext = base.partition(".")
            key = dirpart + key
            if key != current_key:
                current_key = key
                sample += 1
            last_member = reading = name
            if wanted is not None and sample not in wanted:
                if padded:
                    f.seek(padded, io.SEEK_CUR)
                yield sample, key, ext, None
                continue
            data = read(padded)
            if len(data) < padded:
                raise ShardError(f"{url}: truncated shard: member {name!r} has {max(0, len(data))} of {size} bytes")
            yield sample, key, ext, (data if padded == size else data[:size])
    except ShardStreamLost as e:  # a dropped connection that did not come back: name the member
        where = f"member {reading!r}" if reading else f"the tar header after member {last_member!r}"
        raise ShardError(e.at(where)) from None


def iter_samples_raw(f, url: str, wanted=None) -> Iterator[tuple[int, str, dict[str, bytes] | None]]:
    """Group members into samples: (sample_index, key, {ext: bytes}) — None when not wanted."""
    cur_idx, cur_key, cur = -1, None, {}
    skipping = False
    for idx, key, ext, data in iter_members(f, url, wanted):
        if idx != cur_idx:
            if cur_idx >= 0:
                yield cur_idx, cur_key, (None if skipping else cur)
            cur_idx, cur_key, cur = idx, key, {}
            skipping = data is None
        if data is not None:
            cur[ext] = data
    if cur_idx >= 0:
        yield cur_idx, cur_key, (None if skipping else cur)
