"""Stage registry: ``@register_stage("method.step")`` functions ``fn(ctx) -> StageResult``.

A stage function is the same code under every executor (inline, local child process, Slurm
job): it reads ``ctx.params`` and ``ctx.inputs`` (resolved URLs), writes into ``ctx.output_dir``
(rank 0 only), resumes from ``ctx.checkpoint_dir`` when it holds a checkpoint, polls
``ctx.should_stop()`` for preemption, and returns metrics plus ``{output name: URI}``; the runner
adds each output's sha256. An unknown stage name lists the registered ones (timm style).

A stage registered with ``array_tasks=fn(params) -> N`` may run as N independent tasks (a Slurm
job array): each task sees ``ctx.array = ArrayTask(index=i, count=N)`` and does its part; once all
N succeeded the runner calls the stage once more in the driver with ``ArrayTask(index=None,
count=N)`` (the final step: e.g. the shard manifest), whose result is the stage's result.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from frugalcv.errors import ConfigError, FrugalError
from frugalcv.workflows.pipeline.schema import suggest, unknown_key

#: entry-point group through which other packages add stage modules
ENTRY_POINT_GROUP = "frugalcv.stages"
_LOADED = False

_STAGES: dict[str, Callable[[StageContext], StageResult]] = {}
_ARRAY_TASKS: dict[str, Callable[[dict[str, Any]], int]] = {}


class StageInterrupted(FrugalError):
    """A stage stopped early (preemption) after writing a checkpoint; resuming continues it."""


class NullTracker:
    """Stand-in for :class:`frugalcv.workflows.pipeline.tracking.Tracker` on ranks > 0 or without tracking."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


@dataclass(frozen=True)
class ArrayTask:
    """Which part of an array stage this call is: task ``index`` of ``count``, or the final step (None)."""

    index: int | None
    count: int

    @property
    def is_final(self) -> bool:
        return self.index is None


@dataclass(kw_only=True)
class StageContext:
    """Everything a stage function may use; built by ``stages.entry`` from a stage spec."""

    pipeline: str
    run_id: str
    stage: str
    #: an instance of the stage's registered params dataclass (a dict for an untyped stage)
    params: Any
    #: input name -> resolved URL (``${stages.X.outputs.Y}`` already replaced)
    inputs: dict[str, str]
    #: ``<storage.root>/runs/<run id>/stages/<stage>/``; only rank 0 writes here
    output_dir: str
    #: where the stage keeps its resumable checkpoints (``<output_dir>/checkpoints``)
    checkpoint_dir: str
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: this rank's device: ``cuda:<local rank>`` on a GPU node, else the CPU
    device: Any = "cpu"
    engine: str = "ddp"
    deepspeed: dict[str, Any] | None = None
    #: ``fp32`` | ``bf16`` | ``fp16`` (autocast; a gradient scaler for fp16)
    precision: str = "fp32"
    #: 4-D activations in NHWC (``torch.channels_last``)
    channels_last: bool = False
    #: CPUs this rank may use (its Slurm allocation or its share of the machine)
    cpus: int = 1
    #: loader worker processes per rank (decode and augment)
    num_workers: int = 0
    tracker: Any = field(default_factory=NullTracker)
    #: checkpoint every N optimizer steps and/or every S seconds of training (0: neither)
    checkpoint_every: int = 0
    checkpoint_every_s: float = 0.0
    should_stop: Callable[[], bool] = lambda: False
    #: set when the stage runs as an array (see the module docstring); None for a plain run
    array: ArrayTask | None = None
    #: the smoke run's cap on optimizer steps and evaluation batches per stage (None: off)
    smoke_steps: int | None = None
    printer: Callable[[str], None] = print

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def param(self, name: str, default: Any = ...) -> Any:
        """One param by name, from the typed params or an untyped stage's dict."""
        if isinstance(self.params, dict):
            if name in self.params:
                return self.params[name]
        elif hasattr(self.params, name):
            return getattr(self.params, name)
        if default is ...:
            raise ConfigError(f"stages.{self.stage}.params.{name}: required by this stage")
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
    """What a stage returns: scalar metrics, its outputs ``{name: uri}`` (sha256 added by the runner)
    and the files to show in its tracking run: ``artifacts = {artifact folder: [file URLs]}``, e.g.
    ``{"report": [report.md, fig.png]}`` (a Markdown report is also logged as self-contained HTML)."""

    metrics: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": {k: float(v) for k, v in self.metrics.items()}, "outputs": dict(self.outputs),
                "artifacts": {k: [str(f) for f in v] for k, v in self.artifacts.items()}}


