"""Pipeline files: YAML → typed, validated config objects.

A pipeline names its storage root, its tracking store, how stages execute and the ordered
stages. Every error names the file, the dotted key path, the bad value and what is allowed::

    pipelines/x.yaml, line 12: stages.curriculum.parms: unknown key 'parms'; did you mean 'params'? ...

Entry point: :func:`load_pipeline`. Overrides (``-o key=value``) are in ``overrides.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from frugalcv.errors import ConfigError
from frugalcv.sharding import storage
from frugalcv.workflows.pipeline.redact import register_tracking_uri
from frugalcv.workflows.pipeline.schema import (
    FieldError,
    Where,
    build,
    convert,
    hints,
    item_label,
    join,
    suggest,
    to_plain,
    unknown_key,
)
from frugalcv.workflows.pipeline.yamlfile import key_lines, parse_yaml

STAGE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
PIPELINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
USES_NAME = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*")
#: a whole input value that names another stage's output
REFERENCE = re.compile(r"\$\{stages\.([^.{}]+)\.outputs\.([^.{}]+)\}")
DEFAULT_ROOT = "./frugalcv-runs"
_PLACEHOLDER = re.compile(r"\$\{([^{}]*)\}")
#: characters that no #SBATCH line can carry, quoted or not
_UNSAFE = ("\n", "\r", "\0")


# ------------------------------------------------------------------------------------ configs


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _absolute(url: str) -> str:
    """A plain relative path → absolute against the current directory; URLs unchanged."""
    if "://" in url or url.startswith(("models:/", "runs:/")):  # URLs and tracking-store references
        return url
    return os.path.abspath(os.path.expanduser(url))


def _s3_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """``s3://KEY:SECRET@bucket/p`` → (``s3://bucket/p``, KEY, SECRET); other URLs unchanged."""
    if url.startswith(("s3://", "s3a://")):
        return storage.split_userinfo(url)
    return url, None, None


def _check_sbatch_safe(name: str, value: Any) -> None:
    if isinstance(value, str) and any(c in value for c in _UNSAFE):
        raise FieldError(name, f"{value!r}: newlines and NUL cannot be written into an #SBATCH line")


