"""Keep credentials out of what gets shown, logged, tracked or written.

:func:`redact` (``frugalcv.sharding.storage.redact``) is the one function for text and URLs;
:func:`scrub` applies it to plain data and replaces values under secret-looking keys.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from frugalcv.sharding.storage import REDACTED, add_secret, is_secret_key, redact, split_userinfo

__all__ = ["REDACTED", "RedactingFilter", "flatten", "is_secret_key", "live_tracking_uri", "redact",
           "register_tracking_uri", "remember_secrets", "scrub"]

#: the environment variable that carries tracking URIs with credentials to child processes (JSON)
TRACKING_URIS_ENV = "FRUGALCV_TRACKING_URIS"
_LIVE: dict[str, str] = {}


def register_tracking_uri(uri: str) -> str:
    """The form of a tracking URI to show and store (``http://***@host``); the URI with its
    credentials stays in this process (and its children's environment) for :func:`live_tracking_uri`."""
    shown = redact(uri)
    split_userinfo(uri)  # registers the password for redact()
    if shown != uri and _LIVE.get(shown) != uri:
        _LIVE[shown] = uri
        os.environ[TRACKING_URIS_ENV] = json.dumps(_LIVE, sort_keys=True)
    return shown


def live_tracking_uri(uri: str) -> str:
    """The URI to connect with: a stored ``scheme://***@host`` URI with the credentials given to this
    process (the pipeline file, ``--uri``, or a parent process) put back. For http(s) they go to
    MLflow's ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` instead and the URI returned has none, so
    that no URL MLflow prints ("View run at ...") carries them."""
    live = _LIVE.get(uri)
    if live is None:
        try:
            inherited = json.loads(os.environ.get(TRACKING_URIS_ENV) or "{}")
        except json.JSONDecodeError:
            inherited = {}
        live = inherited.get(uri) if isinstance(inherited, dict) else None
        if not isinstance(live, str):
            return uri
        register_tracking_uri(live)
    if live.startswith(("http://", "https://")):
        clean, user, password = split_userinfo(live)
        if user is not None:
            os.environ["MLFLOW_TRACKING_USERNAME"] = user
            if password is not None:
                os.environ["MLFLOW_TRACKING_PASSWORD"] = password
            return clean
    return live


def scrub(obj: Any) -> Any:
    """A copy of ``obj`` with values under secret-looking keys replaced and credentials redacted."""
    if isinstance(obj, Mapping):
        return {k: (REDACTED if is_secret_key(k) and v not in (None, "") else scrub(v)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(scrub(v) for v in obj)
    if isinstance(obj, str):
        return redact(obj)
    return obj


def remember_secrets(obj: Any) -> None:
    """Register every credential in plain data (values under secret keys, URL passwords) for :func:`redact`."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if is_secret_key(k) and isinstance(v, str | int):
                add_secret(v)
            else:
                remember_secrets(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            remember_secrets(v)
    elif isinstance(obj, str) and "@" in obj:
        split_userinfo(obj)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record's message (arguments included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error path
            return True
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_text is None and record.exc_info[0] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists and other values are kept as leaves."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def drop_unset(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flattened params without the unset ones (None, '', empty dicts and lists): a run's params
    list what a user set or what changes results, not ``executor.slurm.account = None``."""
    return {k: v for k, v in flat.items() if v is not None and v != "" and not (isinstance(v, Mapping | list | tuple) and not v)}
