"""MLflow calls as plain records: applied live by the Tracker, or replayed from the outbox by sync.

A record is ``(op, args)`` with JSON-able args; run ids in it may be placeholders of runs created
while the store was unreachable (``outbox.py``), mapped to real ids as the replay creates them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from frugalcv.sharding import storage
from frugalcv.workflows.pipeline.mlflow_store import open_client
from frugalcv.workflows.pipeline.outbox import Outbox, is_placeholder
from frugalcv.workflows.pipeline.redact import live_tracking_uri, register_tracking_uri

log = logging.getLogger(__name__)

TAG = "frugalcv."
#: tags whose values are (comma-separated) run ids; placeholders in them are mapped on sync
RUN_REF_TAGS = ("mlflow.parentRunId", "frugalcv.parent_stage_runs", "frugalcv.cached_from_run",
                "frugalcv.pipeline_mlflow_run", "frugalcv.stage_run")
#: experiments are made for training runs: MLflow 3's UI then opens them on their runs, not on
#: its GenAI overview (the UI reads this tag; value as in its ``ExperimentKind`` enum)
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
#: of those, the ones naming runs of this pipeline run (a placeholder there waits for its create)
_SAME_RUN_REFS = ("mlflow.parentRunId", "frugalcv.parent_stage_runs")
#: MLflow error codes for a request the store refused for what it says (sending it again changes nothing)
REJECTED_CODES = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST",
                            "INVALID_STATE", "BAD_REQUEST"})
#: how long one call retries a sqlite "database is locked" (with backoff) before it is queued
LOCKED_RETRY_S = 30.0


# ------------------------------------------------------------------------------------ errors


#: what a connection failure comes down to, found inside the long messages of MLflow and urllib3
_CAUSES = ("Connection refused", "timed out", "Name or service not known", "No route to host",
           "Temporary failure in name resolution", "Connection reset", "database is locked")


def short_reason(exc: BaseException) -> str:
    """A short reason for ``exc``: the cause of a connection failure, else its first line (redacted)."""
    text = str(exc)
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    for cause in _CAUSES:
        if cause.lower() in text.lower():
            return f"{type(exc).__name__}: {cause.lower()}"
    return f"{type(exc).__name__}: {storage.redact(first_line)[:200]}"


def is_unreachable(exc: BaseException) -> bool:
    """The tracking store cannot be reached (refused, timed out, 5xx from a proxy, sqlite locked)."""
    import requests

    for e in _chain(exc):
        if isinstance(e, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError):
            return True
        text = str(e)
        if isinstance(e, MlflowException) and any(s in text for s in (
                "Max retries exceeded", "Connection refused", "Read timed out", "error code 502",
                "error code 503", "error code 504")):
            return True
        if type(e).__name__ == "OperationalError" and ("locked" in text or "unable to open" in text):
            return True
    return is_locked(exc)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def is_locked(exc: BaseException) -> bool:
    """A sqlite store (local, or behind a server) answered "database is locked": worth retrying."""
    return any("database is locked" in str(e) or "database table is locked" in str(e) for e in _chain(exc))


def is_rejected(exc: BaseException) -> bool:
    """The call itself is at fault, not the store: MLflow refused its content (e.g. a param changing
    value) or its arguments are bad (a missing artifact file). Sending it again changes nothing."""
    if is_locked(exc) or is_unreachable(exc):
        return False
    if isinstance(exc, MlflowException):
        return exc.error_code in REJECTED_CODES
    return isinstance(exc, ValueError | TypeError | KeyError | FileNotFoundError | IsADirectoryError |
                      NotADirectoryError)


def retry_locked(fn: Callable[[], Any], budget_s: float = LOCKED_RETRY_S) -> Any:
    """``fn()``, tried again with jittered exponential backoff while sqlite says "database is locked",
    for at most ``budget_s`` in all; the last error is raised after that (other errors at once)."""
    deadline = time.monotonic() + budget_s
    delay = 0.05
    while True:
        try:
            return fn()
        except Exception as e:
            if not is_locked(e) or time.monotonic() + delay > deadline:
                raise
            log.debug("sqlite store locked; retrying in %.2fs", delay)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)


# ------------------------------------------------------------------------------------ replay


def _resolve_id(run_id: str | None, ids: Mapping[str, str]) -> str | None:
    if run_id is None:
        return None
    return ",".join(ids.get(part, part) for part in str(run_id).split(","))


def _placeholders(args: Mapping[str, Any], tag_keys: tuple[str, ...]) -> list[str]:
    refs = [args.get("run")] + [args.get("tags", {}).get(k) for k in tag_keys]
    return [part for ref in refs for part in str(ref or "").split(",") if is_placeholder(part)]


def mentions_placeholder(args: Mapping[str, Any]) -> bool:
    """Whether the call names any placeholder run id (then the id map is worth reading)."""
    return bool(_placeholders(args, RUN_REF_TAGS))


def waits_for_placeholder(op: str, args: Mapping[str, Any], ids: Mapping[str, str]) -> bool:
    """Whether the call names a run of this pipeline run that exists only as an unsynced placeholder."""
    return any(p not in ids for p in _placeholders(args, _SAME_RUN_REFS))


def _experiment_id(client: MlflowClient, args: Mapping[str, Any], cache: dict[str, str]) -> str:
    if args.get("experiment_id"):
        return args["experiment_id"]
    name = args["experiment"]
    if name in cache:
        return cache[name]
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            cache[name] = client.create_experiment(name, tags=EXPERIMENT_TAGS)
        except MlflowException:  # created concurrently by another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            cache[name] = exp.experiment_id
    else:
        cache[name] = exp.experiment_id
    return cache[name]


def apply_record(client: MlflowClient, op: str, args: Mapping[str, Any], ids: dict[str, str],
                 experiments: dict[str, str] | None = None) -> Any:
    """Perform one tracking call; the live path and the outbox replay both go through here.

    ``ids`` maps placeholder → real run ids; a replayed ``create_run`` adds its mapping.
    """
    experiments = {} if experiments is None else experiments
    run = _resolve_id(args.get("run"), ids)
    if op == "create_run":
        exp_id = _experiment_id(client, args, experiments)
        tags = {k: (_resolve_id(v, ids) if k in RUN_REF_TAGS else v) for k, v in args["tags"].items()}
        placeholder = args.get("placeholder")
        if placeholder:
            # replay after a crash between create and mark-sent: reuse the run made then
            found = client.search_runs([exp_id], f"tags.`{TAG}placeholder_id` = '{placeholder}'", max_results=1)
            if found:
                ids[placeholder] = found[0].info.run_id
                return ids[placeholder]
        created = client.create_run(exp_id, start_time=args.get("start_time"), tags=tags, run_name=args.get("run_name"))
        if placeholder:
            ids[placeholder] = created.info.run_id
        return created.info.run_id
    if op == "log_batch":
        tags = {k: (_resolve_id(v, ids) if k in RUN_REF_TAGS else v) for k, v in args.get("tags", {}).items()}
        client.log_batch(
            run,
            metrics=[Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in args.get("metrics", [])],
            params=[Param(k, v) for k, v in args.get("params", {}).items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        return None
    if op == "log_inputs":
        client.log_inputs(run, datasets=[
            DatasetInput(DatasetEntity(name=d["name"], digest=d["digest"], source_type=d["source_type"],
                                       source=d["source"], schema=d.get("schema"), profile=d.get("profile")),
                         tags=[InputTag(k, v) for k, v in d["tags"].items()])
            for d in args["datasets"]])
        return None
    if op == "log_text":
        client.log_text(run, args["text"], args["artifact_file"])
        return None
    if op == "log_artifact":
        with tempfile.TemporaryDirectory() as tmp:
            path = args.get("path") or Outbox.fetch_file(args["stored"], tmp)
            if os.path.isdir(path):
                client.log_artifacts(run, path, args.get("artifact_path"))
            else:
                client.log_artifact(run, path, args.get("artifact_path"))
        return None
    if op == "update_run":
        client.update_run(run, status=args["status"])
        return None
    if op == "set_terminated":
        client.set_terminated(run, args["status"], end_time=args.get("end_time"))
        return None
    if op == "register_model":
        try:
            client.create_registered_model(args["name"])
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        src = args["source"]
        if "://" not in src and not src.startswith("/"):
            src = f"runs:/{run}/{src}"
        tags = {k: (_resolve_id(v, ids) if k in RUN_REF_TAGS else v) for k, v in (args.get("tags") or {}).items()}
        return str(client.create_model_version(args["name"], src, run_id=run, tags=tags or None).version)
    raise ValueError(f"unknown tracking record op {op!r}")


@dataclass
class SyncReport:
    sent: int = 0
    already_sent: int = 0
    failed: list[str] = field(default_factory=list)
    #: the records left for a later sync because the store went away mid-sync
    remaining: int = 0


def sync_run(run_dir: str, uri: str | None = None, timeout_s: float = 30.0) -> SyncReport:
    """Replay a run folder's outbox in order into ``uri`` (default: the URI each record was made for).

    Runs created offline are created now (their placeholder ids mapped to real ones); every record
    sent is marked so a second sync sends nothing. Rejected records are kept in ``outbox.failed``.
    """
    box = Outbox(run_dir)
    report = SyncReport()
    done = box.sent() | box.failed()
    records = box.records()
    report.already_sent = sum(r["id"] in done for r in records)
    todo = [r for r in records if r["id"] not in done]
    ids = box.ids()
    clients: dict[str, MlflowClient] = {}
    experiments: dict[str, dict[str, str]] = {}
    shown = register_tracking_uri(uri) if uri else None
    for i, rec in enumerate(todo):
        target = shown or rec["uri"]
        before = dict(ids)
        try:
            if target not in clients:
                clients[target] = open_client(live_tracking_uri(target))
            client, known = clients[target], experiments.setdefault(target, {})
            with http_limits(timeout_s, 2):
                retry_locked(functools.partial(apply_record, client, rec["op"], rec["args"], ids, known))
        except Exception as e:
            if not is_rejected(e):  # the store is down or broken: keep the rest, in order, for later
                report.remaining = len(todo) - i
                log.warning("tracking store %s unusable (%s); %d records left for `frugalcv sync`",
                            storage.redact(target), short_reason(e), report.remaining)
                break
            error = storage.redact(f"{type(e).__name__}: {e}")
            box.mark_failed(rec["id"], error)
            report.failed.append(f"{rec['op']} {rec['id']}: {error[:300]}")
            continue
        for ph, real in ids.items():
            if before.get(ph) != real:
                box.set_id(ph, real)
        box.mark_sent(rec["id"])
        report.sent += 1
    return report


@contextlib.contextmanager
def http_limits(timeout_s: float, max_retries: int) -> Iterator[None]:
    """Short MLflow HTTP timeouts for the calls inside; the previous environment is restored after."""
    values = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(max(1, timeout_s))),
              "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(max_retries),
              "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
