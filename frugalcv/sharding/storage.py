"""fsspec access with retries, atomic writes and credential-free messages.

Every location in frugalcv is an fsspec URL (plain path, file://, s3://, gs://, memory://).
s3:// honours the standard ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` variables and
fsspec's own configuration (e.g. ``FSSPEC_S3_ENDPOINT_URL`` or a file in FSSPEC_CONFIG_DIR).

Storage options for a root (a pipeline's ``storage.options``) are registered with
:func:`set_root_options` and apply to every URL under that root; child processes inherit them
through ``FRUGALCV_STORAGE_OPTIONS`` (the environment, never a file). ``s3://KEY:SECRET@bucket/...``
is accepted and becomes the ``key``/``secret`` options. :func:`redact` is the one function that
every URL and message shown, logged, tracked or written goes through.

Retries: ``FRUGALCV_IO_ATTEMPTS`` (default 5) attempts with exponential backoff from
``FRUGALCV_IO_BACKOFF_S`` seconds (default 0.5, doubling, with jitter, at most 20 s).
Streaming reads of object-store files fetch ``FRUGALCV_IO_BLOCK_BYTES`` (default 4 MiB) a request.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import unquote

import fsspec

from frugalcv.errors import FrugalError

log = logging.getLogger(__name__)
T = TypeVar("T")

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<info>[^/@\s]+)@")
#: ``?token=...``/``&X-Amz-Signature=...``: query parameters that carry credentials
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&](?:[A-Za-z0-9_.-]*(?:token|secret|signature|password|passwd|credential|api_?key|access_?key)"
    r"[A-Za-z0-9_.-]*))=(?P<value>[^&#\s'\"]+)", re.IGNORECASE)
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
#: the environment variable that carries registered root options to child processes (JSON)
OPTIONS_ENV = "FRUGALCV_STORAGE_OPTIONS"
#: key names that hold credentials: secret/password anywhere; token, api key, access key, key id,
#: credentials as a whole word (so ``max_tokens`` or ``num_keys`` stay visible); s3fs's ``key``
SECRET_KEY = re.compile(
    r"secret|passw|^key$|(^|[^a-z])(token|api_?key|access_?key|key_?id|credentials?|private_?key|session_?key)"
    r"([^a-z]|$)", re.IGNORECASE)
REDACTED = "***"
_SECRETS: set[str] = set()
_ROOT_OPTIONS: dict[str, dict[str, Any]] = {}


def add_secret(value: Any) -> None:
    """Remember a credential so that :func:`redact` hides it wherever it appears (error texts too)."""
    text = str(value or "")
    if len(text) >= 4 and text != REDACTED:
        _SECRETS.add(text)
        _SECRETS.add(unquote(text))


def is_secret_key(name: Any) -> bool:
    """Whether a config or option key names a credential (its value is never shown or written)."""
    return bool(SECRET_KEY.search(str(name)))


def redact(text: Any) -> str:
    """``text`` (a URL or any message) without credentials: ``user:secret@`` of URLs, credential query
    parameters and every registered secret (:func:`add_secret`) become ``***``."""
    out = _USERINFO.sub(r"\g<scheme>***@", str(text))
    out = _SECRET_QUERY.sub(r"\g<key>=***", out)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        out = out.replace(secret, REDACTED)
    return out


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """``scheme://user:secret@host/p`` → (``scheme://host/p``, user, secret); both registered as secrets."""
    m = _USERINFO.match(str(url))
    if m is None:
        return str(url), None, None
    user, _, password = m.group("info").partition(":")
    user, password = unquote(user), unquote(password) if password else None
    add_secret(password)
    if password is None:
        add_secret(user)  # a bare token as user name
    return m.group("scheme") + str(url)[m.end():], user, password


def set_root_options(root: str, options: Mapping[str, Any] | None) -> None:
    """fsspec options for every URL under ``root`` (e.g. ``key``, ``secret``, ``endpoint_url``); also
    exported to child processes through the environment. Values ``***`` (a scrubbed copy) are ignored."""
    options = {k: v for k, v in (options or {}).items() if v != REDACTED}
    for key, value in options.items():
        if is_secret_key(key):
            add_secret(value)
    prefix = str(root).rstrip("/")
    if not options or "://" not in prefix:
        return
    merged = {**_ROOT_OPTIONS.get(prefix, {}), **options}
    if merged == _ROOT_OPTIONS.get(prefix):
        return
    _ROOT_OPTIONS[prefix] = merged
    os.environ[OPTIONS_ENV] = json.dumps(_ROOT_OPTIONS, sort_keys=True)


def _load_env_options() -> None:
    try:
        inherited = json.loads(os.environ.get(OPTIONS_ENV) or "{}")
    except json.JSONDecodeError:
        log.warning("%s is not JSON; ignored", OPTIONS_ENV)
        return
    for root, options in inherited.items() if isinstance(inherited, dict) else ():
        if isinstance(options, dict):
            set_root_options(root, options)


def root_options(url: str) -> dict[str, Any]:
    """The registered options of the longest root that ``url`` lies under."""
    url = str(url)
    best = ""
    for prefix in _ROOT_OPTIONS:
        if (url == prefix or url.startswith(prefix + "/")) and len(prefix) > len(best):
            best = prefix
    return dict(_ROOT_OPTIONS.get(best, {}))


def _storage_options(protocol: str) -> dict:
    if protocol in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        conf = fsspec.config.conf.get("s3", {})
        if endpoint and "endpoint_url" not in conf and "endpoint_url" not in conf.get("client_kwargs", {}):
            return {"endpoint_url": endpoint}
    return {}


def url_to_fs(url: str):
    """(filesystem, path) for any fsspec URL, with the options registered for its root."""
    url = str(url)
    protocol = fsspec.core.split_protocol(url)[0] or "file"
    options = {**_storage_options(protocol), **root_options(url)}
    if protocol in ("s3", "s3a"):
        clean, user, password = split_userinfo(url)
        if user is not None:
            url = clean
            options.update(key=user, secret=password)
    try:
        return fsspec.core.url_to_fs(url, **options)
    except (ImportError, ValueError, TypeError) as e:
        raise FrugalError(f"{redact(url)}: cannot open this location: {redact(e)}") from None


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
            if type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
                raise FrugalError(
                    f"{redact(what)}: no usable credentials for this store ({redact(exc)}): set them in the "
                    "environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE) or in storage.options "
                    "(key, secret)") from exc
            if not is_transient(exc) or i == attempts - 1:
                if is_transient(exc):
                    raise FrugalError(
                        f"{redact(what)}: giving up after {attempts} attempts: {type(exc).__name__}: {redact(exc)}"
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


def file_sizes(url: str) -> dict[str, int]:
    """``{name: bytes}`` of the files directly in the folder ``url`` (one listing; empty when it is missing)."""
    fs, path = url_to_fs(url)
    fs.invalidate_cache(path)

    def listing():
        try:
            return fs.ls(path, detail=True)
        except FileNotFoundError:
            return []

    return {e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0)
            for e in with_retries(listing, url) if e.get("type") == "file"}


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


_load_env_options()
