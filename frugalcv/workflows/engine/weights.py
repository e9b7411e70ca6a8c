"""Pretrained weights and model files: torchvision state dicts from a path or fsspec URL, loaded
with ``weights_only=True``; nothing is downloaded at run time.

``load_pretrained`` matches parameters by name and shape (frugalcv's ResNets use torchvision's
names) and says exactly what it did not load, so a wrong file fails loudly instead of silently
training from scratch.
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from frugalcv.errors import ConfigError
from frugalcv.sharding import storage

log = logging.getLogger(__name__)


def load_weights_only(data: bytes, url: str, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` of ``data`` read from ``url``; a file that is not one (truncated,
    another format, pickled code) is a ConfigError naming the file. Torch's own advice to turn
    ``weights_only`` off is not passed on: a file that needs it is not loaded."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = ("it holds pickled code or objects other than tensors and plain data, which frugalcv never "
               "loads" if "Weights only load failed" in str(e) else "not a torch.save file")
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, AttributeError, TypeError) as e:
        text = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        why = f"truncated or not a torch.save file ({text[:200]})"
    raise ConfigError(f"{storage.redact(url)}: not a loadable {what}: {why}; write it again with torch.save "
                      "(or the stage that produced it)")


def read_state(url: str, what: str = "file") -> dict:
    """A ``torch.save``'d dict at ``url``, loaded onto the CPU with ``weights_only=True``."""
    try:
        data = storage.read_bytes(url)
    except FileNotFoundError:
        raise ConfigError(f"{storage.redact(url)}: {what} not found") from None
    state = load_weights_only(data, url, what)
    if not isinstance(state, dict):
        raise ConfigError(f"{storage.redact(url)}: a {what} must hold a dict, got {type(state).__name__}")
    return state


def save_state(url: str, state: dict) -> None:
    """``torch.save`` ``state`` to ``url`` atomically (a temporary file and a rename, or one PUT)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    storage.write_bytes_atomic(url, buf.getvalue())


def _matches(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p.rstrip(".") or key.startswith(p) for p in prefixes)


def load_pretrained(module: nn.Module, url: str, *, allow_missing: Iterable[str] = (),
                    allow_unexpected: bool = False, allow_mismatch: Iterable[str] = ()) -> dict[str, list[str]]:
    """Copy a torchvision-style state dict at ``url`` into ``module`` by name and shape.

    ``allow_missing``: key prefixes of ``module`` that may stay as initialised (a new head);
    ``allow_unexpected``: the file may hold more (a deeper network's later blocks);
    ``allow_mismatch``: prefixes whose shapes may differ (a classifier for another number of classes).
    Anything else that does not fit is an error naming the keys. Returns ``{"loaded", "missing",
    "unexpected", "mismatched"}``.
    """
    state = read_state(url, "weights file")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    own = module.state_dict()
    shown = storage.redact(url)
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    bad_shape = [k for k in mismatched if not _matches(k, allow_mismatch)]
    if bad_shape:
        k = bad_shape[0]
        raise ConfigError(f"{shown}: {len(bad_shape)} tensor(s) have other shapes than the model's, e.g. {k}: "
                          f"file {tuple(state[k].shape)}, model {tuple(own[k].shape)}; is it the right weights file?")
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    bad_missing = [k for k in missing if not _matches(k, allow_missing)]
    if bad_missing:
        raise ConfigError(f"{shown}: {len(bad_missing)} of the model's {len(own)} tensors are not in the file "
                          f"(first: {', '.join(bad_missing[:3])}); is it the right weights file?")
    unexpected = [k for k in state if k not in own]
    if unexpected and not allow_unexpected:
        raise ConfigError(f"{shown}: {len(unexpected)} tensor(s) in the file have no place in the model "
                          f"(first: {', '.join(unexpected[:3])})")
    loaded = [k for k in own if k in state and k not in mismatched]
    with torch.no_grad():
        for k in loaded:
            own[k].copy_(state[k].to(own[k].dtype))
    log.info("loaded %d tensors from %s (%d missing, %d unused, %d other shapes)", len(loaded), shown,
             len(missing), len(unexpected), len(mismatched))
    return {"loaded": loaded, "missing": missing, "unexpected": unexpected, "mismatched": mismatched}
