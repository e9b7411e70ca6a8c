"""Run one stage from a stage spec: ``python -m frugalcv.workflows.pipeline.entry SPEC.json``.

The one code path of every executor: inline calls :func:`run_spec` in the driver process, local
runs this module in child processes (one per rank, ``RANK``/``WORLD_SIZE`` set), Slurm calls
:func:`run_spec` inside the submitit job (ranks from the Slurm environment). A spec is plain JSON::

    {"pipeline", "run_id", "stage", "uses", "origin": {"module", "file"}, "params", "inputs",
     "output_dir", "checkpoint_dir", "checkpoint_every", "engine", "deepspeed", "result_path",
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

from frugalcv.sharding import storage
from frugalcv.workflows.pipeline.stages import (
    ArrayTask,
    NullTracker,
    StageContext,
    StageInterrupted,
    get_stage,
    import_origin,
)

log = logging.getLogger(__name__)

STOP_FILE = "STOP"


def stop_requested(output_dir: str) -> bool:
    """Someone created ``<output_dir>/STOP`` (signals are the PreemptionHook's)."""
    return os.path.exists(os.path.join(output_dir, STOP_FILE))


def _world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun/local-executor variables or a Slurm step."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if "SLURM_STEP_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"]), int(os.environ.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def _tracker(spec: dict[str, Any], rank: int):
    t = spec.get("tracking")
    if rank != 0 or not t or not t.get("stage_run_id"):
        return NullTracker()
    from frugalcv.workflows.pipeline.tracking import Tracker

    tracker = Tracker(t["uri"], root=t.get("root"), run_id=spec["run_id"], experiment=t.get("experiment"),
                      system_metrics=False)
    tracker.stage_run_id = t["stage_run_id"]
    return tracker


def run_spec(spec: dict[str, Any], printer=print, raise_preempted: bool = False) -> dict[str, Any]:
    """Run the stage of ``spec`` on this rank; rank 0's result dict (``{}`` on other ranks).

    A signal (SIGTERM, USR2) or a STOP file makes the stage checkpoint at a step boundary and
    return ``{"state": "interrupted"}``; with ``raise_preempted`` (under submitit) a signal's
    ``Preempted`` propagates instead, so ``StageJob`` can hand it to submitit for the requeue.
    """
    from frugalcv.slurm.preemption import Preempted

    import_origin(spec.get("origin") or {})
    fn = get_stage(spec["uses"])
    rank, world, local_rank = _world()
    if world > 1:
        from frugalcv.slurm.distributed import init_distributed

        info = init_distributed()
        rank, world, local_rank = info.rank, info.world_size, info.local_rank
    os.makedirs(spec["output_dir"], exist_ok=True)
    ctx = StageContext(
        pipeline=spec["pipeline"], run_id=spec["run_id"], stage=spec["stage"], params=dict(spec["params"]),
        inputs=dict(spec["inputs"]), output_dir=spec["output_dir"], checkpoint_dir=spec["checkpoint_dir"],
        rank=rank, world_size=world, local_rank=local_rank, engine=spec.get("engine", "ddp"),
        deepspeed=spec.get("deepspeed"), tracker=_tracker(spec, rank),
        checkpoint_every=int(spec.get("checkpoint_every") or 0),
        should_stop=lambda: stop_requested(spec["output_dir"]), printer=printer,
        array=ArrayTask(**spec["array"]) if spec.get("array") else None,
    )
    try:
        result = fn(ctx)
        out: dict[str, Any] = {"state": "finished", **result.to_dict()}
    except StageInterrupted as e:
        out = {"state": "interrupted", "message": str(e)}
    except Preempted as e:
        if raise_preempted:
            raise
        out = {"state": "interrupted", "message": str(e)}
    finally:
        if world > 1:
            from frugalcv.slurm.distributed import cleanup

            cleanup()
    if rank != 0:
        return {}
    if spec.get("result_path"):
        storage.write_bytes_atomic(spec["result_path"], json.dumps(out, indent=1, sort_keys=True).encode())
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m frugalcv.workflows.pipeline.entry SPEC.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    with open(argv[0]) as f:
        spec = json.load(f)
    out = run_spec(spec, printer=lambda text: print(text, flush=True))
    return 3 if out.get("state") == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
