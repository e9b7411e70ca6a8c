"""Turn plain YAML data into typed ``kw_only`` dataclasses, with errors that name the key path.

A small, explicit converter: the dataclass field types (``str``, ``int``, ``float``, ``bool``,
``Literal``, ``X | None``, ``list[X]``, ``dict[str, X]``, nested dataclasses, ``Any``) are the
schema. ``__post_init__`` checks raise :class:`FieldError`, which the converter turns into a
:class:`~frugalcv.errors.ConfigError` naming the file and the dotted path.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, Literal, Union

from frugalcv.errors import ConfigError


class FieldError(ConfigError):
    """A bad value: ``field`` is the dotted path (relative to the config whose ``__post_init__``
    raised it, absolute when raised by :func:`convert`) and ``message`` says what is allowed."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class Where:
    """Where a config came from: the file, the line of each dotted path, and which paths ``-o`` set."""

    def __init__(self, source: str = "<config>", overridden: dict[str, str] | None = None,
                 lines: dict[str, int] | None = None):
        self.source, self.overridden, self.lines = source, dict(overridden or {}), dict(lines or {})

    def error(self, path: str, message: str) -> ConfigError:
        for key, override in self.overridden.items():
            if path == key or path.startswith(key + "."):
                origin = f"{self.source} (override -o {override})"
                break
        else:
            origin = self.source
            prefix = path
            while prefix and prefix not in self.lines:
                prefix = prefix.rpartition(".")[0]
            if prefix:
                origin += f", line {self.lines[prefix]}"
        return ConfigError(f"{origin}: {path}: {message}" if path else f"{origin}: {message}")


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def suggest(key: str, allowed: typing.Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest allowed name, or ``""``."""
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_key(key: str, allowed: typing.Iterable[str]) -> str:
    allowed = sorted(allowed)
    return f"unknown key {key!r}{suggest(key, allowed) or '.'} Allowed keys: {', '.join(allowed)}"


def describe(tp: Any) -> str:
    """A user-facing name for a field type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any value"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else describe(a) for a in args)
    if origin is list:
        return f"a list of {describe(args[0])}"
    if origin is dict:
        return f"a mapping of {describe(args[0])} to {describe(args[1])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(tp))
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def item_label(item: Any, index: int) -> str | int:
    """List items that carry a plain ``name`` (stages) are addressed by it: ``stages.pretrain.params``."""
    name = item.get("name") if isinstance(item, dict) else None
    return name if isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_-]+", name) else index


def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def convert(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` against type ``tp`` and build dataclasses; raise ConfigError on mismatch."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = lambda: FieldError(path, f"{value!r} is not {describe(tp)}")  # noqa: E731
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return convert(option, value, path)
            except FieldError:
                if len(options) == 1:
                    raise
        raise bad()
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        hint = suggest(value, [str(a) for a in args]) if isinstance(value, str) else ""
        raise FieldError(path, f"{value!r} is not allowed; use one of {', '.join(repr(a) for a in args)}{hint}")
    if origin is list:
        if not isinstance(value, list):
            raise bad()
        return [convert(args[0], v, join(path, item_label(v, i))) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad()
        return {convert(args[0], k, path): convert(args[1], v, join(path, str(k)))
                for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad()
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad()
    raise TypeError(f"schema type {tp!r} at {path} is not supported")  # a bug in the schema, not the config


def build(cls: type, data: Any, path: str = "", **extra: Any) -> Any:
    """Build dataclass ``cls`` from mapping ``data``; unknown keys list the allowed ones."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FieldError(path, f"{data!r} is not {describe(cls)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    types_ = hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields or key in extra:
            raise FieldError(join(path, str(key)), unknown_key(str(key), set(fields) - set(extra)))
        kwargs[key] = convert(types_[key], value, join(path, key))
    try:
        return cls(**kwargs, **extra)
    except FieldError as e:
        raise FieldError(join(path, e.field), e.message) from None


def to_plain(obj: Any) -> Any:
    """Dataclasses → dicts (recursively), for YAML/JSON output."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
