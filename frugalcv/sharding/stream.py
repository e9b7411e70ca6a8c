"""One sequential read of a shard: resumed where it dropped, hashed as it goes.

What is verified when:

- A read that starts at byte 0 with ``sha256`` given hashes every byte it passes
  (members it does not want are read and hashed, not seeked past); ``finish()``
  reads the rest of the file and compares its size and sha256 with the manifest.
  ``iter_samples`` verifies every shard this way; ``ShardLoader`` verifies each shard
  on a worker's last pass over it in the epoch (every pass starts at byte 0).
- A read that stops early (the loader's earlier passes over a shard whose samples
  do not fit in ``cache_mb`` at once) verifies nothing: hashing is off for it and it
  seeks past unwanted members.
- Samples are handed on as they are read, so those of a damaged shard that come
  before its end have been used by the time the mismatch is raised.

A read that fails with a transient error (a connection error, a timeout, a response
cut short) reopens the file at the offset it had reached, after a backoff, for up to
``FRUGALCV_IO_ATTEMPTS`` attempts without progress; then ``ShardStreamLost`` (the tar
reader turns it into a ShardError naming the member being read).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import time

from frugalcv.errors import ShardError, ShardStreamLost
from frugalcv.sharding import storage

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


class ShardStream:
    """A read-only, forward-only file object over one shard (``read``, ``seek``, ``close``)."""

    def __init__(self, url: str, *, sha256: str | None = None, size: int | None = None):
        self.url, self.shown = url, storage.redact(url)
        self.pos = 0
        self._sha256, self._size = sha256, size
        self._hash = hashlib.sha256() if sha256 else None
        try:
            self._f = storage.open_read(url)
        except FileNotFoundError:
            raise ShardError(f"{self.shown}: shard listed in the manifest is missing") from None

    @property
    def verifying(self) -> bool:
        return self._hash is not None

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._f.read(n)
        except Exception as exc:  # noqa: BLE001  (classified in _resume)
            data = self._resume(exc, lambda f: f.read(n))
        self.pos += len(data)
        if self._hash is not None:
            self._hash.update(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = self.pos + offset if whence == io.SEEK_CUR else offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < self.pos:
            raise ShardError(f"{self.shown}: a shard is read forward only (seek to {target} from {self.pos})")
        if self._hash is not None:  # every byte must pass through the hash
            while self.pos < target and self.read(min(target - self.pos, _CHUNK)):
                pass
            return self.pos
        try:
            self._f.seek(target)
        except Exception as exc:  # noqa: BLE001
            self._resume(exc, lambda f: f.seek(target))
        self.pos = target
        return self.pos

    def tell(self) -> int:
        return self.pos

    def finish(self) -> None:
        """Read to the end of the file and check its size and sha256 against the manifest.

        Does nothing for a read made without ``sha256``. Raises ShardError naming the shard.
        """
        if self._hash is None:
            return
        limit = self._size if self._size is not None else float("inf")
        try:
            while self.read(_CHUNK) and self.pos <= limit:
                pass
        except ShardStreamLost as e:
            raise ShardError(e.at("the end of the archive (to check its sha256)")) from None
        fix = "the shard changed after the dataset was written: restore it, or write the dataset again"
        if self._size is not None and self.pos != self._size:
            have = f"more than {self._size}" if self.pos > self._size else str(self.pos)
            raise ShardError(f"{self.shown}: holds {have} bytes but the manifest says {self._size}; {fix}")
        digest = self._hash.hexdigest()
        if digest != self._sha256:
            raise ShardError(
                f"{self.shown}: sha256 {digest[:16]}… does not match the manifest's {self._sha256[:16]}…; {fix}"
            )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._f.close()

    def __enter__(self) -> ShardStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _resume(self, exc: BaseException, redo):
        """Reopen at ``self.pos`` and ``redo(file)`` after transient failures, with backoff."""
        attempts = storage.io_attempts()
        for failures in range(1, attempts + 1):
            if isinstance(exc, FileNotFoundError):
                raise ShardStreamLost(self.shown, self.pos, "the shard disappeared while being read") from None
            if not storage.is_transient(exc):
                raise ShardStreamLost(self.shown, self.pos, f"{type(exc).__name__}: {exc}") from None
            if failures == attempts:
                break
            delay = storage.retry_delay(failures)
            log.warning("%s: %s at byte %d (attempt %d/%d); reopening at that byte in %.1fs",
                        self.shown, type(exc).__name__, self.pos, failures, attempts, delay)
            time.sleep(delay)
            self.close()
            try:
                self._f = storage.open_read_once(self.url)
                self._f.seek(self.pos)
                return redo(self._f)
            except Exception as again:  # noqa: BLE001
                exc = again
        raise ShardStreamLost(
            self.shown, self.pos,
            f"the connection failed and did not come back: giving up after {attempts} attempts "
            f"(FRUGALCV_IO_ATTEMPTS): {type(exc).__name__}: {storage.redact(str(exc))}; "
            "check the endpoint and the network, then run again (training resumes from its last checkpoint)",
        ) from None
