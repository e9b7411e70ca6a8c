"""MLflow tracking for pipeline runs: one parent run per pipeline run, one child run per stage.

Only rank 0 uses a :class:`Tracker`. Every MLflow call goes through one place that never
raises into training: when the store cannot be used — the server unreachable (short timeouts,
no retries), the client not created, a sqlite file still locked after ``LOCKED_RETRY_S`` of
retries with backoff, any error but the store refusing the request itself — the call is
appended to the run folder's outbox (see ``outbox.py``) and a warning is logged once;
:func:`sync_run` (``frugalcv sync RUN``) replays the outbox later. Calls that name a run
created while offline (a placeholder id) also go to the outbox, so records stay in order.
A new sqlite store is created by one process at a time (``mlflow_store.py``).

Lifecycle (driver, then each stage's rank 0)::

    t = Tracker(cfg.tracking.uri, root=cfg.storage.root, run_id=run_id, experiment=cfg.tracking.experiment)
    parent = t.start_pipeline(cfg.name, cfg.tracking.experiment, run_id, cfg.to_dict())
    child = t.start_stage(parent, "pretrain", fp, parent_stage_runs=[...])   # or t.resume_stage(child)
    t.log_params(stage.params); t.log_input(url, "train"); t.log_metrics({"loss": 0.1}, step)
    t.log_outputs({"checkpoint": {"uri": ..., "sha256": ...}}); t.end_stage("finished")
    t.end_pipeline("finished")
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import warnings
from collections.abc import Mapping
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset

from frugalcv.sharding import storage
from frugalcv.sharding.manifest import load_manifest
from frugalcv.workflows.pipeline.lineage import code_version, run_url
from frugalcv.workflows.pipeline.mlflow_ops import (
    TAG,
    SyncReport,
    apply_record,
    http_limits,
    is_rejected,
    is_unreachable,
    mentions_placeholder,
    retry_locked,
    short_reason,
    sync_run,
    waits_for_placeholder,
)
from frugalcv.workflows.pipeline.mlflow_store import open_client
from frugalcv.workflows.pipeline.outbox import Outbox, is_placeholder, new_placeholder
from frugalcv.workflows.pipeline.params import pipeline_params
from frugalcv.workflows.pipeline.redact import (
    drop_unset,
    flatten,
    live_tracking_uri,
    register_tracking_uri,
    scrub,
)

log = logging.getLogger(__name__)

STATUS = {"finished": "FINISHED", "cached": "FINISHED", "failed": "FAILED", "cancelled": "KILLED",
          "killed": "KILLED", "running": "RUNNING"}
MAX_PARAM_VALUE = 6000  # MLflow's limits
MAX_TAG_VALUE = 8000
MAX_DIGEST = 36
MAX_INPUT_TAG_VALUE = 500


# ------------------------------------------------------------------------------------ datasets


class FsspecDatasetSource(DatasetSource):
    """A dataset source for any fsspec URL MLflow has no resolver for (memory://, gs://, ...)."""

    def __init__(self, uri: str):
        self.uri = uri

    @staticmethod
    def _get_source_type() -> str:
        return "fsspec"

    def load(self, **kwargs) -> str:
        return self.uri

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> FsspecDatasetSource:
        return cls(str(raw_source))

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> FsspecDatasetSource:
        return cls(source_dict["uri"])


def dataset_source(url: str) -> DatasetSource:
    """MLflow's own source for the URL (local, s3, http, ...) or an :class:`FsspecDatasetSource`."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    url = storage.redact(url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return resolve_dataset_source(url)
    except Exception:
        return FsspecDatasetSource(url)


def _dataset_record(url: str, name: str, sha256: str, context: str, tags: Mapping[str, Any]) -> dict[str, Any]:
    ds = MetaDataset(dataset_source(url), name=name, digest=sha256[:MAX_DIGEST])._to_mlflow_entity()
    input_tags = {"mlflow.data.context": context, f"{TAG}sha256": sha256, f"{TAG}uri": storage.redact(url)}
    input_tags.update({k: str(v) for k, v in tags.items()})
    input_tags = {k: _truncate(v, MAX_INPUT_TAG_VALUE) for k, v in input_tags.items()}
    return {"name": ds.name, "digest": ds.digest, "source_type": ds.source_type, "source": ds.source,
            "schema": ds.schema, "profile": ds.profile, "tags": input_tags}


# ------------------------------------------------------------------------------------ tracker


class Tracker:
    """Rank 0's MLflow client for one pipeline run; degrades to the run folder's outbox.

    ``root`` and ``run_id`` locate the outbox (``<root>/runs/<run_id>/outbox.jsonl``); without
    them calls made while the store is unreachable are dropped with a warning. Each HTTP call
    waits at most ``timeout_s`` with ``max_retries`` retries; after one failure that is not a
    refusal of the request (unreachable, locked, the client not created) the tracker stays
    offline (queuing) for its lifetime. The MLflow client is created on first use. Logging
    methods log to ``run_id`` if given, else the current stage run (``stage_run_id``, settable),
    else the pipeline run.
    """

    def __init__(self, uri: str, root: str | None = None, run_id: str | None = None, experiment: str | None = None,
                 timeout_s: float = 5.0, max_retries: int = 0, system_metrics: bool = False):
        self.uri = register_tracking_uri(uri)  # what records and messages show; credentials stay here
        self.root = root
        self.run_id = run_id
        self.experiment = experiment
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.system_metrics = system_metrics
        self._client: MlflowClient | None = None
        self.offline = False
        self.parent_run_id: str | None = None
        self.stage_run_id: str | None = None
        self._experiments: dict[str, str] = {}
        self._monitor = None

    # ----------------------------------------------------------------------------- plumbing
    @property
    def client(self) -> MlflowClient:
        """The MLflow client, created (and a new sqlite store migrated, once) on first use; may raise."""
        if self._client is None:
            self._client = open_client(live_tracking_uri(self.uri))
        return self._client

    @property
    def outbox(self) -> Outbox | None:
        if self.root is None or self.run_id is None:
            return None
        return Outbox(run_url(self.root, self.run_id))

    def _ids(self) -> dict[str, str]:
        box = self.outbox
        return box.ids() if box is not None else {}

    def _call(self, op: str, args: dict[str, Any]) -> Any:
        """Do one call live, or queue it; never raises. A queued create_run returns a placeholder."""
        if args.get("run", "") is None:
            log.warning("MLflow %s skipped: no run (call start_pipeline/start_stage/resume_stage first)", op)
            return None
        ids = self._ids() if not self.offline and mentions_placeholder(args) else {}
        if not self.offline and not waits_for_placeholder(op, args, ids):
            try:
                with http_limits(self.timeout_s, self.max_retries):
                    return retry_locked(lambda: apply_record(self.client, op, args, ids, self._experiments))
            except Exception as e:
                if is_rejected(e):
                    log.warning("MLflow %s refused (training goes on): %s", op, storage.redact(_first_line(e)))
                    return None
                self._go_offline(e)
        return self._queue(op, args)

    def _go_offline(self, exc: BaseException) -> None:
        """From now on this tracker queues every call; warned once."""
        if self.offline:
            return
        self.offline = True
        box = self.outbox
        where = f"queuing calls in {storage.redact(box.url)}; replay with `frugalcv sync {self.run_id}`" \
            if box else "dropping tracking calls (no run folder for an outbox)"
        what = "is unreachable" if is_unreachable(exc) else "cannot be used"
        log.warning("MLflow tracking store %s %s (%s); training goes on, %s", storage.redact(self.uri), what,
                    short_reason(exc), where)

    def _queue(self, op: str, args: dict[str, Any]) -> Any:
        box = self.outbox
        if box is None:
            return new_placeholder() if op == "create_run" else None
        rid = os.urandom(16).hex()
        if op == "create_run":
            args = {**args, "placeholder": new_placeholder()}
            args["tags"] = {**args["tags"], f"{TAG}placeholder_id": args["placeholder"]}
        if op == "log_artifact" and args.get("path"):
            path = args["path"]
            args = {k: v for k, v in args.items() if k != "path"}
            try:
                args["stored"] = box.store_file(rid, path)
            except OSError as e:
                log.warning("could not keep artifact %s for a later sync: %s", path, e)
                return None
        try:
            box.append(op, args, self.uri, record_id=rid)
        except Exception as e:  # even the outbox failing must not stop training
            log.warning("could not write tracking outbox %s: %s", storage.redact(box.url), e)
            return None
        return args.get("placeholder")

    def _run(self, run_id: str | None) -> str | None:
        """The run a call logs to: ``run_id``, else the current stage run, else the pipeline run."""
        return run_id or self.stage_run_id or self.parent_run_id

    def _code_tags(self) -> dict[str, str]:
        cv = code_version()
        tags = {f"{TAG}version": cv["version"], f"{TAG}source_sha256": cv["source_sha256"]}
        if cv["git_commit"]:
            tags[f"{TAG}git_commit"] = cv["git_commit"]
        return tags

    # ----------------------------------------------------------------------------- runs
    def start_pipeline(self, name: str, experiment: str, run_id: str, config: Mapping[str, Any] | None = None) -> str:
        """Create (or, for a resumed pipeline run, find) the parent run; logs the config. Returns its id."""
        self.run_id, self.experiment = run_id, experiment
        existing = self._queued_pipeline_run(run_id) or \
            self._find_runs(f"tags.`{TAG}pipeline_run` = '{run_id}' and tags.`{TAG}role` = 'pipeline'")
        if existing:
            self.parent_run_id = existing[0]
            self._call("update_run", {"run": self.parent_run_id, "status": "RUNNING"})
            return self.parent_run_id
        tags = {f"{TAG}pipeline": name, f"{TAG}pipeline_run": run_id, f"{TAG}role": "pipeline", **self._code_tags()}
        self.parent_run_id = self._call("create_run", {"experiment": experiment, "run_name": f"{name} {run_id}",
                                                       "tags": tags, "start_time": _now_ms()})
        if self.parent_run_id and config is not None:
            self.log_params(pipeline_params(config), run_id=self.parent_run_id)
            self.log_config(config, "config/pipeline.yaml", run_id=self.parent_run_id)
        return self.parent_run_id

    def start_stage(self, parent_id: str, stage: str, fingerprint: str, tags: Mapping[str, Any] | None = None, *,
                    parent_stage_runs: list[str] | tuple[str, ...] = (), slurm_job_id: str | None = None) -> str:
        """Create the stage's child run under ``parent_id``. Returns its id (a placeholder when offline)."""
        self.parent_run_id = parent_id
        job = slurm_job_id or os.environ.get("SLURM_JOB_ID")
        all_tags = {
            "mlflow.parentRunId": parent_id, f"{TAG}role": "stage", f"{TAG}stage": stage,
            f"{TAG}fingerprint": fingerprint, f"{TAG}pipeline_run": self.run_id or "",
            f"{TAG}parent_stage_runs": ",".join(r for r in parent_stage_runs if r), **self._code_tags(),
        }
        if job:
            all_tags[f"{TAG}slurm_job_id"] = str(job)
        all_tags.update(_tag_values(tags or {}))
        args: dict[str, Any] = {"run_name": stage, "tags": all_tags, "start_time": _now_ms()}
        args.update(self._experiment_ref(parent_id))
        self.stage_run_id = self._call("create_run", args)
        if self.stage_run_id and self.system_metrics:
            self.start_system_metrics(self.stage_run_id)
        return self.stage_run_id

    def resume_stage(self, run_id: str, slurm_job_id: str | None = None) -> str:
        """Continue a stage's child run after a requeue: it becomes this tracker's stage run, RUNNING again."""
        self.stage_run_id = run_id
        self._call("update_run", {"run": run_id, "status": "RUNNING"})
        job = slurm_job_id or os.environ.get("SLURM_JOB_ID")
        if job:
            self.set_tags({f"{TAG}slurm_job_id": str(job)}, run_id=run_id)
        if self.system_metrics:
            self.start_system_metrics(run_id)
        return run_id

    def record_cached_stage(self, parent_id: str, stage: str, record: Any) -> str:
        """A closed child run for a stage reused from the cache (a lineage ``StageRecord``): its
        fingerprint, outputs and metrics, and where they came from."""
        tags = {f"{TAG}cached": "true", f"{TAG}cached_from": record.cached_from or record.run_id}
        if record.mlflow_run_id and not is_placeholder(record.mlflow_run_id):
            tags[f"{TAG}cached_from_run"] = record.mlflow_run_id
        run = self.start_stage(parent_id, stage, record.fingerprint, tags)
        if record.metrics:
            self.log_metrics(record.metrics, run_id=run)
        if record.outputs:
            self.log_outputs(record.outputs, run_id=run)
        self.end_stage("cached", run_id=run)
        return run

    def end_stage(self, status: str = "finished", run_id: str | None = None) -> None:
        """Close the stage run: finished/cached → FINISHED, failed → FAILED, cancelled → KILLED."""
        self.stop_system_metrics()
        run = self._run(run_id)
        self._call("set_terminated", {"run": run, "status": _status(status), "end_time": _now_ms()})
        if run == self.stage_run_id:
            self.stage_run_id = None

    def end_pipeline(self, status: str = "finished", run_id: str | None = None) -> None:
        run = run_id or self.parent_run_id
        if run:
            self._call("set_terminated", {"run": run, "status": _status(status), "end_time": _now_ms()})

    def _experiment_ref(self, parent_id: str) -> dict[str, str]:
        if self.experiment:
            return {"experiment": self.experiment}
        if not is_placeholder(parent_id) and not self.offline:
            try:
                with http_limits(self.timeout_s, self.max_retries):
                    return {"experiment_id": self.client.get_run(parent_id).info.experiment_id}
            except Exception as e:
                log.warning("could not read parent run %s: %s", parent_id, e)
        box = self.outbox
        for rec in box.records() if box else []:
            if rec["op"] == "create_run" and rec["args"].get("placeholder") == parent_id:
                return {k: rec["args"][k] for k in ("experiment", "experiment_id") if rec["args"].get(k)}
        return {"experiment": "Default"}

    def _queued_pipeline_run(self, run_id: str) -> list[str]:
        """The parent run an earlier, offline attempt of this pipeline run queued (mapped if synced)."""
        box = self.outbox
        for rec in box.records() if box else []:
            tags = rec["args"].get("tags", {})
            if rec["op"] == "create_run" and tags.get(f"{TAG}role") == "pipeline" \
                    and tags.get(f"{TAG}pipeline_run") == run_id:
                return [box.ids().get(rec["args"]["placeholder"], rec["args"]["placeholder"])]
        return []

    def _find_runs(self, filter_string: str) -> list[str]:
        if self.offline or not self.experiment:
            return []
        try:
            with http_limits(self.timeout_s, self.max_retries):
                exp = retry_locked(lambda: self.client.get_experiment_by_name(self.experiment))
                if exp is None:
                    return []
                runs = retry_locked(lambda: self.client.search_runs([exp.experiment_id], filter_string))
                return [r.info.run_id for r in runs]
        except Exception as e:
            if is_rejected(e):
                log.warning("MLflow search failed: %s", storage.redact(_first_line(e)))
                return []
            self._go_offline(e)
            return []

    # ----------------------------------------------------------------------------- logging
    def log_params(self, params: Mapping[str, Any], run_id: str | None = None) -> None:
        """Nested dicts flattened to ``a.b.c``; unset values (None, empty) left out; credentials scrubbed;
        long values truncated."""
        flat = {k[:250]: _truncate(str(v), MAX_PARAM_VALUE) for k, v in drop_unset(flatten(scrub(dict(params)))).items()}
        run = self._run(run_id)
        items = sorted(flat.items())
        for i in range(0, len(items), 100):
            self._call("log_batch", {"run": run, "params": dict(items[i:i + 100])})

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0, run_id: str | None = None) -> None:
        """Numeric values (floats, ints, 0-d tensors) at ``step``; nested dicts flattened; others skipped."""
        ts = _now_ms()
        rows = []
        for k, v in flatten(dict(metrics)).items():
            try:
                rows.append([k, float(v), ts, int(step)])
            except (TypeError, ValueError):
                log.debug("metric %s=%r is not a number; not logged", k, v)
        run = self._run(run_id)
        for i in range(0, len(rows), 1000):
            self._call("log_batch", {"run": run, "metrics": rows[i:i + 1000]})

    def set_tags(self, tags: Mapping[str, Any], run_id: str | None = None) -> None:
        self._call("log_batch", {"run": self._run(run_id), "tags": _tag_values(tags)})

    def log_input(self, manifest_url: str, context: str = "train", name: str | None = None,
                  run_id: str | None = None) -> None:
        """Log a shard dataset as a run input: name, digest = the manifest digest, its URL as the source."""
        try:
            m = load_manifest(manifest_url)
        except Exception as e:
            log.warning("not logging input %s: %s", storage.redact(manifest_url), e)
            return
        rec = _dataset_record(manifest_url, name or f"{m.kind}-{m.split}", m.digest(), context,
                              {f"{TAG}kind": "shards", f"{TAG}samples": m.num_samples, f"{TAG}shards": len(m.shards)})
        self._call("log_inputs", {"run": self._run(run_id), "datasets": [rec]})

    def log_checkpoint_input(self, uri: str, sha256: str, context: str = "parent_checkpoint", name: str | None = None,
                             run_id: str | None = None) -> None:
        """Log a parent stage's checkpoint (by URI and sha256; not uploaded) as a run input."""
        rec = _dataset_record(uri, name or os.path.basename(uri.rstrip("/")), sha256, context, {f"{TAG}kind": "checkpoint"})
        self._call("log_inputs", {"run": self._run(run_id), "datasets": [rec]})

    def log_checkpoint(self, name: str, uri: str, sha256: str, run_id: str | None = None) -> None:
        """Reference a checkpoint by URI + sha256 in tags (checkpoints are not uploaded)."""
        self.set_tags({f"{TAG}checkpoint.{name}.uri": storage.redact(uri), f"{TAG}checkpoint.{name}.sha256": sha256},
                      run_id=run_id)

    def log_outputs(self, outputs: Mapping[str, Mapping[str, str]], run_id: str | None = None) -> None:
        """A stage's outputs ``{name: {uri, sha256}}`` as tags ``frugalcv.output.<name>.uri/.sha256``."""
        tags = {}
        for name, ref in outputs.items():
            tags[f"{TAG}output.{name}.uri"] = storage.redact(ref["uri"])
            if ref.get("sha256"):
                tags[f"{TAG}output.{name}.sha256"] = ref["sha256"]
        self.set_tags(tags, run_id=run_id)

    def log_text(self, text: str, artifact_file: str, run_id: str | None = None) -> None:
        self._call("log_text", {"run": self._run(run_id), "text": text, "artifact_file": artifact_file})

    def log_config(self, config: Mapping[str, Any], artifact_file: str = "config/stage.yaml",
                   run_id: str | None = None) -> None:
        """The resolved config as a YAML artifact, credentials scrubbed."""
        self.log_text(yaml.safe_dump(scrub(dict(config)), sort_keys=False), artifact_file, run_id=run_id)

    def log_artifact(self, local_path: str, artifact_path: str | None = None, run_id: str | None = None) -> None:
        """A report or plot file; kept in the outbox folder when the store is unreachable."""
        self._call("log_artifact", {"run": self._run(run_id), "path": local_path, "artifact_path": artifact_path})

    def register_model(self, run_id: str, source: str, name: str, tags: Mapping[str, Any] | None = None) -> str | None:
        """Register ``source`` (an artifact path of the run, or a checkpoint URI) as a new version of ``name``."""
        return self._call("register_model", {"run": run_id, "source": storage.redact(source), "name": name,
                                             "tags": _tag_values(tags or {})})

    def flush(self) -> SyncReport | None:
        """Replay this run's outbox now (e.g. at the end of the pipeline) if the store is back."""
        box = self.outbox
        try:
            if box is None or not box.pending():
                return None
            report = sync_run(box.run_dir, timeout_s=self.timeout_s)
        except Exception as e:  # e.g. the run folder unreadable: the records stay for `frugalcv sync`
            log.warning("could not replay tracking outbox now (%s: %s); run `frugalcv sync %s` later",
                        type(e).__name__, _first_line(e), self.run_id)
            return None
        if report.remaining == 0:
            self.offline = False
        return report

    # ----------------------------------------------------------------------------- system metrics
    def start_system_metrics(self, run_id: str | None = None, node_id: str | None = None,
                             sampling_interval_s: float = 10.0) -> None:
        """CPU/GPU/memory metrics of this node into the stage run, labelled by ``node_id`` (the hostname).

        Call it where training runs: each node's local rank 0 (a Tracker of its own); start_stage and
        resume_stage call it when the Tracker was made with ``system_metrics=True``. Needs psutil;
        skipped when offline. Stop with :meth:`stop_system_metrics` (end_stage does).
        """
        run_id = self._run(run_id)
        if run_id is None or self.offline or is_placeholder(run_id) or self._monitor is not None:
            return
        try:
            import psutil  # noqa: F401  (MLflow's monitor needs it)
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        except ImportError:
            return
        try:
            # resume_logging: a requeued stage continues the step count of its earlier attempts
            self._monitor = SystemMetricsMonitor(run_id, sampling_interval_s, node_id=node_id or socket.gethostname(),
                                                 tracking_uri=live_tracking_uri(self.uri), resume_logging=True)
            self._monitor.start()
        except Exception as e:
            log.warning("system metrics not logged: %s", e)
            self._monitor = None

    def stop_system_metrics(self) -> None:
        if self._monitor is not None:
            with contextlib.suppress(Exception):
                self._monitor.finish()
            self._monitor = None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _status(status: str) -> str:
    s = STATUS.get(status.lower(), status.upper())
    if s not in ("FINISHED", "FAILED", "KILLED", "RUNNING", "SCHEDULED"):
        raise ValueError(f"run status {status!r}: use one of {', '.join(STATUS)}")
    return s


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tag_values(tags: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): _truncate(str(v), MAX_TAG_VALUE) for k, v in flatten(scrub(dict(tags))).items()}


__all__ = ["FsspecDatasetSource", "SyncReport", "Tracker", "dataset_source", "is_unreachable", "sync_run"]
