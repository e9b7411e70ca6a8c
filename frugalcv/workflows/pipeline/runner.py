"""Run a pipeline: resolve references, fingerprint, skip cached stages, run the rest in order.

    run_id = run_pipeline(load_pipeline("pipelines/<method>-demo.yaml"))   # prints the id, then a table
    resume_run(run_id, root)        # finished stages stay; the interrupted one resumes from its checkpoint
    status(run_id, root)            # the JSON below;  run_id may be "latest"
    cancel(run_id, root)            # scancel the run's Slurm jobs / stop its local processes

Layout (``lineage.py``): ``<storage.root>/runs/<run id>/run.json`` (run metadata, including the
validated config so a run resumes without its YAML), ``stages/<stage>.json`` (a StageRecord per
stage), ``stages/<stage>/`` (the stage's outputs, ``checkpoints/``, ``spec.json``, ``result.json``),
``logs/<stage>.log``, ``slurm/<job id>/`` (submitit), and ``<storage.root>/cache/<fingerprint>.json``.
A stage whose function runs as array tasks (``shard`` with ``tasks: N``) runs them with
``executor.run_array`` (one Slurm job array; logs ``logs/<stage>.task<i>.log``), then its final step
in this process once all succeeded; :mod:`frugalcv.workflows.pipeline.sweep` advances several runs together.

``status()`` schema (``frugalcv status RUN --json`` prints exactly this)::

    {
      "run_id": str, "pipeline": str, "root": str, "run_folder": str,
      "status": "running" | "finished" | "failed" | "cancelled",
      "executor": "inline" | "local" | "slurm", "created": float (unix s), "ended": float | null,
      "mlflow": {"uri": str, "experiment": str, "parent_run_id": str | null,
                 "registered_model": {"name", "version", "stage", "sha256"} | null},
      "stages": [                                  # pipeline order; stages not reached are "pending"
        {"stage": str, "uses": str,
         "state": "pending" | "running" | "finished" | "failed" | "cached" | "cancelled",
         "fingerprint": str, "mlflow_run_id": str | null, "slurm_job_ids": [str],
         "metrics": {str: float}, "outputs": {name: {"uri": str, "sha256": str}},
         "error": str | null,                      # message + log tail of a failed stage
         "cached_from": str | null,                # run id whose outputs a cached stage reuses
         "model_inputs": {name: {"source", "uri", "sha256", "run_id", "model", "version"}},  # models:/, runs:/
         "attempts": int, "started": float | null, "ended": float | null, "seconds": float | null}
      ]
    }
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from frugalcv.errors import ConfigError, FrugalError
from frugalcv.sharding import storage
from frugalcv.slurm.executors import InlineExecutor, StageFailed, make_stage_executor
from frugalcv.workflows.pipeline import lineage as L
from frugalcv.workflows.pipeline.config import (
    PipelineConfig,
    parse_checkpoint_every,
    pipeline_from_dict,
    validate_stages,
)
from frugalcv.workflows.pipeline.entry import STOP_FILE
from frugalcv.workflows.pipeline.plan import check_executor_storage, run_folder, sbatch_parameters
from frugalcv.workflows.pipeline.redact import redact, scrub
from frugalcv.workflows.pipeline.registry import input_tags, register_final_model, resolve_stage_inputs
from frugalcv.workflows.pipeline.schema import to_plain
from frugalcv.workflows.pipeline.stages import stage_array_tasks, stage_origin

log = logging.getLogger(__name__)

#: metrics shown first in the results table, when a stage has them
KEY_METRICS = ("accuracy", "val_accuracy", "val_blocks_mean", "blocks_mean", "flops_speedup", "val_flops_speedup",
               "train_reward", "train_samples", "test_samples")
#: checkpoint period (optimizer steps) of resumable stages when a stage's params do not say


class PipelineFailed(FrugalError):
    """A stage failed; the run's records say which and why (``frugalcv status RUN``)."""


# ------------------------------------------------------------------------------------ tracking


