"""Opening an MLflow tracking store safely from many processes at once.

MLflow creates and migrates a new ``sqlite:///`` store in whichever client touches it first, with
no lock: several processes starting together race in the schema migration and leave the file
half-migrated (``table _alembic_tmp_... already exists`` for every later client). Here the first
client of a sqlite store in a process creates it while holding an exclusive ``flock`` on
``<file>.lock`` next to the database, so the migration runs once; the others wait (at most
``lock_timeout_s``), then find the tables made. Server (``http://``) stores need no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator

from mlflow import MlflowClient

#: how long a process waits for another one to finish creating a sqlite store
LOCK_TIMEOUT_S = 120.0

_opened: set[str] = set()  # sqlite stores this process has already created or checked
_opened_guard = threading.Lock()


class _QuietLocked(logging.Filter):
    """MLflow logs a traceback for every sqlite "database is locked" before raising it; the caller
    retries it with backoff and warns in one line if it gives up, so the traceback is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "database is locked" not in record.getMessage()


_QUIET = _QuietLocked()


def sqlite_path(uri: str) -> str | None:
    """The database file of a ``sqlite:///`` tracking URI (None for other URIs and in-memory ones)."""
    if not uri.startswith("sqlite:"):
        return None
    path = uri.removeprefix("sqlite:").split("?", 1)[0]
    if not path.startswith("///"):
        return None  # sqlite:// (in memory) or a host form MLflow does not use
    path = path[3:]
    if not path or path == ":memory:":
        return None
    return os.path.abspath(path)


@contextlib.contextmanager
def store_lock(uri: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive lock on ``<sqlite file>.lock`` (nothing for non-sqlite URIs).

    Raises TimeoutError when another process holds it for more than ``timeout_s``.
    """
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lock_path = path + ".lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{lock_path} is held by another process for more than {timeout_s:.0f}s "
                                       "(is one stuck creating the MLflow store?)") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def open_client(uri: str, lock_timeout_s: float = LOCK_TIMEOUT_S) -> MlflowClient:
    """An MlflowClient for ``uri``; a sqlite store is created and migrated under :func:`store_lock`.

    Raises whatever MLflow raises when the store cannot be opened (callers queue to the outbox).
    """
    if sqlite_path(uri) is None:
        return MlflowClient(tracking_uri=uri)
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (a second of imports: not under the lock)

    logging.getLogger("mlflow.store.db.utils").addFilter(_QUIET)  # added once: filters are a set

    with _opened_guard:
        if uri in _opened:  # MLflow keeps the store of a URI for the process's lifetime
            return MlflowClient(tracking_uri=uri)
        with store_lock(uri, lock_timeout_s):
            client = MlflowClient(tracking_uri=uri)  # creates the tables and migrates a new file
        _opened.add(uri)
        return client


__all__ = ["LOCK_TIMEOUT_S", "open_client", "sqlite_path", "store_lock"]
