"""Keep credentials out of what gets tracked: scrub secret-looking keys and ``user:pass@`` URLs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from frugalcv.sharding.storage import redact

REDACTED = "***"
#: key names that hold credentials: secret/password anywhere; token, api key, access key, key id,
#: credentials as a whole word (so ``max_tokens`` or ``num_keys`` stay visible)
SECRET_KEY = re.compile(
    r"secret|passw|(^|[^a-z])(token|api_?key|access_?key|key_?id|credentials?|private_?key|session_?key)([^a-z]|$)",
    re.IGNORECASE,
)


def is_secret_key(key: Any) -> bool:
    return bool(SECRET_KEY.search(str(key)))


def scrub(obj: Any) -> Any:
    """A copy of ``obj`` with values under secret-looking keys replaced and URL credentials dropped."""
    if isinstance(obj, Mapping):
        return {k: (REDACTED if is_secret_key(k) and v not in (None, "") else scrub(v)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(scrub(v) for v in obj)
    if isinstance(obj, str):
        return redact(obj)
    return obj


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
