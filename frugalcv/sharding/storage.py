"""fsspec access with retries, atomic writes and credential-free messages.

Every location in frugalcv is an fsspec URL (plain path, file://, s3://, gs://, memory://).
s3:// honours the standard ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` variables and
fsspec's own configuration (e.g. ``FSSPEC_S3_ENDPOINT_URL`` or a file in FSSPEC_CONFIG_DIR).

Retries: ``FRUGALCV_IO_ATTEMPTS`` (default 5) attempts with exponential backoff from
``FRUGALCV_IO_BACKOFF_S`` seconds (default 0.5, doubling, with jitter, at most 20 s).
Streaming reads of object-store files fetch ``FRUGALCV_IO_BLOCK_BYTES`` (default 4 MiB) a request.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import fsspec

from frugalcv.errors import FrugalError

log = logging.getLogger(__name__)
T = TypeVar("T")

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/@\s]+@")
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


def redact(url: str) -> str:
    """Drop ``user:secret@`` from a URL so it can be shown or logged."""
    return _USERINFO.sub(r"\g<scheme>***@", str(url))


def _storage_options(protocol: str) -> dict:
    if protocol in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        conf = fsspec.config.conf.get("s3", {})
        if endpoint and "endpoint_url" not in conf and "endpoint_url" not in conf.get("client_kwargs", {}):
            return {"endpoint_url": endpoint}
    return {}


def url_to_fs(url: str):
    """(filesystem, path) for any fsspec URL."""
    protocol = fsspec.core.split_protocol(str(url))[0] or "file"
    return fsspec.core.url_to_fs(str(url), **_storage_options(protocol))


def is_local(url: str) -> bool:
    fs, _ = url_to_fs(url)
    return "file" in _protocols(fs)


def _protocols(fs) -> tuple:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def join(base: str, *parts: str) -> str:
    out = str(base).rstrip("/")
    for p in parts:
        out = f"{out}/{str(p).strip('/')}"
    return out


def parent(url: str) -> str:
    url = str(url).rstrip("/")
    return url.rsplit("/", 1)[0] if "/" in url else "."


#: words in the class names of botocore/aiohttp/http.client errors that mean the connection failed
#: or a response was cut short (they do not derive from the builtin ConnectionError/TimeoutError)
_TRANSIENT_NAMES = ("Connection", "Timeout", "IncompleteRead", "ResponseStreaming", "ClientPayload", "HTTPClientError")


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: network trouble, throttling, timeouts, cut-short responses; not missing files."""
    if isinstance(exc, (*_PERMANENT, FrugalError, ValueError, KeyError)):
        return False
    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        return True
    return any(word in c.__name__ for c in type(exc).__mro__ for word in _TRANSIENT_NAMES)


def _env_number(name: str, default: float, cast=float):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise FrugalError(f"${name}={raw!r} is not a number") from None
    if value <= 0:
        raise FrugalError(f"${name}={raw!r} must be > 0")
    return value


def io_attempts() -> int:
    """How many times a storage operation is tried: $FRUGALCV_IO_ATTEMPTS, default 5."""
    return _env_number("FRUGALCV_IO_ATTEMPTS", 5, int)


def retry_delay(failures: int, base_delay: float | None = None) -> float:
    """Seconds to wait after ``failures`` failed attempts (1, 2, ...): exponential, jittered, capped."""
    base = _env_number("FRUGALCV_IO_BACKOFF_S", 0.5) if base_delay is None else base_delay
    return min(base * 2 ** (failures - 1), 20.0) * (0.5 + random.random())


def with_retries(fn: Callable[[], T], what: str, attempts: int | None = None, base_delay: float | None = None) -> T:
    """Call ``fn`` with exponential backoff (and jitter) on transient errors.

    The final error names ``what`` (a redacted URL). Attempts default to
    ``FRUGALCV_IO_ATTEMPTS`` or 5, the first delay to ``FRUGALCV_IO_BACKOFF_S`` or 0.5 s.
    """
    attempts = attempts or io_attempts()
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or i == attempts - 1:
                if is_transient(exc):
                    raise FrugalError(
                        f"{redact(what)}: giving up after {attempts} attempts: {type(exc).__name__}: {exc}"
                    ) from exc
                raise
            delay = retry_delay(i + 1, base_delay)
            log.warning("%s: %s (attempt %d/%d), retrying in %.1fs", redact(what), type(exc).__name__, i + 1, attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def read_bytes(url: str) -> bytes:
    fs, path = url_to_fs(url)
    return with_retries(lambda: fs.cat_file(path), url)


def exists(url: str) -> bool:
    fs, path = url_to_fs(url)
    return with_retries(lambda: fs.exists(path), url)


def size(url: str) -> int:
    fs, path = url_to_fs(url)
    return with_retries(lambda: fs.size(path), url)


def remove(url: str, recursive: bool = False) -> None:
    fs, path = url_to_fs(url)
    if fs.exists(path):
        with_retries(lambda: fs.rm(path, recursive=recursive), url)


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write ``data`` so readers see either nothing, the old file or the whole new file.

    Local files go through a temporary sibling and ``os.replace``; object stores
    make a single PUT visible atomically.
    """
    fs, path = url_to_fs(url)
    if "file" in _protocols(fs):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return

    def put():
        with fs.open(path, "wb") as f:
            f.write(data)

    with_retries(put, url)


def open_read_once(url: str, block_size: int | None = None):
    """Open for streaming reads, one attempt (the caller retries)."""
    fs, path = url_to_fs(url)
    if "file" in _protocols(fs):
        return open(path, "rb", buffering=1 << 20)
    block_size = block_size or _env_number("FRUGALCV_IO_BLOCK_BYTES", 4 << 20, int)
    return fs.open(path, "rb", block_size=block_size, cache_type="readahead")


def open_read(url: str, block_size: int | None = None):
    """Open for streaming reads (with retries on open)."""
    return with_retries(lambda: open_read_once(url, block_size), url)