@dataclass(kw_only=True, slots=True)
class SlurmConfig:
    """Slurm resources of one job (submitit's names where it has one). Stages override any key."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: float | None = 8.0
    timeout_min: int = 60
    constraint: str | None = None
    #: seconds between the preemption/timeout signal (USR2) and the kill: time to checkpoint
    signal_delay_s: int = 120
    #: allow Slurm to requeue the job (``#SBATCH --requeue``) after preemption or timeout
    requeue: bool = True
    #: how many timeouts submitit resubmits before giving up (its ``max_num_timeout``)
    max_requeues: int = 3
    #: at most this many tasks of a job array (a sweep, a ``shard`` stage with ``tasks``) run at
    #: once: the ``%P`` of ``#SBATCH --array=0-N%P``
    array_parallelism: int = 256
    #: any other sbatch option, e.g. ``{exclude: "node[1-3]", mail-type: END}``
    additional: dict[str, str | int | float | bool] = field(default_factory=dict)
    #: shell lines run in the job before srun (module loads, venv activation), written verbatim
    setup: list[str] = field(default_factory=list)

    def __post_init__(self):
        for name in ("nodes", "tasks_per_node", "cpus_per_task", "timeout_min", "array_parallelism"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"{getattr(self, name)!r}: must be >= 1")
        for name in ("gpus_per_node", "signal_delay_s", "max_requeues"):
            if getattr(self, name) < 0:
                raise FieldError(name, f"{getattr(self, name)!r}: must be >= 0")
        if self.mem_gb is not None and self.mem_gb <= 0:
            raise FieldError("mem_gb", f"{self.mem_gb!r}: must be > 0 (or null for the partition default)")
        if self.signal_delay_s >= self.timeout_min * 60:
            raise FieldError("signal_delay_s", f"{self.signal_delay_s!r}: must be shorter than "
                             f"timeout_min ({self.timeout_min} min = {self.timeout_min * 60} s)")
        for name in ("partition", "account", "qos", "constraint"):
            _check_sbatch_safe(name, getattr(self, name))
        reserved = {"nodes", "ntasks_per_node", "ntasks-per-node", "cpus_per_task", "cpus-per-task", "time",
                    "mem", "partition", "account", "qos", "constraint", "gpus_per_node", "gpus-per-node",
                    "job_name", "job-name", "output", "error", "signal", "open-mode", "open_mode", "requeue",
                    "array"}
        for key, value in self.additional.items():
            if key in reserved:
                raise FieldError(f"additional.{key}", "is set by frugalcv or by a first-class key of "
                                 f"executor.slurm ({', '.join(f.name for f in dataclasses.fields(self))})")
            if not re.fullmatch(r"[a-z][a-z0-9_-]*", key):
                raise FieldError(f"additional.{key}", "sbatch option names are lower-case letters, digits, - and _")
            if value is False:
                raise FieldError(f"additional.{key}", "false is not an sbatch value; remove the key instead")
            _check_sbatch_safe(f"additional.{key}", str(value))


SLURM_KEYS = tuple(f.name for f in dataclasses.fields(SlurmConfig))


@dataclass(kw_only=True, slots=True)
class ExecutorConfig:
    """Where stages run: ``inline`` (this process), ``local`` (child processes), ``slurm`` (sbatch)."""

    kind: Literal["inline", "local", "slurm"] = "inline"
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


@dataclass(kw_only=True, slots=True)
class StorageConfig:
    """One fsspec root for shards, checkpoints and reports. A relative path resolves against the cwd."""

    root: str = DEFAULT_ROOT
    #: fsspec storage options, e.g. ``{endpoint_url: http://127.0.0.1:5000}`` for S3
    options: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if not self.root:
            raise FieldError("root", "'': give a folder or an fsspec URL")
        root, user, password = _s3_userinfo(self.root)
        if user is not None:  # s3://KEY:SECRET@bucket: the credentials become options, never part of a path
            self.options = {**self.options, "key": user, **({"secret": password} if password else {})}
        self.root = _absolute(root).rstrip("/") or "/"
        storage.set_root_options(self.root, self.options)

    @property
    def is_local(self) -> bool:
        return _is_local(self.root)


@dataclass(kw_only=True, slots=True)
class TrackingConfig:
    """MLflow store. ``uri`` defaults to ``sqlite:///<storage.root>/mlflow.db`` for a local root."""

    uri: str | None = None
    #: MLflow experiment; defaults to the pipeline name
    experiment: str | None = None
    #: registered model that gets a version for the pipeline's final model; defaults to the pipeline name
    model_name: str | None = None

    def __post_init__(self):
        # sqlite:///relative.db is relative to the cwd of whoever opens it; pin it now
        if self.uri and self.uri.startswith("sqlite:///") and not self.uri.startswith("sqlite:////"):
            self.uri = "sqlite:///" + os.path.abspath(self.uri[len("sqlite:///"):])
        if self.uri:  # user:password@ stays in this process; the config holds http://***@host
            self.uri = register_tracking_uri(self.uri)


@dataclass(kw_only=True, slots=True)
class DeepSpeedConfig:
    """DeepSpeed engine settings; ``config`` is merged into the generated DeepSpeed JSON."""

    zero_stage: Literal[0, 1, 2, 3] = 0
    offload_optimizer: bool = False
    offload_param: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.offload_param and self.zero_stage != 3:
            raise FieldError("offload_param", f"needs zero_stage 3 (got {self.zero_stage})")
        if self.offload_optimizer and self.zero_stage == 0:
            raise FieldError("offload_optimizer", "needs zero_stage 1, 2 or 3 (got 0)")