class _NoTracker:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _tracker(cfg: PipelineConfig, run_id: str, enabled: bool):
    if not enabled:
        return _NoTracker()
    from frugalcv.workflows.pipeline.tracking import Tracker

    if cfg.tracking.uri.startswith("sqlite:") and cfg.storage.is_local:
        local_experiment(cfg.tracking.uri, cfg.tracking.experiment, cfg.storage.root)
    return Tracker(cfg.tracking.uri, root=cfg.storage.root, run_id=run_id, experiment=cfg.tracking.experiment)


def local_experiment(uri: str, name: str, root: str) -> None:
    """Create experiment ``name`` of a sqlite store with its artifacts under ``<root>/mlartifacts``:
    a database store's default artifact root is ``./mlruns`` of whatever folder the command ran in.
    Opening the store creates a new sqlite file once, under its lock, however many runs start together."""
    from frugalcv.workflows.pipeline.mlflow_ops import EXPERIMENT_TAGS, retry_locked
    from frugalcv.workflows.pipeline.mlflow_store import open_client
    from frugalcv.workflows.pipeline.redact import live_tracking_uri

    try:
        client = open_client(live_tracking_uri(uri))
        if retry_locked(lambda: client.get_experiment_by_name(name)) is not None:
            return
        root = root.removeprefix("file://")
        try:
            retry_locked(lambda: client.create_experiment(name, artifact_location=os.path.join(root, "mlartifacts"),
                                                          tags=EXPERIMENT_TAGS))
        except Exception:
            if retry_locked(lambda: client.get_experiment_by_name(name)) is None:
                raise
            # another run starting at the same moment created it
    except Exception as e:  # the Tracker degrades to its outbox; never stop a run for tracking
        log.warning("could not prepare MLflow experiment %s: %s: %s", name, type(e).__name__,
                    redact(str(e).strip().splitlines()[0] if str(e).strip() else ""))


def mlflow_ids(root: str, run_id: str) -> dict[str, str]:
    """Placeholder -> real MLflow run id for the runs of ``run_id`` created while the store was
    unreachable and since replayed (``frugalcv sync``, or the end of the pipeline)."""
    from frugalcv.workflows.pipeline.outbox import Outbox

    try:
        return Outbox(L.run_url(root, run_id)).ids()
    except Exception as e:  # an unreadable map only means placeholders are shown
        log.debug("no outbox id map for run %s: %s", run_id, e)
        return {}


def _real_id(mlflow_id: str | None, ids: dict[str, str]) -> str | None:
    return ids.get(mlflow_id, mlflow_id) if mlflow_id else mlflow_id


# ------------------------------------------------------------------------------------ running


def smoke_steps(cfg: PipelineConfig) -> int | None:
    return cfg.smoke_steps or None


