"""A local outbox for MLflow calls made while the tracking server is unreachable.

Files in a pipeline run folder ``<storage.root>/runs/<run id>/``::

    outbox.jsonl      one JSON record per call, in call order: {"id", "ts", "uri", "op", "args"}
    outbox.sent       ids of records replayed (one per line), so a second sync sends nothing twice
    outbox.failed     ids the server rejected for good (JSON lines with the error)
    outbox.ids.json   placeholder run id → real MLflow run id, filled as runs get created
    outbox-files/     copies of artifacts logged while offline

Local folders are appended to with one ``write`` per line; object stores get a
read-modify-write (one writer per run folder at a time).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from typing import Any

from frugalcv.sharding import storage

PLACEHOLDER_PREFIX = "offline-"


def new_placeholder() -> str:
    return PLACEHOLDER_PREFIX + uuid.uuid4().hex


def is_placeholder(run_id: str | None) -> bool:
    return bool(run_id) and str(run_id).startswith(PLACEHOLDER_PREFIX)


class Outbox:
    """Append-only record log of one run folder plus what has been sent from it."""

    def __init__(self, run_dir: str):
        self.run_dir = str(run_dir)
        self.url = storage.join(self.run_dir, "outbox.jsonl")
        self.sent_url = storage.join(self.run_dir, "outbox.sent")
        self.failed_url = storage.join(self.run_dir, "outbox.failed")
        self.ids_url = storage.join(self.run_dir, "outbox.ids.json")
        self.files_url = storage.join(self.run_dir, "outbox-files")

    # ----------------------------------------------------------------------------- low level
    def _append_line(self, url: str, line: str) -> None:
        fs, path = storage.url_to_fs(url)
        data = (line.rstrip("\n") + "\n").encode()
        if storage.is_local(url):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            return
        old = storage.read_bytes(url) if storage.exists(url) else b""
        storage.write_bytes_atomic(url, old + data)

    def _lines(self, url: str) -> list[str]:
        try:
            text = storage.read_bytes(url).decode()
        except FileNotFoundError:
            return []
        # a crash mid-append can leave a partial last line: ignore it
        return [ln for ln in text.split("\n") if ln.strip()]

    # ----------------------------------------------------------------------------- records
    def append(self, op: str, args: dict[str, Any], uri: str, record_id: str | None = None) -> str:
        rid = record_id or uuid.uuid4().hex
        rec = {"id": rid, "ts": time.time(), "uri": uri, "op": op, "args": args}
        self._append_line(self.url, json.dumps(rec, sort_keys=True, default=str))
        return rid

    def records(self) -> list[dict[str, Any]]:
        out = []
        for ln in self._lines(self.url):
            try:
                out.append(json.loads(ln))
            except json.JSONDecodeError:
                continue
        return out

    def sent(self) -> set[str]:
        return set(self._lines(self.sent_url))

    def failed(self) -> set[str]:
        out = set()
        for ln in self._lines(self.failed_url):
            try:
                out.add(json.loads(ln)["id"])
            except (json.JSONDecodeError, KeyError):
                continue
        return out

    def pending(self) -> list[dict[str, Any]]:
        done = self.sent() | self.failed()
        return [r for r in self.records() if r["id"] not in done]

    def mark_sent(self, record_id: str) -> None:
        self._append_line(self.sent_url, record_id)

    def mark_failed(self, record_id: str, error: str) -> None:
        self._append_line(self.failed_url, json.dumps({"id": record_id, "error": error[:2000]}))

    # ----------------------------------------------------------------------------- ids
    def ids(self) -> dict[str, str]:
        try:
            return json.loads(storage.read_bytes(self.ids_url))
        except FileNotFoundError:
            return {}

    def set_id(self, placeholder: str, real: str) -> None:
        ids = {**self.ids(), placeholder: real}
        storage.write_bytes_atomic(self.ids_url, json.dumps(ids, indent=1, sort_keys=True).encode())

    # ----------------------------------------------------------------------------- files
    def store_file(self, record_id: str, local_path: str) -> str:
        """Copy an artifact (file or folder) logged while offline, it may be temporary, next to the outbox."""
        local_path = local_path.rstrip("/")
        url = storage.join(self.files_url, record_id, os.path.basename(local_path))
        files = [(local_path, url)]
        if os.path.isdir(local_path):
            files = [(os.path.join(d, f), storage.join(url, os.path.relpath(os.path.join(d, f), local_path)))
                     for d, _, names in os.walk(local_path) for f in names]
        for src, dst in files:
            with open(src, "rb") as f:
                storage.write_bytes_atomic(dst, f.read())
        return url

    @staticmethod
    def fetch_file(url: str, tmpdir: str) -> str:
        """A local path for a stored artifact (downloaded when the run folder is remote)."""
        if storage.is_local(url):
            return storage.url_to_fs(url)[1]
        fs, path = storage.url_to_fs(url)
        dst = os.path.join(tmpdir, uuid.uuid4().hex, os.path.basename(url.rstrip("/")))
        os.makedirs(os.path.dirname(dst))
        if fs.isdir(path):
            fs.get(path.rstrip("/") + "/", dst, recursive=True)
            return dst
        with storage.open_read(url) as src, open(dst, "wb") as out:
            shutil.copyfileobj(src, out)
        return dst