@dataclass(kw_only=True, slots=True)
class StageConfig:
    """One step of a pipeline: the registered stage function ``uses`` run on ``inputs`` with ``params``."""

    name: str
    #: registered stage function, e.g. ``method.pretrain`` or ``shard``
    uses: str
    #: input name → fsspec URL, ``${stages.<earlier stage>.outputs.<output>}``, or a tracking-store
    #: reference ``models:/NAME/VERSION`` / ``runs:/RUN_ID/OUTPUT`` (resolved to its checkpoint)
    inputs: dict[str, str] = field(default_factory=dict)
    #: hyper-parameters for the stage function (it validates them)
    params: dict[str, Any] = field(default_factory=dict)
    #: overrides of ``executor.slurm`` keys for this stage
    resources: dict[str, Any] = field(default_factory=dict)
    engine: Literal["ddp", "deepspeed"] = "ddp"
    deepspeed: DeepSpeedConfig | None = None
    #: training precision: autocast to bf16 / fp16 (with a gradient scaler), or plain fp32
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    #: NHWC activations and weights (faster convolutions on GPUs with tensor cores)
    channels_last: bool = False
    #: loader worker processes per rank; null: from the rank's CPUs (its Slurm allocation)
    num_workers: int | None = None
    #: resumable checkpoints: every N optimizer steps (``500``), every so much training time
    #: (``10min``, ``90s``, ``1h``), or both (``10min,500``); ``0`` only at preemption
    checkpoint_every: str | int = "10min"

    def __post_init__(self):
        if self.num_workers is not None and self.num_workers < 0:
            raise FieldError("num_workers", f"{self.num_workers}: must be >= 0 (0 decodes in the training process)")
        try:
            parse_checkpoint_every(self.checkpoint_every)
        except ValueError as e:
            raise FieldError("checkpoint_every", str(e)) from None
        if not STAGE_NAME.fullmatch(self.name):
            raise FieldError("name", f"{self.name!r}: use lower-case letters, digits, '_' and '-' "
                             "(starting with a letter or digit)")
        if not USES_NAME.fullmatch(self.uses):
            raise FieldError("uses", f"{self.uses!r}: a registered stage name such as '<method>.<step>'")
        for key in self.resources:
            if key not in SLURM_KEYS:
                raise FieldError(f"resources.{key}", unknown_key(str(key), SLURM_KEYS))
        if self.engine == "deepspeed" and self.deepspeed is None:
            self.deepspeed = DeepSpeedConfig()
        if self.engine != "deepspeed" and self.deepspeed is not None:
            raise FieldError("deepspeed", f"given but engine is {self.engine!r}; set engine: deepspeed")
        for key, url in self.inputs.items():
            if "${" in url:
                if not REFERENCE.fullmatch(url):
                    raise FieldError(f"inputs.{key}", f"{url!r}: a reference is a whole value of the form "
                                     "${stages.<stage>.outputs.<output>}")
            elif not url:
                raise FieldError(f"inputs.{key}", "'': give an fsspec URL or a stage output reference")
            else:
                clean, user, password = _s3_userinfo(url)
                if user is not None:  # its credentials apply to it as storage options
                    storage.set_root_options(clean, {"key": user, **({"secret": password} if password else {})})
                self.inputs[key] = _absolute(clean)

    def references(self) -> dict[str, tuple[str, str]]:
        """Inputs that are other stages' outputs: input name → (stage, output)."""
        return {k: m.groups() for k, v in self.inputs.items() if (m := REFERENCE.fullmatch(v))}


