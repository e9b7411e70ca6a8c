"""Run one stage from a stage spec: ``python -m frugalcv.workflows.pipeline.entry SPEC.json``.

The one code path of every executor: inline calls :func:`run_spec` in the driver process, local
runs this module in child processes (one per rank, ``RANK``/``WORLD_SIZE`` set), Slurm calls
:func:`run_spec` inside the submitit job (ranks from the Slurm environment). A spec is plain JSON::

    {"pipeline", "run_id", "stage", "uses", "origin": {"module", "file"}, "params", "inputs",
     "output_dir", "checkpoint_dir", "checkpoint_every", "checkpoint_every_s", "precision",
     "channels_last", "num_workers", "smoke_steps", "engine", "deepspeed", "result_path",
     "tracking": {"uri", "experiment", "root", "stage_run_id"} | null,
     "array": {"index": int | null, "count": int} (only for a task or the final step of an array stage)}

Rank 0 returns (and writes to ``result_path``) ``{"state": "finished", "metrics", "outputs"}`` or
``{"state": "interrupted", "message"}`` when the stage stopped early after a checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

from frugalcv.errors import FrugalError
from frugalcv.sharding import storage
from frugalcv.workflows.pipeline.stages import (
    ArrayTask,
    NullTracker,
    StageContext,
    StageInterrupted,
    get_stage,
    import_origin,
    stage_info,
)

log = logging.getLogger(__name__)

STOP_FILE = "STOP"


def stop_requested(output_dir: str) -> bool:
    """Someone created ``<output_dir>/STOP`` (signals are the ControlHook's); local run folders only."""
    return "://" not in output_dir and os.path.exists(os.path.join(output_dir, STOP_FILE))


def _world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun/local-executor variables or a Slurm step."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if "SLURM_STEP_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"]), int(os.environ.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def _local_world(world: int) -> int:
    """How many ranks share this node: torchrun's LOCAL_WORLD_SIZE, Slurm's tasks on this node, or
    (local executor) every rank."""
    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(name, "").split("(")[0]
        if value.isdigit():
            return int(value)
    return world if "SLURM_JOB_ID" not in os.environ else 1


def _tracker(spec: dict[str, Any], rank: int):
    t = spec.get("tracking")
    if rank != 0 or not t or not t.get("stage_run_id"):
        return NullTracker()
    from frugalcv.workflows.pipeline.tracking import Tracker

    tracker = Tracker(t["uri"], root=t.get("root"), run_id=spec["run_id"], experiment=t.get("experiment"),
                      system_metrics=False)
    tracker.stage_run_id = t["stage_run_id"]
    return tracker


def _log_stage_config(tracker, spec: dict[str, Any], params: Any) -> None:
    """The stage's resolved params (defaults filled in), inputs and run settings as ``config/stage.yaml``."""
    from frugalcv.workflows.pipeline.schema import to_plain

    plain = to_plain(params) if not isinstance(params, dict) else dict(params)
    keys = ("uses", "engine", "precision", "channels_last", "num_workers", "checkpoint_every", "checkpoint_every_s",
            "smoke_steps")
    tracker.log_config({"stage": spec["stage"], **{k: spec.get(k) for k in keys}, "params": plain,
                        "inputs": dict(spec["inputs"])}, "config/stage.yaml")


def _log_artifacts(tracker, artifacts: dict[str, list[str]]) -> None:
    """A stage's figures and reports into its tracking run; a Markdown report also as HTML with its
    images embedded (the tracking UI shows no images in Markdown)."""
    import tempfile

    from frugalcv.workflows.pipeline.report_html import write_report_html

    if not artifacts or isinstance(tracker, NullTracker):
        return
    with tempfile.TemporaryDirectory() as tmp:
        for folder, files in artifacts.items():
            local_dir = os.path.join(tmp, folder.strip("/") or "_")
            for url in files:
                path = url if storage.is_local(url) else _download(url, local_dir)
                path = path.removeprefix("file://")
                if not os.path.exists(path):
                    log.warning("artifact %s does not exist; not logged", storage.redact(url))
                    continue
                tracker.log_artifact(path, folder or None)
            for url in files:
                if url.endswith(".md"):
                    path = url.removeprefix("file://") if storage.is_local(url) else os.path.join(
                        local_dir, os.path.basename(url))
                    if os.path.exists(path):
                        tracker.log_artifact(write_report_html(path), folder or None)


def _download(url: str, local_dir: str) -> str:
    os.makedirs(local_dir, exist_ok=True)
    dst = os.path.join(local_dir, os.path.basename(url.rstrip("/")))
    try:
        with open(dst, "wb") as f:
            f.write(storage.read_bytes(url))
    except FileNotFoundError:
        return dst + ".missing"
    return dst


def run_spec(spec: dict[str, Any], printer=print, raise_preempted: bool = False) -> dict[str, Any]:
    """Run the stage of ``spec`` on this rank; rank 0's result dict (``{}`` on other ranks).

    A signal (SIGTERM, USR2) or a STOP file makes the stage checkpoint at a step boundary and
    return ``{"state": "interrupted"}``; with ``raise_preempted`` (under submitit) a signal's
    ``Preempted`` propagates instead, so ``StageJob`` can hand it to submitit for the requeue.
    """
    from frugalcv.slurm.preemption import Preempted
    from frugalcv.workflows.engine.device import configure_threads, default_workers, rank_cpus, rank_device

    import_origin(spec.get("origin") or {})
    fn = get_stage(spec["uses"])
    params = stage_info(spec["uses"]).build_params(dict(spec["params"]), f"stages.{spec['stage']}.params")
    rank, world, local_rank = _world()
    cpus = rank_cpus(_local_world(world))
    configure_threads(cpus)
    if world > 1:
        from frugalcv.slurm.distributed import init_distributed

        info = init_distributed()
        rank, world, local_rank = info.rank, info.world_size, info.local_rank
    if storage.is_local(spec["output_dir"]):
        os.makedirs(storage.url_to_fs(spec["output_dir"])[1], exist_ok=True)
    workers = spec.get("num_workers")
    ctx = StageContext(
        pipeline=spec["pipeline"], run_id=spec["run_id"], stage=spec["stage"], params=params,
        inputs=dict(spec["inputs"]), output_dir=spec["output_dir"], checkpoint_dir=spec["checkpoint_dir"],
        rank=rank, world_size=world, local_rank=local_rank, device=rank_device(local_rank),
        engine=spec.get("engine", "ddp"), deepspeed=spec.get("deepspeed"), tracker=_tracker(spec, rank),
        precision=spec.get("precision", "fp32"), channels_last=bool(spec.get("channels_last", False)),
        cpus=cpus, num_workers=default_workers(cpus) if workers is None else int(workers),
        checkpoint_every=int(spec.get("checkpoint_every") or 0),
        checkpoint_every_s=float(spec.get("checkpoint_every_s") or 0.0),
        smoke_steps=spec.get("smoke_steps") or None,
        should_stop=lambda: stop_requested(spec["output_dir"]), printer=printer,
        array=ArrayTask(**spec["array"]) if spec.get("array") else None,
    )
    if rank == 0:
        _log_stage_config(ctx.tracker, spec, params)
    try:
        result = fn(ctx)
        out: dict[str, Any] = {"state": "finished", **result.to_dict()}
        if rank == 0:
            _log_artifacts(ctx.tracker, result.artifacts)
    except StageInterrupted as e:
        out = {"state": "interrupted", "message": str(e)}
    except Preempted as e:
        if raise_preempted:
            raise
        out = {"state": "interrupted", "message": str(e)}
    except Exception as e:
        if _out_of_memory(e):
            raise out_of_memory_error(spec, ctx.device, e) from e
        raise
    finally:
        if world > 1:
            from frugalcv.slurm.distributed import cleanup

            cleanup()
    if rank != 0:
        return {}
    if spec.get("result_path"):
        storage.write_bytes_atomic(spec["result_path"], json.dumps(out, indent=1, sort_keys=True).encode())
    return out


def _out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    # the CPU allocator raises a plain RuntimeError
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def out_of_memory_error(spec: dict[str, Any], device, exc: BaseException) -> FrugalError:
    """What to do when a stage ran out of memory, naming the stage and the memory."""
    where = f"GPU memory ({device})" if str(device).startswith("cuda") else "host memory"
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return FrugalError(
        f"stage {spec['stage']} ran out of {where}: {detail}. Lower stages.{spec['stage']}.params.batch_size "
        f"(or eval_batch_size) or stages.{spec['stage']}.num_workers, or try precision: bf16; under Slurm, raise "
        f"stages.{spec['stage']}.resources.mem_gb. The run can continue from its last checkpoint: frugalcv resume "
        f"{spec['run_id']}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m frugalcv.workflows.pipeline.entry SPEC.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    from frugalcv.workflows.pipeline.redact import RedactingFilter

    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    with open(argv[0]) as f:
        spec = json.load(f)
    try:
        out = run_spec(spec, printer=lambda text: print(text, flush=True))
    except FrugalError as e:  # a message for the user: the last line of the rank's log
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    return 3 if out.get("state") == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
