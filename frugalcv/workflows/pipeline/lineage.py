"""Lineage: stage fingerprints, per-run stage records and the fingerprint cache.

A stage's fingerprint is sha256 over its config (``config_hash`` without ``resources``: where a
stage runs does not change what it computes), its inputs' digests (a shard manifest digest for a
dataset, sha256 of a checkpoint file or folder), the fingerprints of the stages it reads from and
the code version. A changed hyper-parameter therefore changes that stage's fingerprint and, via
the chained parent fingerprints, every stage downstream.

Layout under ``<storage.root>``::

    runs/<run id>/run.json              pipeline name, MLflow parent run id, ...
    runs/<run id>/stages/<stage>.json   StageRecord (state, fingerprint, outputs, ...)
    cache/<fingerprint>.json            the finished StageRecord a re-run may reuse
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import frugalcv
from frugalcv.errors import FrugalError, ShardError
from frugalcv.sharding import storage
from frugalcv.sharding.manifest import MANIFEST_NAME, load_manifest, manifest_location
from frugalcv.workflows.pipeline.config import REFERENCE, PipelineConfig, config_hash
from frugalcv.workflows.pipeline.schema import to_plain

STATES = ("pending", "running", "finished", "failed", "cached", "cancelled")
#: states whose outputs a downstream stage may read
DONE = ("finished", "cached")
RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}")
_CHUNK = 4 << 20


class LineageError(FrugalError):
    """An input cannot be digested or a record is missing/invalid."""


# ------------------------------------------------------------------------------------ run ids


def new_run_id(now: float | None = None) -> str:
    """A sortable run id ``YYYYmmdd-HHMMSS-xxxx`` (UTC, 4 random hex digits)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(2)}"


def runs_url(root: str) -> str:
    return storage.join(root, "runs")


def run_url(root: str, run_id: str) -> str:
    return storage.join(root, "runs", run_id)


def latest_run(root: str) -> str | None:
    """The newest run id under ``<root>/runs``, or None when there is none."""
    fs, path = storage.url_to_fs(runs_url(root))
    try:
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    except FileNotFoundError:
        return None
    ids = sorted(n for n in names if RUN_ID.fullmatch(n))
    if not ids:
        return None
    # ids carry whole seconds: runs begun within the newest second are ordered by the time
    # their run.json records (a folder without one yet counts as the oldest)
    stamp = ids[-1][:15]
    same = [i for i in ids if i[:15] == stamp]
    if len(same) == 1:
        return same[0]
    return max(same, key=lambda i: (float(RunStore(root, i).read_meta().get("created") or 0.0), i))


# ------------------------------------------------------------------------------------ digests


def file_sha256(url: str) -> str:
    """sha256 of one file, streamed (any fsspec URL)."""
    h = hashlib.sha256()
    with storage.open_read(url) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tree_sha256(url: str) -> str:
    """sha256 over (relative path, file sha256) of every file under a folder, e.g. a DeepSpeed checkpoint."""
    fs, path = storage.url_to_fs(url)
    base = path.rstrip("/")
    proto = url.split("://", 1)[0] + "://" if "://" in url else ""
    h = hashlib.sha256()
    for p in sorted(fs.find(base)):
        rel = p[len(base):].lstrip("/")
        h.update(f"{rel}\0{file_sha256(proto + p if proto else p)}\n".encode())
    return h.hexdigest()


def input_digest(url: str) -> str:
    """Identity of an input: ``manifest:<digest>`` for a shard dataset, else ``sha256:<hex>``."""
    if storage.exists(storage.join(manifest_location(url), MANIFEST_NAME)):
        return "manifest:" + load_manifest(url).digest()
    fs, path = storage.url_to_fs(url)
    if not fs.exists(path):
        raise LineageError(f"{storage.redact(url)}: input does not exist, so it cannot be fingerprinted")
    return "sha256:" + (tree_sha256(url) if fs.isdir(path) else file_sha256(url))


def output_ref(url: str) -> dict[str, str]:
    """``{uri, sha256}`` for a stage output: a file's bytes, a shard dataset's manifest (which holds
    every shard's sha256, so the shards are not read again), or any other folder's files."""
    fs, path = storage.url_to_fs(url)
    if not fs.isdir(path):
        return {"uri": url, "sha256": file_sha256(url)}
    if fs.exists(path.rstrip("/") + "/" + MANIFEST_NAME):
        return {"uri": url, "sha256": load_manifest(url).digest()}
    return {"uri": url, "sha256": tree_sha256(url)}


