"""Where a stage runs: ``inline`` (this process), ``local`` (child processes), ``slurm`` (submitit).

All three run :func:`frugalcv.workflows.pipeline.entry.run_spec` on the same JSON stage spec, so
the stage code is identical. ``run(spec, cfg)`` returns rank 0's result dict or raises
:class:`StageFailed` with the log tail. ``local`` starts ``nodes × tasks_per_node`` processes of
``python -m frugalcv.workflows.pipeline.entry`` (gloo rendezvous on 127.0.0.1), logs in
``<run>/logs/<stage>.rank<r>.log``. ``slurm`` submits with ``submitit.SlurmExecutor`` and the
exact parameters of :func:`frugalcv.workflows.pipeline.plan.sbatch_parameters` (what ``--dry-run`` prints)
into ``<run>/slurm/%j`` (a fresh folder per job id); the job is a Checkpointable
:class:`frugalcv.slurm.preemption.StageJob`: on USR2 (preemption, timeout) the stage's
``ControlHook`` checkpoints at the next step boundary, submitit requeues the job, and the
requeued job resumes from that checkpoint.

``run_array(specs, cfg, on_job)`` runs several specs of one stage (the tasks of an array stage,
the values of a sweep) and returns one result or :class:`StageFailed` per spec: ``slurm`` submits
them as ONE job array (``submit_array``; job ids ``<id>_<i>``), the others run them one after another.

``inline`` and ``local`` work with any fsspec run folder (an ``s3://`` storage root): logs and the
spec are written to local temporary files and the logs copied into the run folder when the stage
ends; ``slurm`` needs a shared POSIX folder (``plan.check_executor_storage``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import redirect_stdout
from typing import Any

import submitit

from frugalcv.errors import ConfigError, FrugalError
from frugalcv.sharding import storage
from frugalcv.workflows.pipeline.config import PipelineConfig
from frugalcv.workflows.pipeline.lineage import tail

KINDS = ("inline", "local", "slurm")


class StageFailed(FrugalError):
    """A stage ended without a result; ``log_tail`` holds the end of its log."""

    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(message)
        self.log_tail = log_tail


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()


@contextlib.contextmanager
def _local_file(url: str, suffix: str):
    """A local path for ``url``: itself when local, else a temporary file whose content is appended to
    ``url`` at the end (a stage log in an object-store run folder)."""
    if storage.is_local(url):
        path = storage.url_to_fs(url)[1]
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        yield path
        return
    import tempfile

    fd, path = tempfile.mkstemp(suffix=suffix, prefix="frugalcv-")
    os.close(fd)
    try:
        yield path
    finally:
        with open(path, "rb") as f:
            data = f.read()
        try:
            old = storage.read_bytes(url) if storage.exists(url) else b""
            storage.write_bytes_atomic(url, old + data)
        finally:
            os.remove(path)


class _Sequential:
    """``run_array`` as one ``run`` after another (inline, local)."""

    def run_array(self, specs: list[dict[str, Any]], cfg: PipelineConfig,
                  on_job: Callable[[int, str], None] | None = None) -> list[dict | FrugalError]:
        out: list[dict | FrugalError] = []
        for i, spec in enumerate(specs):
            try:
                out.append(self.run(spec, cfg, on_job=None if on_job is None else (lambda j, i=i: on_job(i, j))))
            except FrugalError as e:
                out.append(e)
        return out


class InlineExecutor(_Sequential):
    """Run the stage in this process (world size 1); output is also written to the stage log."""

    kind = "inline"

    def run(self, spec: dict[str, Any], cfg: PipelineConfig, on_job: Callable[[str], None] | None = None) -> dict:
        from frugalcv.workflows.pipeline.entry import run_spec

        with _local_file(spec["log_path"], ".log") as log_path, open(log_path, "a", buffering=1) as log, \
                redirect_stdout(_Tee(sys.stdout, log)):
            try:
                return run_spec(spec, printer=print)
            except FrugalError:
                raise
            except Exception as e:
                log.write(storage.redact(traceback.format_exc()))
                log.flush()
                raise StageFailed(f"{type(e).__name__}: {e}", _read_tail(log_path, 40)) from e


def _which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_tail(path: str, lines: int = 40) -> str:
    try:
        with open(path, errors="replace") as f:
            return tail(f.read(), lines)
    except OSError:
        return ""


class LocalExecutor(_Sequential):
    """Child processes on this machine, one per rank (``nodes × tasks_per_node`` of the stage)."""

    kind = "local"

    def __init__(self, timeout_s: float | None = None):
        self.timeout_s = timeout_s

    def run(self, spec: dict[str, Any], cfg: PipelineConfig, on_job: Callable[[str], None] | None = None) -> dict:
        r = cfg.stage_resources(spec["stage"])
        world = r.nodes * r.tasks_per_node
        spec_url = spec.get("spec_path") or storage.join(spec["output_dir"], "spec.json")
        with contextlib.ExitStack() as files:
            spec_path = files.enter_context(_local_file(spec_url, ".json"))
            with open(spec_path, "w") as f:
                json.dump(spec, f, indent=1, sort_keys=True)
            storage.remove(spec["result_path"])
            log_urls = [spec["log_path"] if rank == 0 else spec["log_path"].replace(".log", f".rank{rank}.log")
                        for rank in range(world)]
            logs = [files.enter_context(_local_file(url, ".log")) for url in log_urls]
            return self._run_ranks(spec, world, spec_path, logs, on_job)

    def _run_ranks(self, spec: dict[str, Any], world: int, spec_path: str, logs: list[str],
                   on_job: Callable[[str], None] | None) -> dict:
        port = _free_port()
        procs = []
        for rank in range(world):
            env = dict(os.environ)
            if world > 1:
                env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=str(port))
            with open(logs[rank], "ab") as log:
                procs.append(subprocess.Popen([sys.executable, "-m", "frugalcv.workflows.pipeline.entry", spec_path],
                                              stdout=log, stderr=subprocess.STDOUT, env=env))
            if on_job is not None:
                on_job(f"pid:{procs[-1].pid}")
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        codes = [None] * world
        while any(c is None for c in codes):
            codes = [p.poll() for p in procs]
            if any(c not in (None, 0, 3) for c in codes):  # one rank died: the others would hang
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                for p in procs:
                    p.wait(30)
                codes = [p.returncode for p in procs]
                break
            if deadline is not None and time.monotonic() > deadline:
                for p in procs:
                    p.kill()
                raise StageFailed(f"stage {spec['stage']} ran past {self.timeout_s}s", _read_tail(logs[0]))
            time.sleep(0.2)
        if any(c not in (0, 3) for c in codes) or not storage.exists(spec["result_path"]):
            bad = next((i for i, c in enumerate(codes) if c not in (0, 3)), 0)
            text = _read_tail(logs[bad])
            last = next((line for line in reversed(text.splitlines()) if line.strip()), "")
            log_url = spec["log_path"] if bad == 0 else spec["log_path"].replace(".log", f".rank{bad}.log")
            raise StageFailed(f"{last} (rank {bad} exited with code {codes[bad]}; log {storage.redact(log_url)})", text)
        return json.loads(storage.read_bytes(spec["result_path"]))


def stage_job(resume_from: str | None, spec: dict[str, Any]) -> dict[str, Any]:
    """The body of a stage's Slurm job (every task runs it); the stage resumes by itself from the
    newest checkpoint in ``spec["checkpoint_dir"]``, which is also ``resume_from``."""
    from frugalcv.workflows.pipeline.entry import run_spec

    return run_spec(spec, printer=lambda text: print(text, flush=True), raise_preempted=True)


class SlurmExecutor:
    """sbatch through submitit; waits with ``wait_for_results`` (works without accounting)."""

    kind = "slurm"

    def __init__(self, timeout_s: float | None = None, poll_s: float = 1.0):
        self.timeout_s, self.poll_s = timeout_s, poll_s

    def executor(self, cfg: PipelineConfig, stage: str, run_folder: str) -> submitit.SlurmExecutor:
        from frugalcv.workflows.pipeline.plan import job_folder, sbatch_parameters

        r = cfg.stage_resources(stage)
        ex = submitit.SlurmExecutor(folder=job_folder(run_folder), max_num_timeout=r.max_requeues,
                                    python=sys.executable)
        ex.update_parameters(**sbatch_parameters(cfg, stage))
        return ex

    def run(self, spec: dict[str, Any], cfg: PipelineConfig, on_job: Callable[[str], None] | None = None) -> dict:
        from frugalcv.slurm.preemption import StageJob

        with self._submitting(spec, cfg):
            job = self.executor(cfg, spec["stage"], spec["run_folder"]).submit(
                StageJob(stage_job, spec, checkpoint_dir=spec["checkpoint_dir"]))
        if on_job is not None:
            on_job(str(job.job_id))
        print(f"stage {spec['stage']}: Slurm job {job.job_id} ({job.paths.folder})", flush=True)
        return self._wait(job)

    def run_array(self, specs: list[dict[str, Any]], cfg: PipelineConfig,
                  on_job: Callable[[int, str], None] | None = None) -> list[dict | StageFailed]:
        """All ``specs`` as one job array, with the resources of ``cfg``'s stage of the first spec."""
        from frugalcv.slurm.preemption import StageJob

        if len(specs) == 1:  # submitit submits a one-element array as a plain job anyway
            try:
                return [self.run(specs[0], cfg, on_job=None if on_job is None else (lambda j: on_job(0, j)))]
            except StageFailed as e:
                return [e]
        first = specs[0]
        with self._submitting(first, cfg):
            jobs = self.executor(cfg, first["stage"], first["run_folder"]).submit_array(
                [StageJob(stage_job, spec, checkpoint_dir=spec["checkpoint_dir"]) for spec in specs])
        for i, job in enumerate(jobs):
            if on_job is not None:
                on_job(i, str(job.job_id))
        array_id = str(jobs[0].job_id).split("_")[0]
        print(f"stage {first['stage']}: Slurm job array {array_id} ({len(jobs)} tasks, {jobs[0].paths.folder})",
              flush=True)
        out: list[dict | StageFailed] = []
        for job in jobs:
            try:
                out.append(self._wait(job))
            except StageFailed as e:
                out.append(e)
        return out

    @contextlib.contextmanager
    def _submitting(self, spec: dict[str, Any], cfg: PipelineConfig | None = None):
        try:
            yield
        except (submitit.core.utils.FailedSubmissionError, submitit.core.utils.FailedJobError, OSError) as e:
            hint = "" if os.environ.get("SLURM_CONF") or _which("sbatch") is None else \
                " (no SLURM_CONF set: for the dev cluster run `frugalcv cluster up` and export what it prints)"
            if "partition" in str(e).lower() and cfg is not None:
                partition = cfg.stage_resources(spec["stage"]).partition
                hint += (f" (partition {partition!r} from executor.slurm.partition or stages.{spec['stage']}."
                         "resources.partition; `sinfo` lists this cluster's partitions)")
            raise StageFailed(f"sbatch failed for stage {spec['stage']}: {str(e).strip().splitlines()[-1]}{hint}",
                              str(e)) from None

    def _wait(self, job) -> dict:
        from frugalcv.slurm.jobs import SlurmJobError, wait_for_results

        try:
            results = wait_for_results(job, timeout_s=self.timeout_s, poll_s=self.poll_s)
        except SlurmJobError as e:
            raise StageFailed(str(e).splitlines()[0], _read_tail(str(job.paths.stderr))) from None
        except Exception as e:  # the job raised: submitit re-raises with the remote traceback
            raise StageFailed(f"Slurm job {job.job_id}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                              tail(str(e), 30) or _read_tail(str(job.paths.stderr))) from None
        return results[0] if isinstance(results, list) else results


def make_stage_executor(kind: str | None, cfg: PipelineConfig):
    kind = kind or cfg.executor.kind
    if kind == "inline":
        return InlineExecutor()
    if kind == "local":
        return LocalExecutor()
    if kind == "slurm":
        if _which("sbatch") is None:
            raise ConfigError("the slurm executor needs Slurm's `sbatch` on PATH and it is not there: run from a "
                              "cluster's login node (or load its Slurm module), start one on this host with "
                              "`frugalcv cluster up`, or use --executor inline or local")
        return SlurmExecutor()
    raise ConfigError(f"executor {kind!r}: use one of {', '.join(KINDS)}")
