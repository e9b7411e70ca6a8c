"""Dry run: the ordered stages as text, and the exact sbatch script submitit would submit.

The sbatch text comes from submitit's own ``_make_sbatch_string`` with the parameters of
:func:`sbatch_parameters` — the same dict the Slurm executor passes to
``SlurmExecutor.update_parameters`` — so a dry run shows what a real submission sends. A stage
submitted as a job array (``tasks`` of a ``shard`` stage, the values of a sweep) gets submitit's
``#SBATCH --array=0-<N-1>%<P>`` line (P: ``array_parallelism``) and ``%A_%a`` log names.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any

from submitit.slurm.slurm import _convert_mem, _make_sbatch_string

from frugalcv.errors import ConfigError
from frugalcv.workflows.pipeline.config import PipelineConfig, SlurmConfig, config_hash


def job_name(cfg: PipelineConfig, stage_name: str) -> str:
    return f"frugalcv-{cfg.name}-{stage_name}"


def run_folder(cfg: PipelineConfig, run_id: str) -> str:
    """``<storage.root>/runs/<run-id>``: a local folder or an fsspec URL (``s3://...``)."""
    root = cfg.storage.root.removeprefix("file://") if cfg.storage.is_local else cfg.storage.root
    return f"{root.rstrip('/')}/runs/{run_id}" if "://" in root else os.path.join(root, "runs", run_id)


def check_executor_storage(cfg: PipelineConfig, kind: str) -> None:
    """The slurm executor keeps job files and logs in the run folder, which every node must see as a
    POSIX folder; inline and local run with any fsspec root."""
    if kind == "slurm" and not cfg.storage.is_local:
        raise ConfigError(f"storage.root {cfg.storage.root}: the slurm executor needs a folder on a shared "
                          "filesystem (every node mounts it) for Slurm job logs and submitit's job files; "
                          "set storage.root to such a folder, or run with --executor inline or local "
                          "(they work with s3:// roots)")


def job_folder(run_folder: str | os.PathLike) -> str:
    """Where submitit keeps a job's pickles and logs: ``<run folder>/slurm/%j`` (``%j``: job id)."""
    folder = os.fspath(run_folder)
    for bad in ("\n", "\r", "\0"):
        if bad in folder:
            raise ConfigError(f"run folder {folder!r}: a newline or NUL cannot be written into the "
                              "#SBATCH --output line; choose a folder without one")
    if "%" in folder:
        raise ConfigError(f"run folder {folder!r}: Slurm expands '%' in log paths; choose a folder without one")
    return os.path.join(os.path.abspath(os.path.expanduser(folder)), "slurm", "%j")


def sbatch_parameters(cfg: PipelineConfig, stage_name: str) -> dict[str, Any]:
    """The stage's resources as ``SlurmExecutor.update_parameters`` / ``_make_sbatch_string`` kwargs."""
    r: SlurmConfig = cfg.stage_resources(stage_name)
    params: dict[str, Any] = {
        "job_name": job_name(cfg, stage_name),
        "nodes": r.nodes,
        "ntasks_per_node": r.tasks_per_node,
        "cpus_per_task": r.cpus_per_task,
        "time": r.timeout_min,
        "signal_delay_s": r.signal_delay_s,
        "array_parallelism": r.array_parallelism,
    }
    if r.gpus_per_node:
        params["gpus_per_node"] = r.gpus_per_node
    if r.mem_gb is not None:
        params["mem"] = _convert_mem(r.mem_gb)
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(r, key) is not None:
            params[key] = getattr(r, key)
    if r.setup:
        params["setup"] = list(r.setup)
    additional = {"requeue": True} if r.requeue else {}
    additional.update(r.additional)
    if additional:
        params["additional_parameters"] = additional
    return params


def submit_command(folder: str, python: str | None = None) -> str:
    """What submitit's SlurmExecutor runs in the job (its ``_submitit_command_str``)."""
    python = shlex.quote(sys.executable) if python is None else python
    return " ".join([python, "-u -m submitit.core._submit", shlex.quote(str(folder))])


def array_tasks(cfg: PipelineConfig, stage_name: str) -> int:
    """How many array tasks the stage's function runs as with its params (1: one plain job)."""
    from frugalcv.workflows.pipeline.stages import stage_array_tasks

    st = cfg.stage(stage_name)
    return stage_array_tasks(st.uses, st.params)


def render_sbatch(cfg: PipelineConfig, stage_name: str, run_folder: str | os.PathLike,
                  python: str | None = None, array: int | None = None) -> str:
    """The sbatch script submitit would submit for ``stage_name`` under ``run_folder``.

    ``array``: the number of job-array tasks (default: the stage's own, e.g. a shard stage's
    ``tasks``); more than one adds submitit's ``--array`` line, as ``submit_array`` does."""
    folder = job_folder(run_folder)
    params = sbatch_parameters(cfg, stage_name)
    count = array_tasks(cfg, stage_name) if array is None else array
    if count > 1:
        params["map_count"] = count
    return _make_sbatch_string(command=submit_command(folder, python), folder=folder, **params)


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return "null" if value is None else str(value)


def render_plan(cfg: PipelineConfig) -> str:
    """The ordered stages with their resolved inputs, params, resources and engine."""
    slurm = cfg.executor.kind == "slurm"
    lines = [
        f"pipeline {cfg.name}  (config {config_hash(cfg)[:12]})",
        f"  storage   {cfg.storage.root}",
        f"  tracking  {cfg.tracking.uri}  experiment={cfg.tracking.experiment}",
        f"  executor  {cfg.executor.kind}",
    ]
    for number, stage in enumerate(cfg.stages, 1):
        lines += ["", f"{number}. {stage.name}  uses={stage.uses}  engine={stage.engine}"]
        if stage.deepspeed is not None:
            ds = stage.deepspeed
            lines.append(f"     deepspeed  zero_stage={ds.zero_stage} offload_optimizer={ds.offload_optimizer} "
                         f"offload_param={ds.offload_param}" + (f" config={_fmt(ds.config)}" if ds.config else ""))
        refs = stage.references()
        for key, url in stage.inputs.items():
            origin = f"output {refs[key][1]!r} of stage {refs[key][0]}" if key in refs else url
            lines.append(f"     input  {key} <- {origin}")
        for key, value in stage.params.items():
            lines.append(f"     param  {key} = {_fmt(value)}")
        r = cfg.stage_resources(stage.name)
        res = (f"nodes={r.nodes} tasks_per_node={r.tasks_per_node} gpus_per_node={r.gpus_per_node} "
               f"cpus_per_task={r.cpus_per_task} mem_gb={_fmt(r.mem_gb)} timeout_min={r.timeout_min}")
        if slurm:
            res += "".join(f" {k}={getattr(r, k)}" for k in ("partition", "account", "qos", "constraint")
                           if getattr(r, k) is not None)
            res += f"  job={job_name(cfg, stage.name)}"
            tasks = array_tasks(cfg, stage.name)
            if tasks > 1:
                res += f" array={tasks}%{min(tasks, r.array_parallelism)}"
        overridden = f"  (stage overrides: {', '.join(stage.resources)})" if stage.resources else ""
        lines.append(f"     resources  {res}{overridden}")
    return "\n".join(lines) + "\n"
