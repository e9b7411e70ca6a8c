"""Stage registry: ``@register_stage("blockdrop.pretrain")`` functions ``fn(ctx) -> StageResult``.

A stage function is the same code under every executor (inline, local child process, Slurm
job): it reads ``ctx.params`` and ``ctx.inputs`` (resolved URLs), writes into ``ctx.output_dir``
(rank 0 only), resumes from ``ctx.checkpoint_dir`` when it holds a checkpoint, polls
``ctx.should_stop()`` for preemption, and returns metrics plus ``{output name: URI}``; the runner
adds each output's sha256. An unknown stage name lists the registered ones (timm style).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from frugalcv.errors import ConfigError, FrugalError
from frugalcv.workflows.schema import suggest

#: modules holding the built-in stages; imported on first lookup
BUILTIN_MODULES = ("frugalcv.workflows.stages.shard", "frugalcv.workflows.stages.blockdrop")

_STAGES: dict[str, Callable[[StageContext], StageResult]] = {}


class StageInterrupted(FrugalError):
    """A stage stopped early (preemption) after writing a checkpoint; resuming continues it."""


class NullTracker:
    """Stand-in for :class:`frugalcv.workflows.tracking.Tracker` on ranks > 0 or without tracking."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


@dataclass(kw_only=True)
class StageContext:
    """Everything a stage function may use; built by ``stages.entry`` from a stage spec."""

    pipeline: str
    run_id: str
    stage: str
    params: dict[str, Any]
    #: input name -> resolved URL (``${stages.X.outputs.Y}`` already replaced)
    inputs: dict[str, str]
    #: ``<storage.root>/runs/<run id>/stages/<stage>/``; only rank 0 writes here
    output_dir: str
    #: where the stage keeps its resumable checkpoints (``<output_dir>/checkpoints``)
    checkpoint_dir: str
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    engine: str = "ddp"
    deepspeed: dict[str, Any] | None = None
    tracker: Any = field(default_factory=NullTracker)
    #: checkpoint every N optimizer steps (0: only at the end); the runner's ``checkpoint_every``
    checkpoint_every: int = 0
    should_stop: Callable[[], bool] = lambda: False
    printer: Callable[[str], None] = print

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def param(self, name: str, default: Any = ...) -> Any:
        if name in self.params:
            return self.params[name]
        if default is ...:
            raise ConfigError(f"stages.{self.stage}.params.{name}: required by this stage "
                              f"(given: {', '.join(sorted(self.params)) or 'none'})")
        return default

    def input(self, name: str) -> str:
        if name not in self.inputs:
            raise ConfigError(f"stages.{self.stage}.inputs.{name}: required by this stage "
                              f"(given: {', '.join(sorted(self.inputs)) or 'none'})")
        return self.inputs[name]

    def path(self, *parts: str) -> str:
        """A file under the stage's output folder."""
        return os.path.join(self.output_dir, *parts)


@dataclass(kw_only=True)
class StageResult:
    """What a stage returns: scalar metrics and its outputs ``{name: uri}`` (sha256 added by the runner)."""

    metrics: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": {k: float(v) for k, v in self.metrics.items()}, "outputs": dict(self.outputs)}


def register_stage(name: str, *, replace: bool = False):
    """Decorator: register ``fn(ctx) -> StageResult`` under ``name`` (e.g. ``blockdrop.pretrain``)."""

    def wrap(fn):
        if name in _STAGES and not replace and _STAGES[name] is not fn:
            raise ValueError(f"stage {name!r} is registered twice ({_STAGES[name].__module__} and {fn.__module__})")
        _STAGES[name] = fn
        return fn

    return wrap


def _load_builtin() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def registered_stages() -> list[str]:
    _load_builtin()
    return sorted(_STAGES)


def get_stage(name: str) -> Callable[[StageContext], StageResult]:
    _load_builtin()
    fn = _STAGES.get(name)
    if fn is None:
        known = sorted(_STAGES)
        raise ConfigError(f"unknown stage function {name!r}{suggest(name, known) or '.'} "
                          f"Registered: {', '.join(known)}")
    return fn


def stage_origin(name: str) -> dict[str, str]:
    """Module name and file of a stage function, so a child process can import it (test stages too)."""
    fn = get_stage(name)
    return {"module": fn.__module__, "file": inspect.getfile(fn)}


def import_origin(origin: dict[str, str]) -> None:
    """Import the module that registers a stage; by file when the name is not importable here."""
    module = origin.get("module", "")
    if module in BUILTIN_MODULES or not module:
        return
    if module != "__main__":  # a script's stages: its __main__ here is another module
        try:
            importlib.import_module(module)
            return
        except ImportError:
            pass
    name = module if module != "__main__" else "_frugalcv_script_stages"
    spec = importlib.util.spec_from_file_location(name, origin["file"])
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import the module of a stage function: {origin}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)


__all__ = [
    "NullTracker", "StageContext", "StageInterrupted", "StageResult", "get_stage", "import_origin",
    "register_stage", "registered_stages", "stage_origin",
]
