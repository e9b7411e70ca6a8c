"""Values that reach an sbatch script, and submitit executor parameters from a plain dict."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from frugalcv.errors import ConfigError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SBATCH_FLAG = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")

# key -> (type check, AutoExecutor name, SlurmExecutor name)
_POSITIVE_INT = "a positive int"
_NON_NEGATIVE_INT = "an int >= 0"
_TEXT = "a non-empty string"
ALLOWED: dict[str, tuple[str, str, str]] = {
    "nodes": (_POSITIVE_INT, "nodes", "nodes"),
    "tasks_per_node": (_POSITIVE_INT, "tasks_per_node", "ntasks_per_node"),
    "cpus_per_task": (_POSITIVE_INT, "cpus_per_task", "cpus_per_task"),
    "gpus_per_node": (_NON_NEGATIVE_INT, "gpus_per_node", "gpus_per_node"),
    "mem_gb": ("a number > 0", "mem_gb", "mem"),
    "timeout_min": (_POSITIVE_INT, "timeout_min", "time"),
    "partition": (_TEXT, "slurm_partition", "partition"),
    "account": (_TEXT, "slurm_account", "account"),
    "qos": (_TEXT, "slurm_qos", "qos"),
    "constraint": (_TEXT, "slurm_constraint", "constraint"),
    "additional": (
        "a mapping of sbatch flag -> value",
        "slurm_additional_parameters",
        "additional_parameters",
    ),
    "setup": ("a list of shell lines", "slurm_setup", "setup"),
    "job_name": (_TEXT, "name", "job_name"),
}


def quote(value: Any) -> str:
    """``value`` as one shell word (``shlex.quote``): safe in a setup line of an sbatch script."""
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if "\0" in text:
        raise ConfigError(f"{text!r}: a NUL byte cannot reach a shell script")
    return shlex.quote(text)


def export_line(name: str, value: Any) -> str:
    """``export NAME='value'`` for the setup section of an sbatch script."""
    if not _ENV_NAME.fullmatch(name):
        raise ConfigError(f"{name!r} is not a valid environment variable name")
    return f"export {name}={quote(value)}"


def check_job_folder(folder: str | os.PathLike) -> Path:
    """A submitit folder must not contain a newline: ``#SBATCH --output=...`` lines are read line by line.

    Spaces and quotes are fine (submitit quotes the value, sbatch unquotes it).
    """
    path = Path(folder)
    if "\n" in str(path) or "\r" in str(path):
        raise ConfigError(
            f"job folder {str(path)!r} contains a newline, which an #SBATCH line cannot hold; choose another folder"
        )
    return path


def _check_value(key: str, value: Any) -> None:
    kind = ALLOWED[key][0]
    ok = True
    if kind in (_POSITIVE_INT, _NON_NEGATIVE_INT):
        ok = (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value >= (1 if kind == _POSITIVE_INT else 0)
        )
    elif key == "mem_gb":
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    elif kind == _TEXT:
        ok = isinstance(value, str) and value.strip() != "" and "\n" not in value
    elif key == "additional":
        ok = isinstance(value, Mapping) and all(
            isinstance(k, str) and _SBATCH_FLAG.fullmatch(k) for k in value
        )
        ok = ok and all(
            isinstance(v, str | int | float | bool) and "\n" not in str(v) for v in value.values()
        )
    elif key == "setup":
        ok = isinstance(value, list | tuple) and all(isinstance(line, str) for line in value)
    if not ok:
        raise ConfigError(f"slurm.{key}={value!r}: expected {kind}")


def validate(params: Mapping[str, Any]) -> dict[str, Any]:
    """Check a plain dict of Slurm parameters; drops None values and gpus_per_node=0."""
    unknown = sorted(set(params) - set(ALLOWED))
    if unknown:
        raise ConfigError(
            f"unknown Slurm parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(ALLOWED))}"
        )
    out = {}
    for key, value in params.items():
        if value is None or (key == "gpus_per_node" and value == 0):
            continue
        _check_value(key, value)
        out[key] = dict(value) if key == "additional" else list(value) if key == "setup" else value
    return out


def auto_executor_parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``submitit.AutoExecutor.update_parameters``."""
    return {ALLOWED[k][1]: v for k, v in validate(params).items()}


def slurm_executor_parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``submitit.SlurmExecutor.update_parameters`` (its sbatch names)."""
    out = {}
    for key, value in validate(params).items():
        if key == "mem_gb":  # submitit's own formatting (AutoExecutor does the same)
            value = f"{int(value)}GB" if value == int(value) else f"{int(value * 1024)}MB"
        out[ALLOWED[key][2]] = value
    return out


def make_executor(folder: str | os.PathLike, params: Mapping[str, Any], cluster: str | None = None):
    """A ``submitit.AutoExecutor`` in ``folder`` with ``params`` (``cluster='slurm'``, 'local', 'debug')."""
    import submitit

    ex = submitit.AutoExecutor(folder=check_job_folder(folder), cluster=cluster)
    ex.update_parameters(**auto_executor_parameters(params))
    return ex