def resolve_inputs(cfg: PipelineConfig, stage: str, store: L.RunStore,
                   resolved: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """The stage's inputs with ``${stages.X.outputs.Y}`` replaced by X's recorded output URI and
    ``models:/`` / ``runs:/`` inputs by the checkpoint URI they resolved to (``resolved``)."""
    st = cfg.stage(stage)
    refs = st.references()
    out = {}
    for name, url in st.inputs.items():
        if resolved and name in resolved:
            out[name] = resolved[name]["uri"]
            continue
        if name not in refs:
            out[name] = url
            continue
        other, output = refs[name]
        rec = store.read(other)
        if rec is None or rec.state not in L.DONE:
            raise ConfigError(f"stages.{stage}.inputs.{name}: stage {other!r} is not done "
                              f"(state {rec.state if rec else 'not started'})")
        if output not in rec.outputs:
            raise ConfigError(f"stages.{stage}.inputs.{name}: stage {other!r} has no output {output!r}; "
                              f"its outputs: {', '.join(rec.outputs) or 'none'}")
        out[name] = rec.outputs[output]["uri"]
    return out


def stage_spec(cfg: PipelineConfig, stage: str, run_id: str, inputs: dict[str, str],
               stage_run_id: str | None, track: bool) -> dict[str, Any]:
    """The JSON spec every executor hands to ``stages.entry.run_spec``."""
    st = cfg.stage(stage)
    folder = run_folder(cfg, run_id)
    out_dir = storage.join(folder, "stages", stage)
    params = dict(st.params)
    every, every_s = parse_checkpoint_every(st.checkpoint_every)
    return {
        "pipeline": cfg.name, "run_id": run_id, "stage": stage, "uses": st.uses, "origin": stage_origin(st.uses),
        "params": params, "inputs": inputs, "run_folder": folder, "output_dir": out_dir,
        "checkpoint_dir": storage.join(out_dir, "checkpoints"), "checkpoint_every": every,
        "checkpoint_every_s": every_s, "precision": st.precision, "channels_last": st.channels_last,
        "num_workers": st.num_workers, "smoke_steps": smoke_steps(cfg), "engine": st.engine, "deepspeed": None if st.deepspeed is None else to_plain(st.deepspeed),
        "result_path": storage.join(out_dir, "result.json"), "log_path": storage.join(folder, "logs", f"{stage}.log"),
        "tracking": {"uri": cfg.tracking.uri, "experiment": cfg.tracking.experiment, "root": cfg.storage.root,
                     "stage_run_id": stage_run_id} if track else None,
    }


def _log_inputs(tracker, cfg: PipelineConfig, stage: str, inputs: dict[str, str], store: L.RunStore,
                resolved: dict[str, dict[str, str]] | None = None) -> list[str]:
    """Inputs as MLflow datasets (shard manifests, parent checkpoints, registered models); returns
    the parents' run ids."""
    refs = cfg.stage(stage).references()
    parents = []
    for name, url in inputs.items():
        if resolved and name in resolved:
            tracker.log_checkpoint_input(url, resolved[name]["sha256"], context=name)
        elif name in refs:
            rec = store.read(refs[name][0])
            parents.append(rec.mlflow_run_id or "")
            sha = rec.outputs[refs[name][1]]["sha256"]
            if _is_dataset(url):
                tracker.log_input(url, context=name)
            else:
                tracker.log_checkpoint_input(url, sha, context=name)
        elif _is_dataset(url):
            tracker.log_input(url, context=name)
    return parents


def _is_dataset(url: str) -> bool:
    try:
        return storage.exists(storage.join(url, "manifest.json"))
    except Exception:  # an input that cannot even be checked is not logged as a dataset
        return False


@dataclass
class _Started:
    """A stage about to run in one pipeline run: what its result is recorded with."""

    cfg: PipelineConfig
    stage: str
    store: L.RunStore
    tracker: Any
    child: str | None
    spec: dict[str, Any]
    #: array tasks of the stage function (1: one plain job / process)
    tasks: int
    t0: float = field(default_factory=time.monotonic)


def _prepare(cfg: PipelineConfig, stage: str, store: L.RunStore, executor, tracker, parent: str | None,
             track: bool, printer) -> L.StageRecord | _Started:
    """A done or cached stage's record, or the stage marked running with its spec, ready to submit."""
    st = cfg.stage(stage)
    resolved = resolve_stage_inputs(cfg, stage)
    fp = L.stage_fingerprint(cfg, stage, store, resolved=resolved)
    old = store.read(stage)
    if old is not None and old.state in L.DONE and old.fingerprint == fp:
        return old  # resumed run: already done
    hit = store.cache_lookup(fp)
    if hit is not None:
        rec = store.mark_cached(stage, hit)
        if parent:
            source_run = _real_id(hit.mlflow_run_id, mlflow_ids(cfg.storage.root, hit.run_id)) if hit.run_id \
                else hit.mlflow_run_id
            child = tracker.start_stage(parent, stage, fp, tags={"frugalcv.cached_from_run": source_run or "",
                                                                 "frugalcv.cached_from": rec.cached_from or ""})
            if child:
                tracker.log_metrics(rec.metrics, run_id=child)
                tracker.log_outputs(rec.outputs, run_id=child)
                tracker.end_stage("cached", run_id=child)
                rec = store.update(stage, mlflow_run_id=child)
        printer(f"[{stage}] cached (fingerprint {fp[:12]}, outputs of run {rec.cached_from})")
        return rec
    tasks = stage_array_tasks(st.uses, st.params)
    inputs = resolve_inputs(cfg, stage, store, resolved)
    child = old.mlflow_run_id if old is not None and old.fingerprint == fp else None
    if parent and child:
        tracker.resume_stage(child)
    elif parent:
        child = tracker.start_stage(parent, stage, fp, parent_stage_runs=_log_parents(cfg, stage, store))
        if child:
            tracker.log_params({"uses": st.uses, "engine": st.engine, **st.params}, run_id=child)
            _log_inputs(tracker, cfg, stage, inputs, store, resolved)
            if resolved:
                tracker.set_tags(input_tags(resolved), run_id=child)
    store.update(stage, state="running", fingerprint=fp, mlflow_run_id=child, error=None, model_inputs=resolved)
    array = f", {tasks} array tasks" if tasks > 1 else ""
    printer(f"[{stage}] running {st.uses} ({executor.kind}{array}, fingerprint {fp[:12]})")
    spec = stage_spec(cfg, stage, store.run_id, inputs, child, track)
    stop_file = storage.join(spec["output_dir"], STOP_FILE)
    if storage.is_local(stop_file) and os.path.exists(stop_file):  # a stop request was for the previous attempt
        os.remove(stop_file)
    return _Started(cfg=cfg, stage=stage, store=store, tracker=tracker, child=child, spec=spec, tasks=tasks)


def task_specs(spec: dict[str, Any], tasks: int) -> list[dict[str, Any]]:
    """The specs of a stage's array tasks: own result, spec and log files; no tracking (the final step tracks)."""
    if tasks == 1:
        return [spec]
    out_dir, logs = spec["output_dir"], storage.parent(spec["log_path"])
    return [{**spec, "array": {"index": i, "count": tasks}, "tracking": None,
             "result_path": storage.join(out_dir, f"result.task{i}.json"),
             "spec_path": storage.join(out_dir, f"spec.task{i}.json"),
             "log_path": storage.join(logs, f"{spec['stage']}.task{i}.log")} for i in range(tasks)]


def _run_started(started: list[_Started], executor, printer) -> list[L.StageRecord]:
    """Run the prepared stages (one stage, one or several pipeline runs) and record their results.

    One plain stage runs with ``executor.run``; otherwise every task of every run goes to
    ``executor.run_array``: one Slurm job array per set of identical sbatch parameters."""
    if len(started) == 1 and started[0].tasks == 1:
        s = started[0]
        try:
            result: dict | FrugalError = executor.run(s.spec, s.cfg, on_job=lambda job: _record_job(s.store, s.stage, job))
        except FrugalError as e:
            result = e
        return [_complete(s, [result], printer)]
    groups: dict[str, list[_Started]] = {}
    for s in started:
        key = json.dumps(sbatch_parameters(s.cfg, s.stage), sort_keys=True, default=str) \
            if executor.kind == "slurm" else ""
        groups.setdefault(key, []).append(s)
    results: dict[int, list] = {}
    for group in groups.values():
        specs, owners = [], []
        for s in group:
            for spec in task_specs(s.spec, s.tasks):
                specs.append(spec)
                owners.append(s)
        out = executor.run_array(specs, group[0].cfg,
                                 on_job=lambda i, job, owners=owners: _record_job(owners[i].store, owners[i].stage, job))
        for s, r in zip(owners, out, strict=True):
            results.setdefault(id(s), []).append(r)
    return [_complete(s, results[id(s)], printer) for s in started]


def _error_text(e: FrugalError) -> str:
    if isinstance(e, StageFailed):
        return redact(f"{e}\n{e.log_tail}".strip())
    return redact(f"{type(e).__name__}: {e}")


def _complete(s: _Started, results: list[dict | FrugalError], printer) -> L.StageRecord:
    """Record the stage's result; an array stage's final step (e.g. the shard manifest) runs here, in
    this process, only once every task has succeeded."""
    store, stage, tracker, child = s.store, s.stage, s.tracker, s.child
    for i, r in enumerate(results):
        if isinstance(r, FrugalError):
            where = f"task {i} of {s.tasks}: " if s.tasks > 1 else ""
            return _fail(store, stage, tracker, child, where + _error_text(r), printer)
    if store.read(stage).state == "cancelled":
        return store.read(stage)
    stopped = next((r for r in results if r.get("state") == "interrupted"), None)
    if stopped is not None:
        return _fail(store, stage, tracker, child, f"interrupted: {stopped.get('message')}; "
                     f"continue with `frugalcv resume {store.run_id}`", printer, status="killed")
    result = results[0]
    if s.tasks > 1:
        try:
            result = InlineExecutor().run({**s.spec, "array": {"index": None, "count": s.tasks}}, s.cfg)
        except FrugalError as e:
            return _fail(store, stage, tracker, child, f"final step after {s.tasks} tasks: {_error_text(e)}", printer)
    outputs = {name: L.output_ref(uri) for name, uri in result.get("outputs", {}).items()}
    metrics = {k: float(v) for k, v in result.get("metrics", {}).items()}
    rec = store.update(stage, state="finished", metrics=metrics, outputs=outputs)
    if child:
        tracker.log_metrics(metrics, run_id=child)
        tracker.log_outputs(outputs, run_id=child)
        for name, ref in outputs.items():
            if name.startswith("checkpoint"):
                tracker.log_checkpoint(name, ref["uri"], ref["sha256"], run_id=child)
        tracker.end_stage("finished", run_id=child)
    printer(f"[{stage}] finished in {time.monotonic() - s.t0:.1f}s")
    return rec


def _run_stage(cfg: PipelineConfig, stage: str, store: L.RunStore, executor, tracker, parent: str | None,
               track: bool, printer) -> L.StageRecord:
    prepared = _prepare(cfg, stage, store, executor, tracker, parent, track, printer)
    if isinstance(prepared, L.StageRecord):
        return prepared
    return _run_started([prepared], executor, printer)[0]


def _log_parents(cfg: PipelineConfig, stage: str, store: L.RunStore) -> list[str]:
    runs = []
    for other, _ in cfg.stage(stage).references().values():
        rec = store.read(other)
        if rec is not None and rec.mlflow_run_id and rec.mlflow_run_id not in runs:
            runs.append(rec.mlflow_run_id)
    return runs


def _record_job(store: L.RunStore, stage: str, job: str) -> None:
    if job.startswith("pid:"):
        pids = store.read_meta().get("pids", {})
        pids.setdefault(stage, []).append(int(job[4:]))
        store.update_meta(pids=pids)
    else:
        store.add_slurm_job(stage, job)


def _fail(store, stage, tracker, child, error, printer, status="failed") -> L.StageRecord:
    rec = store.read(stage)
    if rec is not None and rec.state == "cancelled":
        return rec
    error = redact(error)
    rec = store.update(stage, state="failed", error=error)
    if child:
        tracker.set_tags({"frugalcv.error": error[-4000:]}, run_id=child)
        tracker.end_stage(status, run_id=child)
    printer(f"[{stage}] FAILED: {error}")
    return rec


@dataclass
class _Run:
    """One pipeline run being executed: its store, tracker and MLflow parent run."""

    cfg: PipelineConfig
    run_id: str
    store: L.RunStore
    tracker: Any
    parent: str | None
    track: bool
    failed: str | None = None


def _begin(cfg: PipelineConfig, run_id: str, kind: str, track: bool) -> _Run:
    store = L.RunStore(cfg.storage.root, run_id)
    tracker = _tracker(cfg, run_id, track)
    parent = tracker.start_pipeline(cfg.name, cfg.tracking.experiment, run_id, cfg.to_dict()) if track else None
    store.update_meta(status="running", executor=kind, mlflow_parent_run_id=parent, ended=None)
    return _Run(cfg=cfg, run_id=run_id, store=store, tracker=tracker, parent=parent, track=track)


def _step(run: _Run, stage: str, runner, printer) -> L.StageRecord | None:
    """Run one stage of ``run``; None when the run was cancelled. Sets ``run.failed`` when not done."""
    if run.store.read_meta().get("status") == "cancelled":
        run.failed = "cancelled"
        return None
    rec = _run_stage(run.cfg, stage, run.store, runner, run.tracker, run.parent, run.track, printer)
    if rec.state not in L.DONE:
        run.failed = rec.state
    return rec


def _end(run: _Run, printer) -> str:
    """Record the run's final status, print its table; raise PipelineFailed unless it finished."""
    cfg, run_id, failed = run.cfg, run.run_id, run.failed
    final = "finished" if failed is None else ("cancelled" if failed == "cancelled" else "failed")
    run.store.update_meta(status=final, ended=time.time())
    if run.parent:
        if final == "finished":
            register_final_model(cfg, run.store, run.tracker, run.parent, printer)
        run.tracker.end_pipeline(final, run_id=run.parent)
        run.tracker.flush()
    printer(results_table(status(run_id, cfg.storage.root)))
    if final != "finished":
        bad = next((r for r in status(run_id, cfg.storage.root)["stages"] if r["state"] in ("failed", "cancelled")), None)
        where = f"stage {bad['stage']} {bad['state']}" if bad else final
        first = (bad or {}).get("error") or ""
        raise PipelineFailed(redact(f"run {run_id}: {where}: {first.splitlines()[0] if first else ''} "
                                    f"(details: frugalcv status {run_id} --root {cfg.storage.root})"))
    return run_id


def _stage_executor(cfg: PipelineConfig, kind: str):
    """The executor of ``kind`` for ``cfg``; refuses a storage root or a machine it cannot work with."""
    check_executor_storage(cfg, kind)
    return make_stage_executor(kind, cfg)


def _execute(cfg: PipelineConfig, run_id: str, executor: str | None, track: bool, printer,
             only: list[str] | None = None, runner=None) -> str:
    meta = L.RunStore(cfg.storage.root, run_id).read_meta()
    if runner is None:
        runner = _stage_executor(cfg, executor or meta.get("executor") or cfg.executor.kind)
    run = _begin(cfg, run_id, runner.kind, track)
    for st in cfg.stages:
        if _step(run, st.name, runner, printer) is None or run.failed:
            break
    return _end(run, printer)


def _create_run(cfg: PipelineConfig, kind: str, track: bool, printer, run_id: str | None = None) -> str:
    validate_stages(cfg)
    check_executor_storage(cfg, kind)
    run_id = run_id or L.new_run_id()
    store = L.RunStore(cfg.storage.root, run_id)
    # credentials never go into files: storage.options secrets are given again by the pipeline
    # file (or the environment) when the run is resumed
    store.update_meta(run_id=run_id, pipeline=cfg.name, config=scrub(cfg.to_dict()), executor=kind,
                      created=time.time(), status="running", track=track)
    printer(f"pipeline {cfg.name} run {run_id}  ({run_folder(cfg, run_id)})")
    return run_id


def run_pipeline(cfg: PipelineConfig, executor: str | None = None, *, track: bool = True, printer=print,
                 run_id: str | None = None) -> str:
    """Run every stage of ``cfg`` (cached ones are reused); returns the run id. Raises PipelineFailed."""
    kind = executor or cfg.executor.kind
    runner = _stage_executor(cfg, kind)  # before the run exists: a refusal leaves no run behind
    run_id = _create_run(cfg, kind, track, printer, run_id)
    return _execute(cfg, run_id, kind, track, printer, runner=runner)


def load_run(run_id: str, root: str) -> tuple[str, PipelineConfig, dict]:
    """(run id, the run's stored config, its metadata); ``run_id`` may be ``latest``."""
    rid = resolve_run_id(run_id, root)
    meta = L.RunStore(root, rid).read_meta()
    if not meta.get("config"):
        raise L.LineageError(f"run {rid} under {root} has no run.json config; is it a frugalcv run folder?")
    return rid, pipeline_from_dict(meta["config"], f"run {rid}"), meta


def resume_run(run_id: str, root: str, executor: str | None = None, *, printer=print) -> str:
    """Continue a run: done stages stay, the interrupted/failed one resumes from its checkpoint."""
    rid, cfg, meta = load_run(run_id, root)
    validate_stages(cfg)  # the stored config against the stages as they are registered now
    printer(f"pipeline {cfg.name} run {rid} resumed")
    return _execute(cfg, rid, executor, bool(meta.get("track", True)), printer)


def resolve_run_id(run_id: str, root: str) -> str:
    if run_id == "latest":
        rid = L.latest_run(root)
        if rid is None:
            raise L.LineageError(f"no runs yet under {root}/runs (pass --root or --pipeline to look elsewhere)")
        return rid
    if not storage.exists(storage.join(L.run_url(root, run_id), "run.json")):
        fs, path = storage.url_to_fs(L.runs_url(root))
        try:
            known = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
        except FileNotFoundError:
            known = []
        raise L.LineageError(f"no run {run_id!r} under {redact(root)}/runs; runs there: "
                             f"{', '.join(known[-5:]) or 'none'}")
    return run_id


def status(run_id: str, root: str) -> dict[str, Any]:
    """The run's state as plain JSON (schema in the module docstring)."""
    rid, cfg, meta = load_run(run_id, root)
    store = L.RunStore(root, rid)
    records = store.records()
    ids = mlflow_ids(root, rid)  # records keep the placeholders of runs made offline; show the real ids
    stages = []
    for st in cfg.stages:
        rec = records.get(st.name) or L.StageRecord(stage=st.name)
        seconds = round(rec.ended - rec.started, 1) if rec.started and rec.ended else None
        stages.append({"stage": st.name, "uses": st.uses, "state": rec.state, "fingerprint": rec.fingerprint,
                       "mlflow_run_id": _real_id(rec.mlflow_run_id, ids), "slurm_job_ids": list(rec.slurm_job_ids),
                       "metrics": dict(rec.metrics), "outputs": dict(rec.outputs), "error": rec.error,
                       "cached_from": rec.cached_from, "model_inputs": dict(rec.model_inputs), "attempts": rec.attempts, "started": rec.started,
                       "ended": rec.ended, "seconds": seconds})
    return {"run_id": rid, "pipeline": cfg.name, "root": redact(root), "run_folder": redact(run_folder(cfg, rid)),
            "status": meta.get("status", "running"), "executor": meta.get("executor"),
            "created": meta.get("created"), "ended": meta.get("ended"),
            "mlflow": {"uri": cfg.tracking.uri, "experiment": cfg.tracking.experiment,
                       "parent_run_id": _real_id(meta.get("mlflow_parent_run_id"), ids),
                       "registered_model": meta.get("registered_model")},
            "stages": stages}


def cancel(run_id: str, root: str, printer=print) -> dict[str, Any]:
    """scancel the run's Slurm jobs and stop its local stage processes; mark unfinished stages cancelled."""
    rid, cfg, meta = load_run(run_id, root)
    store = L.RunStore(root, rid)
    for name, rec in store.records().items():
        if rec.state not in ("running", "pending"):
            continue
        if rec.slurm_job_ids:
            subprocess.run(["scancel", *rec.slurm_job_ids], capture_output=True, text=True, timeout=60)
            printer(f"[{name}] scancel {' '.join(rec.slurm_job_ids)}")
        for pid in meta.get("pids", {}).get(name, []):
            try:
                os.kill(pid, signal.SIGTERM)
                printer(f"[{name}] SIGTERM to pid {pid}")
            except (ProcessLookupError, PermissionError):
                pass
        store.update(name, state="cancelled", error="cancelled by `frugalcv cancel`")
    store.update_meta(status="cancelled", ended=time.time())
    return status(rid, root)


# ------------------------------------------------------------------------------------ table


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3g}"


