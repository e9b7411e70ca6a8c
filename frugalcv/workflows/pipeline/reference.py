"""The pipeline file reference (``docs/pipeline-reference.md``), generated from the config and the
registered stages' params dataclasses: their fields, types, defaults and ``#:`` comments.

    python -m frugalcv.workflows.pipeline.reference [OUT.md]     # stdout without OUT
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import textwrap
import typing
from pathlib import Path

from frugalcv.workflows.pipeline import config as pipeline_config
from frugalcv.workflows.pipeline.stages import StageInfo, registered_stages, stage_info

_FIELD = re.compile(r"^\s+(\w+)\s*:")
HEADER = """# Pipeline file reference

Generated from the code by `python -m frugalcv.workflows.pipeline.reference docs/pipeline-reference.md`;
a test fails when it is stale. Every key below is checked when a pipeline loads (`run`, `sweep`,
`resume`, `--dry-run`); an unknown key or a bad value names the file, line and dotted key.
"""


def field_comments(cls: type) -> dict[str, str]:
    """``name -> text`` of the ``#:`` comment lines just above each field in ``cls``'s source."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = _FIELD.match(line)
        if match and pending:
            out[match.group(1)] = " ".join(pending)
        pending = []
    return out


def _type_name(tp) -> str:
    if isinstance(tp, type):
        return tp.__name__
    text = str(tp).replace("typing.", "")
    return re.sub(r"\b(?:[a-z_]+\.)+([A-Za-z_]\w*)", r"\1", text)  # module paths away


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if dataclasses.is_dataclass(value):
            return "(section)"
    else:
        return "required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def params_table(cls: type) -> str:
    hints = typing.get_type_hints(cls)
    notes = field_comments(cls)
    for base in cls.__mro__[1:]:
        if dataclasses.is_dataclass(base):
            notes = {**field_comments(base), **notes}
    rows = ["| key | type | default | what it does |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        rows.append(f"| `{f.name}` | `{_cell(_type_name(hints.get(f.name, f.type)))}` | {_cell(_default(f))} | "
                    f"{_cell(notes.get(f.name, ''))} |")
    return "\n".join(rows)


def _doc(obj) -> str:
    return textwrap.dedent(inspect.getdoc(obj) or "").strip()


def _class_doc(cls: type) -> list[str]:
    """The class's docstring, unless it is the signature dataclasses write for undocumented classes."""
    doc = _doc(cls)
    return [doc] if doc and not doc.startswith(cls.__name__ + "(") else []


def _section(title: str, cls: type) -> list[str]:
    return [f"### `{title}`", *_class_doc(cls), params_table(cls)]


def stage_section(info: StageInfo) -> list[str]:
    parts = [f"### `uses: {info.name}`"]
    if _doc(info.fn):
        parts.append(_doc(info.fn))
    names = [f"`{n}`" for n in info.inputs] + [f"`{n}` (optional)" for n in info.optional_inputs]
    parts.append(f"Inputs: {', '.join(names) or 'none'}.")
    if isinstance(info.outputs, tuple):
        parts.append(f"Outputs: {', '.join(f'`{n}`' for n in info.outputs) or 'none'}.")
    elif info.outputs is not None:
        parts.append("Outputs: one per split of the params (see the stage's description).")
    if info.params is not None:
        parts += [*_class_doc(info.params), params_table(info.params)]
        for cls, keys in nested_sections(info.params).items():
            parts += [f"`{cls.__name__}` (the keys of {', '.join(f'`{k}`' for k in keys)}):", *_class_doc(cls),
                      params_table(cls)]
    return parts


def nested_sections(cls: type) -> dict[type, list[str]]:
    """Dataclasses that fields of ``cls`` take (``fine: BackboneSpec``, ``X | None``), with those fields."""
    found: dict[type, list[str]] = {}
    for name, tp in typing.get_type_hints(cls).items():
        for option in (tp, *typing.get_args(tp)):
            if dataclasses.is_dataclass(option) and isinstance(option, type):
                found.setdefault(option, []).append(name)
    return found


def render() -> str:
    c = pipeline_config
    parts = [HEADER, "## The file", "Top-level keys, then each section's keys (`executor.slurm.partition`, ...)."]
    for title, cls in (("(top level)", c.PipelineConfig), ("storage", c.StorageConfig),
                       ("tracking", c.TrackingConfig), ("executor", c.ExecutorConfig),
                       ("executor.slurm", c.SlurmConfig), ("stages[]", c.StageConfig),
                       ("stages[].deepspeed", c.DeepSpeedConfig)):
        parts += _section(title, cls)
    parts += ["## Stages", "The `params` each registered stage takes (under `stages[].params`)."]
    for name in registered_stages():
        info = stage_info(name)
        if info.fn.__module__.startswith("frugalcv."):  # not the stages of other installed packages
            parts += stage_section(info)
    return "\n\n".join(p.strip() for p in parts).replace("``", "`") + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if argv:
        Path(argv[0]).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