@dataclass(frozen=True)
class StageInfo:
    """What a stage declares when it registers: its params dataclass, input and output names."""

    name: str
    fn: Callable[[StageContext], StageResult]
    #: a dataclass whose fields are the stage's params (validated when the pipeline loads)
    params: type | None = None
    #: input names the stage needs, and those it may take
    inputs: tuple[str, ...] = ()
    optional_inputs: tuple[str, ...] = ()
    #: output names, or ``fn(params) -> names`` when they depend on the params (one per split);
    #: ``None``: not declared
    outputs: tuple[str, ...] | Callable[[Any], Iterable[str]] | None = None
    #: ``check(params, input names)``: cross-checks of params and inputs; raises FieldError
    check: Callable[[Any, Iterable[str]], None] | None = None
    #: the output that is a trained model; a pipeline registers the last such output it produced
    model: str | None = None

    def build_params(self, data: dict[str, Any] | Any, path: str = "params") -> Any:
        """``data`` as an instance of the params dataclass (FieldError names the key); a dict when untyped."""
        if self.params is None or dataclasses.is_dataclass(data):
            return data
        from frugalcv.workflows.pipeline.schema import build

        return build(self.params, dict(data or {}), path)

    def declared_outputs(self, params: Any) -> tuple[str, ...] | None:
        """The outputs a run with ``params`` will have, when the stage declares them."""
        if callable(self.outputs):
            return tuple(self.outputs(self.build_params(params)))
        return self.outputs

    def check_inputs(self, given: Iterable[str]) -> tuple[str, str] | None:
        """(input name, problem) for a missing or unknown input; None when they fit."""
        given = list(given)
        if self.params is None and not self.inputs and not self.optional_inputs:
            return None  # an untyped stage checks its own inputs
        for name in self.inputs:
            if name not in given:
                return name, (f"required by stage function {self.name!r} (it takes "
                              f"{', '.join(self.inputs + self.optional_inputs) or 'no inputs'})")
        allowed = self.inputs + self.optional_inputs
        for name in given:
            if name not in allowed:
                return name, unknown_key(name, allowed) if allowed else f"{self.name!r} takes no inputs"
        return None


_INFO: dict[str, StageInfo] = {}


def register_stage(name: str, *, params: type | None = None, inputs: Iterable[str] = (),
                   optional_inputs: Iterable[str] = (), outputs: Iterable[str] | Callable | None = None,
                   replace: bool = False, array_tasks: Callable[[Any], int] | None = None,
                   check: Callable[[Any, Iterable[str]], None] | None = None, model: str | None = None):
    """Decorator: register ``fn(ctx) -> StageResult`` under ``name`` (e.g. ``method.pretrain``).

    ``params``: the dataclass of the stage's params; every pipeline that uses the stage is checked
    against it when it loads, and ``ctx.params`` is an instance of it. ``inputs`` /
    ``optional_inputs``: the input names it needs / may take. ``array_tasks(params)``: how many
    array tasks the stage runs as (see the module docstring). ``check(params, inputs)``: further
    checks at load time, raising ``FieldError`` (e.g. an input that some params make required).
    ``model``: the output that is a trained model (the pipeline's last one goes to the model registry)."""
    if params is not None and not dataclasses.is_dataclass(params):
        raise TypeError(f"register_stage({name!r}): params must be a dataclass, got {params!r}")

    if model is not None and outputs is not None and not callable(outputs) and model not in tuple(outputs):
        raise ValueError(f"register_stage({name!r}): model={model!r} is not one of its outputs {tuple(outputs)}")

    def wrap(fn):
        if name in _STAGES and not replace and _STAGES[name] is not fn:
            raise ValueError(f"stage {name!r} is registered twice ({_STAGES[name].__module__} and {fn.__module__})")
        _STAGES[name] = fn
        _INFO[name] = StageInfo(name, fn, params, tuple(inputs), tuple(optional_inputs),
                                outputs if outputs is None or callable(outputs) else tuple(outputs), check, model)
        if array_tasks is not None:
            _ARRAY_TASKS[name] = array_tasks
        return fn

    return wrap


def stage_info(name: str) -> StageInfo:
    """The registration of stage function ``name`` (an unknown name lists the registered ones)."""
    get_stage(name)
    return _INFO[name]


def stage_array_tasks(name: str, params: Any) -> int:
    """How many array tasks stage function ``name`` runs as with ``params`` (1: a plain run)."""
    get_stage(name)
    fn = _ARRAY_TASKS.get(name)
    if fn is None:
        return 1
    return fn(stage_info(name).build_params(params))


def stage_modules() -> list[str]:
    """Modules that register stages: the built-in shard stage, every ``frugalcv.workflows.<pkg>.stages``
    module (one per method folder) and each ``<pkg>/*_stage.py`` module next to it (a stage kept in
    its own file), then the modules of the ``frugalcv.stages`` entry points."""
    import pkgutil

    import frugalcv.workflows as workflows

    found = ["frugalcv.workflows.pipeline.shard_stage"]
    for info in pkgutil.iter_modules(workflows.__path__):
        if not info.ispkg:
            continue
        package = f"frugalcv.workflows.{info.name}"
        if importlib.util.find_spec(f"{package}.stages") is not None:
            found.append(f"{package}.stages")
        spec = importlib.util.find_spec(package)
        for sub in pkgutil.iter_modules(spec.submodule_search_locations if spec else []):
            if sub.name.endswith("_stage") and not sub.ispkg:
                found.append(f"{package}.{sub.name}")
    from importlib.metadata import entry_points

    found += [ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return list(dict.fromkeys(found))


def _load_builtin() -> None:
    global _LOADED
    if _LOADED:
        return
    for module in stage_modules():
        importlib.import_module(module)
    _LOADED = True


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
    if not module or module in stage_modules():
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
    "ArrayTask", "NullTracker", "StageContext", "StageInterrupted", "StageResult", "get_stage", "import_origin",
    "StageInfo", "register_stage", "registered_stages", "stage_array_tasks", "stage_info", "stage_origin",
]