def output_intact(url: str) -> bool:
    """The output is still there; for a shard dataset, every shard too, at its recorded size."""
    if not storage.exists(url):
        return False
    fs, path = storage.url_to_fs(url)
    if not (fs.isdir(path) and fs.exists(path.rstrip("/") + "/" + MANIFEST_NAME)):
        return True
    try:
        return not load_manifest(url).changed_shards()
    except ShardError:
        return False


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, str | None]:
    """frugalcv version, git commit (when installed from a checkout) and a hash of the package sources."""
    pkg = Path(frugalcv.__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(pkg.rglob("*.py")):
        h.update(p.relative_to(pkg).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    commit = None
    try:
        # only frugalcv's own checkout: not a user's repository that happens to hold a venv
        out = subprocess.run(["git", "-C", str(pkg), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        lines = out.stdout.split()
        if out.returncode == 0 and len(lines) == 2 and Path(lines[0]).resolve() == pkg.parent:
            commit = lines[1]
    except (OSError, subprocess.SubprocessError):
        pass
    return {"version": frugalcv.__version__, "git_commit": commit, "source_sha256": h.hexdigest()}


def fingerprint(config: Any, inputs: dict[str, str] | None = None, parents: dict[str, str] | None = None,
                code: dict[str, Any] | None = None) -> str:
    """sha256 over a stage's config, its input digests, its parents' fingerprints and the code version."""
    if dataclasses.is_dataclass(config):
        config = to_plain(config)
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if k != "resources"}
    payload = {
        "config": config_hash(config),
        "inputs": dict(sorted((inputs or {}).items())),
        "parents": dict(sorted((parents or {}).items())),
        "code": code if code is not None else code_version(),
    }
    return config_hash(payload)


def stage_fingerprint(cfg: PipelineConfig, stage: str, store: RunStore, code: dict[str, Any] | None = None,
                      resolved: dict[str, dict[str, str]] | None = None) -> str:
    """Fingerprint of ``stage`` in ``cfg``; referenced inputs use the parent stage's record in ``store``.

    A referenced input contributes the parent output's sha256 and the parent's fingerprint, so it
    needs the parent done (finished or cached); a ``models:/`` or ``runs:/`` input contributes the
    sha256 of the checkpoint it resolves to (``resolved``, else looked up now); plain URLs are
    digested here.
    """
    from frugalcv.workflows.pipeline.registry import is_registry_uri, resolve_stage_inputs

    st = cfg.stage(stage)
    inputs: dict[str, str] = {}
    parents: dict[str, str] = {}
    if resolved is None and any(is_registry_uri(u) for u in st.inputs.values()):
        resolved = resolve_stage_inputs(cfg, stage)
    for name, url in st.inputs.items():
        m = REFERENCE.fullmatch(url)
        if is_registry_uri(url):
            inputs[name] = "sha256:" + (resolved or {})[name]["sha256"]
            continue
        if not m:
            inputs[name] = input_digest(url)
            continue
        other, output = m.groups()
        rec = store.read(other)
        if rec is None or rec.state not in DONE:
            raise LineageError(f"stage {stage!r} input {name!r} needs stage {other!r} done first "
                               f"(its state: {rec.state if rec else 'not started'})")
        if output not in rec.outputs:
            raise LineageError(f"stage {other!r} has no output {output!r} (outputs: {', '.join(rec.outputs) or 'none'})")
        inputs[name] = "sha256:" + rec.outputs[output]["sha256"]
        parents[other] = rec.fingerprint
    config = to_plain(st)
    if cfg.smoke_steps:  # a smoke run's outputs never stand in for a real run's
        config["smoke_steps"] = cfg.smoke_steps
    return fingerprint(config, inputs, parents, code)


def tail(text: str, lines: int = 60) -> str:
    """The last ``lines`` lines of a log, for a failed stage's record."""
    return "\n".join(text.splitlines()[-lines:])


# ------------------------------------------------------------------------------------ records


@dataclass(kw_only=True)
class StageRecord:
    """What is known about one stage of one pipeline run."""

    stage: str
    state: str = "pending"
    fingerprint: str = ""
    run_id: str = ""
    mlflow_run_id: str | None = None
    slurm_job_ids: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    #: output name → {"uri": ..., "sha256": ...}
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    error: str | None = None
    #: for a cached stage: the run id whose outputs it reuses
    cached_from: str | None = None
    #: inputs given as ``models:/`` / ``runs:/``: name → {source, uri, sha256, run_id, model, version}
    model_inputs: dict[str, dict[str, str]] = field(default_factory=dict)
    attempts: int = 0
    started: float | None = None
    ended: float | None = None

    def __post_init__(self):
        if self.state not in STATES:
            raise LineageError(f"stage {self.stage!r}: state {self.state!r} is not one of {', '.join(STATES)}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> StageRecord:
        d = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class RunStore:
    """Stage records of one pipeline run plus the shared fingerprint cache, under ``root``."""

    def __init__(self, root: str, run_id: str):
        self.root = root
        self.run_id = run_id
        self.url = run_url(root, run_id)

    def _stage_url(self, stage: str) -> str:
        return storage.join(self.url, "stages", f"{stage}.json")

    def _cache_url(self, fp: str) -> str:
        return storage.join(self.root, "cache", f"{fp}.json")

    # run-level metadata (pipeline name, MLflow parent run id): every stage process reads it
    def read_meta(self) -> dict[str, Any]:
        try:
            return json.loads(storage.read_bytes(storage.join(self.url, "run.json")))
        except FileNotFoundError:
            return {}

    def update_meta(self, **changes: Any) -> dict[str, Any]:
        meta = {**self.read_meta(), **changes}
        storage.write_bytes_atomic(storage.join(self.url, "run.json"), json.dumps(meta, indent=1, sort_keys=True).encode())
        return meta

    def read(self, stage: str) -> StageRecord | None:
        try:
            return StageRecord.from_json(storage.read_bytes(self._stage_url(stage)).decode())
        except FileNotFoundError:
            return None

    def write(self, record: StageRecord) -> StageRecord:
        record.run_id = self.run_id
        storage.write_bytes_atomic(self._stage_url(record.stage), record.to_json().encode())
        if record.state == "finished" and record.fingerprint:
            storage.write_bytes_atomic(self._cache_url(record.fingerprint), record.to_json().encode())
        return record

    def update(self, stage: str, **changes: Any) -> StageRecord:
        """Read-modify-write one stage's record (created when missing); stamps start/end times."""
        rec = self.read(stage) or StageRecord(stage=stage)
        if changes.get("state") == "running" and rec.state != "running":
            rec.attempts += 1
            rec.started = rec.started or time.time()
        if changes.get("state") in ("finished", "failed", "cached", "cancelled"):
            changes.setdefault("ended", time.time())
        for key, value in changes.items():
            if not hasattr(rec, key):
                raise LineageError(f"StageRecord has no field {key!r}")
            setattr(rec, key, value)
        rec.__post_init__()
        return self.write(rec)

    def add_slurm_job(self, stage: str, job_id: str) -> StageRecord:
        rec = self.read(stage) or StageRecord(stage=stage)
        if str(job_id) not in rec.slurm_job_ids:
            rec.slurm_job_ids.append(str(job_id))
        return self.write(rec)

    def records(self) -> dict[str, StageRecord]:
        fs, path = storage.url_to_fs(storage.join(self.url, "stages"))
        try:
            names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
        except FileNotFoundError:
            return {}
        stages = [n[: -len(".json")] for n in names if n.endswith(".json")]
        return {s: r for s in stages if (r := self.read(s)) is not None}

    def cache_lookup(self, fp: str, verify: bool = False) -> StageRecord | None:
        """The finished record with fingerprint ``fp`` whose outputs still exist (and match, with ``verify``)."""
        try:
            rec = StageRecord.from_json(storage.read_bytes(self._cache_url(fp)).decode())
        except FileNotFoundError:
            return None
        for out in rec.outputs.values():
            if not output_intact(out["uri"]):
                return None
            if verify and output_ref(out["uri"])["sha256"] != out["sha256"]:
                return None
        return rec

    def mark_cached(self, stage: str, source: StageRecord) -> StageRecord:
        """Record ``stage`` as cached: it reuses ``source``'s fingerprint, outputs and metrics."""
        now = time.time()
        rec = StageRecord(stage=stage, state="cached", fingerprint=source.fingerprint, metrics=dict(source.metrics),
                          outputs={k: dict(v) for k, v in source.outputs.items()},
                          cached_from=source.cached_from or source.run_id, started=now, ended=now)
        old = self.read(stage)
        if old is not None:
            rec.mlflow_run_id = old.mlflow_run_id
        return self.write(rec)


def cached_or_none(store: RunStore, stage: str, fp: str, verify: bool = False) -> StageRecord | None:
    """If a finished run with fingerprint ``fp`` exists, record ``stage`` as cached and return it."""
    hit = store.cache_lookup(fp, verify=verify)
    return store.mark_cached(stage, hit) if hit is not None else None


def run_dir(root: str, run_id: str | None = None) -> str:
    """``<root>/runs/<run id>``, the latest run when ``run_id`` is None."""
    run_id = run_id or latest_run(root)
    if run_id is None:
        raise LineageError(f"{storage.redact(root)}: no runs yet under {storage.redact(runs_url(root))}")
    return run_url(root, run_id)


__all__ = [
    "DONE", "STATES", "LineageError", "RunStore", "StageRecord", "cached_or_none", "code_version",
    "file_sha256", "fingerprint", "input_digest", "latest_run", "new_run_id", "output_ref", "run_dir",
    "run_url", "stage_fingerprint", "tail", "tree_sha256",
]
