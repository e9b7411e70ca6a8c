"""Model registry (timm style): the decorated function's name is the model's key.

Every constructor takes explicit keyword arguments and a ``debug`` flag that builds a tiny
flavour of the same architecture for fast CPU tests.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from frugalcv.errors import ConfigError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


class UnknownModelError(ConfigError):
    """A model name (or a constructor argument) that the registry does not know."""


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name; its docstring's first line is the description."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models() -> dict[str, str]:
    """Registered names (sorted) mapped to one-line descriptions."""
    return {name: _describe(_MODELS[name]) for name in sorted(_MODELS)}


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; unknown names or arguments raise ``UnknownModelError``."""
    fn = _MODELS.get(name)
    if fn is None:
        known = ", ".join(sorted(_MODELS))
        raise UnknownModelError(f"unknown model {name!r}; known models: {known}")
    allowed = list(inspect.signature(fn).parameters)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise UnknownModelError(
            f"model {name!r} got unknown argument(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
    return fn(**kwargs)


def _describe(fn: Callable) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.splitlines()[0] if doc else ""