@dataclass(kw_only=True, slots=True)
class PipelineConfig:
    """A whole pipeline file, validated. ``stages`` run in order; inputs may only name earlier stages."""

    name: str
    description: str = ""
    storage: StorageConfig = field(default_factory=StorageConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    stages: list[StageConfig] = field(default_factory=list)
    #: smoke run (``frugalcv run --smoke``): each training stage takes this many optimizer steps on
    #: small batches and each evaluation this many batches; 0 = a real run
    smoke_steps: int = 0

    def __post_init__(self):
        if self.smoke_steps < 0:
            raise FieldError("smoke_steps", f"{self.smoke_steps}: must be >= 0 (0 = a real run)")
        if not PIPELINE_NAME.fullmatch(self.name):
            raise FieldError("name", f"{self.name!r}: use letters, digits, '.', '_' and '-'")
        if not self.stages:
            raise FieldError("stages", "a pipeline needs at least one stage")
        if self.tracking.uri is None:
            if not self.storage.is_local:
                raise FieldError("tracking.uri", f"required when storage.root ({self.storage.root}) is not a "
                                 "local folder, e.g. http://mlflow-host:5000 or sqlite:////abs/path/mlflow.db")
            root = self.storage.root.removeprefix("file://")
            self.tracking.uri = "sqlite:///" + os.path.join(root, "mlflow.db")
        if self.tracking.experiment is None:
            self.tracking.experiment = self.name
        seen: list[str] = []
        for stage in self.stages:
            if stage.name in seen:
                raise FieldError(f"stages.{stage.name}.name", f"{stage.name!r}: duplicate stage name")
            for key, (other, _) in stage.references().items():
                if other not in seen:
                    later = [s.name for s in self.stages if s.name == other]
                    why = "a later stage; stages run in file order" if later else \
                        f"no such stage (earlier stages: {', '.join(seen) or 'none'})"
                    raise FieldError(f"stages.{stage.name}.inputs.{key}", f"{stage.inputs[key]!r}: {other!r} is {why}")
            _merge_resources(self.executor.slurm, stage.resources, f"stages.{stage.name}.resources")
            seen.append(stage.name)

    def stage(self, name: str) -> StageConfig:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ConfigError(f"pipeline {self.name!r} has no stage {name!r}; stages: "
                          f"{', '.join(s.name for s in self.stages)}")

    def stage_resources(self, name: str) -> SlurmConfig:
        """``executor.slurm`` with the stage's ``resources`` applied."""
        try:
            return _merge_resources(self.executor.slurm, self.stage(name).resources, f"stages.{name}.resources")
        except FieldError as e:
            raise ConfigError(f"{e.field}: {e.message}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain data; ``pipeline_from_dict(cfg.to_dict()) == cfg``."""
        return to_plain(self)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m|h)")


def parse_checkpoint_every(value: str | int) -> tuple[int, float]:
    """``checkpoint_every`` as (steps, seconds); 0 means "not by that measure"."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r}: give steps (500), a duration (10min) or both (10min,500)")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value}: must be >= 0")
        return value, 0.0
    steps, seconds = 0, 0.0
    for part in filter(None, (p.strip() for p in str(value).split(","))):
        if part.isdigit():
            steps = int(part)
        elif m := _DURATION.fullmatch(part):
            seconds = float(m.group(1)) * {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[m.group(2)]
        else:
            raise ValueError(f"{value!r}: give steps (500), a duration (10min, 90s, 1h) or both (10min,500)")
    return steps, seconds


def _merge_resources(base: SlurmConfig, overrides: dict[str, Any], path: str) -> SlurmConfig:
    merged = {**to_plain(base), **overrides}
    types_ = hints(SlurmConfig)
    for key, value in overrides.items():
        convert(types_[key], value, join(path, key))
    try:
        return build(SlurmConfig, merged)
    except FieldError as e:
        raise FieldError(join(path, e.field), e.message) from None


# ------------------------------------------------------------------------------ interpolation


def _interpolate(data: Any, values: dict[str, str], path: str) -> Any:
    """Replace ``${name}`` / ``${storage.root}`` in every string; leave ``${stages.…}`` references."""
    if isinstance(data, dict):
        return {k: _interpolate(v, values, join(path, str(k))) for k, v in data.items()}
    if isinstance(data, list):
        return [_interpolate(v, values, join(path, item_label(v, i))) for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def replace(m: re.Match) -> str:
        key = m.group(1)
        if key.startswith("stages."):
            return m.group(0)
        if key not in values:
            allowed = ", ".join(f"${{{k}}}" for k in values)
            raise FieldError(path, f"{data!r}: unknown placeholder ${{{key}}}; use {allowed} or "
                             "${stages.<stage>.outputs.<output>} (in stage inputs)")
        return values[key]

    return _PLACEHOLDER.sub(replace, data)


def _resolve_placeholders(data: dict) -> dict:
    name = data.get("name")
    values = {"name": name} if isinstance(name, str) else {}
    storage = data.get("storage")
    if isinstance(storage, dict) and isinstance(storage.get("root"), str):
        root = _interpolate(storage["root"], values, "storage.root")
        values["storage.root"] = _absolute(root).rstrip("/") or "/"
    else:
        values["storage.root"] = _absolute(DEFAULT_ROOT)
    return _interpolate(data, values, "")


# ------------------------------------------------------------------------------------ loading


def pipeline_from_dict(data: Any, source: str = "<dict>", overridden: dict[str, str] | None = None,
                       lines: dict[str, int] | None = None) -> PipelineConfig:
    """Validate plain data (a parsed pipeline file) into a :class:`PipelineConfig`.

    ``overridden`` maps dotted paths to the ``-o`` that set them and ``lines`` maps dotted paths to
    file lines; both only make error messages point at the right place.
    """
    where = Where(source, overridden, lines)
    if not isinstance(data, dict):
        raise where.error("", f"the top level must be a mapping with keys name, storage, tracking, executor, "
                          f"stages (got {type(data).__name__})")
    try:
        return build(PipelineConfig, _resolve_placeholders(data))
    except FieldError as e:
        raise where.error(e.field, e.message) from None


def validate_stages(cfg: PipelineConfig, where: Where | None = None) -> None:
    """Check every stage against its registration: ``uses`` is registered, ``params`` fit the stage's
    params dataclass, ``inputs`` are the ones it takes. Errors name the file, line and dotted key."""
    from frugalcv.workflows.pipeline.stages import registered_stages, stage_array_tasks, stage_info

    where = where or Where(cfg.name)
    check_stage_functions(cfg, registered_stages(), where=where)
    for stage in cfg.stages:
        info = stage_info(stage.uses)
        base = f"stages.{stage.name}"
        try:
            params = info.build_params(stage.params, "params")
            stage_array_tasks(stage.uses, params)
            if info.check is not None:
                info.check(params, list(stage.inputs))
        except FieldError as e:
            raise where.error(join(base, e.field), e.message) from None
        except ConfigError as e:
            raise where.error(f"{base}.params", str(e)) from None
        problem = info.check_inputs(stage.inputs)
        if problem is not None:
            raise where.error(f"{base}.inputs.{problem[0]}", problem[1])
        for key, (other, output) in stage.references().items():
            declared = stage_info(cfg.stage(other).uses).declared_outputs(cfg.stage(other).params)
            if declared is not None and output not in declared:
                raise where.error(f"{base}.inputs.{key}", f"{stage.inputs[key]!r}: stage {other!r} "
                                  f"({cfg.stage(other).uses}) has no output {output!r}"
                                  f"{suggest(output, declared) or '.'} Its outputs: {', '.join(declared)}")


def _read_pipeline_file(path: str | os.PathLike) -> tuple[Any, dict[str, int]]:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{source}: cannot read pipeline file: {e.strerror or e}") from None
    data = parse_yaml(text, source)
    if data is None:
        raise ConfigError(f"{source}: the file is empty; a pipeline needs at least name and stages")
    return data, key_lines(text)


def load_pipeline(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (), *,
                  validate: bool = True) -> PipelineConfig:
    """Read, override (``-o key=value``) and validate a pipeline file, its stages' params included."""
    from frugalcv.workflows.pipeline.overrides import apply_overrides

    data, lines = _read_pipeline_file(path)
    overridden = apply_overrides(data, list(overrides)) if isinstance(data, dict) else {}
    cfg = pipeline_from_dict(data, str(path), overridden, lines)
    if validate:
        validate_stages(cfg, Where(str(path), overridden, lines))
    return cfg


def check_stage_functions(cfg: PipelineConfig, registered: Iterable[str], source: str = "",
                          where: Where | None = None) -> None:
    """Raise ConfigError for a stage whose ``uses`` is not a registered stage function."""
    registered = sorted(registered)
    where = where or Where(source or cfg.name)
    for stage in cfg.stages:
        if stage.uses not in registered:
            raise where.error(
                f"stages.{stage.name}.uses", f"{stage.uses!r} is not a registered stage function"
                f"{suggest(stage.uses, registered) or '.'} Registered: {', '.join(registered)}")


def config_hash(obj: Any) -> str:
    """sha256 of canonical JSON (sorted keys, no spaces) of a config object or plain data."""
    if dataclasses.is_dataclass(obj):
        obj = to_plain(obj)
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
