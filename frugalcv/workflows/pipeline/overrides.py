"""``-o key=value`` overrides of a pipeline file, and comma-list sweeps.

Paths are dotted and use stage names as elements: ``stages.curriculum.params.gamma=10``,
``executor.slurm.nodes=2``, ``stages.finetune.resources.gpus_per_node=4``. Values are YAML
scalars or lists (``1e-4``, ``true``, ``[a, b]``). ``stages.<stage>.<key>`` is shorthand for
``stages.<stage>.params.<key>`` when ``<key>`` is not a stage field but is already a param.
"""

from __future__ import annotations

import dataclasses
import itertools
import types
import typing
import unicodedata
from typing import Any

from frugalcv.errors import ConfigError
from frugalcv.workflows.pipeline.config import PipelineConfig, SlurmConfig, StageConfig, parse_yaml
from frugalcv.workflows.pipeline.redact import redact
from frugalcv.workflows.pipeline.schema import hints, suggest, unknown_key


def split_override(text: str) -> tuple[list[str], str]:
    """``"a.b=c"`` → (["a", "b"], "c"), with a ConfigError for anything not of that shape or with a
    control character (a newline would silently become a space in the YAML value)."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"override -o {redact(repr(text))}: expected key=value with a dotted key, "
                          "e.g. -o stages.curriculum.params.gamma=10")
    bad = next((c for c in text if _is_control(c)), None)
    if bad is not None:
        where = "value" if bad in raw else "key"
        raise ConfigError(f"override -o {key.strip()!r}: the {where} holds the control character {bad!r}; "
                          "pass a value without newlines, tabs or NUL (put multi-line text in the pipeline file)")
    return parts, raw


def _is_control(char: str) -> bool:
    """C0/C1 control characters and DEL (newline, tab, carriage return, NUL, escape...)."""
    return unicodedata.category(char) == "Cc"


def _field_type(cls: type, name: str) -> Any:
    tp = hints(cls)[name]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = options[0] if len(options) == 1 else tp
    return tp


def _child(node: dict, key: str) -> dict:
    if not isinstance(node.get(key), dict):
        node[key] = {}
    return node[key]


def apply_override(data: dict, text: str) -> str:
    """Apply one override to parsed pipeline data in place; return the canonical dotted path."""
    parts, raw = split_override(text)
    value = parse_yaml(raw, f"override -o {redact(text)}") if raw.strip() else None
    fail = lambda msg: ConfigError(f"override -o {redact(text)}: {msg}")  # noqa: E731
    node, cls, done = data, PipelineConfig, []
    i = 0
    while i < len(parts):
        part, last = parts[i], i == len(parts) - 1
        fields = [f.name for f in dataclasses.fields(cls) if f.init]
        if part not in fields:
            params = node.get("params") if cls is StageConfig else None
            if isinstance(params, dict) and part in params:
                parts.insert(i, "params")  # shorthand stages.<stage>.<param>
                continue
            hint = ("; a new hyper-parameter is set with stages.<stage>.params.<key>"
                    if cls is StageConfig else "")
            raise fail(f"{'.'.join([*done, part])}: {unknown_key(part, fields + list(params or []))}{hint}")
        done.append(part)
        if last:
            node[part] = value
            return ".".join(done)
        tp = _field_type(cls, part)
        if part == "stages" and cls is PipelineConfig:
            name = parts[i + 1]
            stages = [s for s in node.get("stages") or [] if isinstance(s, dict)]
            match = [s for s in stages if s.get("name") == name]
            if not match:
                names = ", ".join(str(s.get("name")) for s in stages)
                raise fail(f"no stage named {name!r}; stages: {names}{_close(name, stages)}")
            if i + 2 == len(parts):
                raise fail(f"give a key of stage {name!r}, e.g. stages.{name}.params.<key>=<value>")
            node, cls = match[0], StageConfig
            done.append(name)
            i += 2
            continue
        if part == "resources" and cls is StageConfig:
            node, cls = _child(node, part), SlurmConfig
        elif dataclasses.is_dataclass(tp):
            node, cls = _child(node, part), tp
        elif typing.get_origin(tp) is dict:  # free-form mapping (params, inputs, additional, ...)
            node = _child(node, part)
            for key in parts[i + 1:-1]:
                node = _child(node, key)
            node[parts[-1]] = value
            return ".".join(parts)
        else:
            raise fail(f"{'.'.join(done)} is a single value, so it has no key {parts[i + 1]!r}")
        i += 1
    raise AssertionError("unreachable")


def _close(name: str, stages: list[dict]) -> str:
    return suggest(name, [str(s.get("name")) for s in stages])


def apply_overrides(data: dict, overrides: list[str]) -> dict[str, str]:
    """Apply overrides in order; return {canonical dotted path: override text} for error messages."""
    return {apply_override(data, text): text for text in overrides}


def _sweep_values(raw: str) -> list[str] | None:
    stripped = raw.strip()
    if "," not in stripped or stripped[:1] in "[{\"'":
        return None
    return [v.strip() for v in stripped.split(",")]


def parse_sweep(overrides: list[str]) -> list[list[str]]:
    """Expand comma lists into one override set per run (the product when several keys sweep).

    ``["a.b=2,5,10", "c=1"]`` → ``[["a.b=2", "c=1"], ["a.b=5", "c=1"], ["a.b=10", "c=1"]]``.
    A value in quotes or brackets is never split: ``-o 'x="a,b"'``, ``-o x=[1,2]``.
    """
    choices: list[list[str]] = []
    for text in overrides:
        parts, raw = split_override(text)
        values = _sweep_values(raw)
        if values is None:
            choices.append([text])
            continue
        if not all(values):
            raise ConfigError(f"override -o {text}: empty value in the sweep list {raw!r}")
        choices.append([f"{text.partition('=')[0]}={v}" for v in values])
    return [list(combo) for combo in itertools.product(*choices)]