def key_metrics(metrics: dict[str, float], limit: int = 4) -> dict[str, float]:
    keys = [k for k in KEY_METRICS if k in metrics] + sorted(k for k in metrics if k not in KEY_METRICS)
    return {k: metrics[k] for k in keys[:limit]}


def results_table(st: dict[str, Any]) -> str:
    """A plain-text table: stage, state, seconds, key metrics; then the run's status line."""
    rows = [("stage", "state", "time", "key metrics")]
    for s in st["stages"]:
        metrics = "  ".join(f"{k}={_fmt(v)}" for k, v in key_metrics(s["metrics"]).items())
        if s["state"] == "cached" and s["cached_from"]:
            metrics = (metrics + f"  (from {s['cached_from']})").strip()
        seconds = f"{s['seconds']:.1f}s" if s["seconds"] is not None and s["state"] != "cached" else ""
        rows.append((s["stage"], s["state"], seconds, metrics))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip() for r in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    lines.append(f"run {st['run_id']}: {st['status']}  ({st['run_folder']})")
    for s in st["stages"]:
        report = (s.get("outputs") or {}).get("report")
        if report:
            lines.append(f"report of {s['stage']}: {report['uri']} (its figures beside it)")
    if (st.get("mlflow") or {}).get("parent_run_id"):
        lines.append(f"browse it in MLflow: frugalcv ui {st['run_id']}")
    return "\n".join(lines)
