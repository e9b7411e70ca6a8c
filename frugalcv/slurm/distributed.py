"""torch.distributed set-up that works the same under Slurm (submitit or srun), torchrun and alone.

Slurm: submitit's ``TorchDistributedEnvironment`` exports MASTER_ADDR (the first node's name),
MASTER_PORT (derived from the job id, so every task agrees), RANK, WORLD_SIZE and LOCAL_RANK.
torchrun sets those itself. A plain single process gets a world of one.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import NamedTuple

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


class DistInfo(NamedTuple):
    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def _in_slurm_step() -> bool:
    # SLURM_STEP_ID is set inside an srun step only: a batch script without srun is one process
    # whatever SLURM_NTASKS says, and must not wait for the other ranks
    return "SLURM_JOB_ID" in os.environ and "SLURM_STEP_ID" in os.environ and "SLURM_PROCID" in os.environ


def _export_slurm_env() -> None:
    from submitit.helpers import TorchDistributedEnvironment

    # submitit picks its job environment from SUBMITIT_EXECUTOR; a plain srun launch lacks it
    os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")
    # CUDA_VISIBLE_DEVICES stays as Slurm set it; the device is chosen from LOCAL_RANK below
    env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    log.debug("slurm rank %d/%d, master %s:%d", env.rank, env.world_size, env.master_addr, env.master_port)


def _pick_device(local_rank: int, backend: str) -> torch.device:
    if backend == "nccl":
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def init_distributed(backend: str | None = None, timeout_s: float = 600) -> DistInfo:
    """Join (or create) the default process group; returns (rank, world_size, local_rank, device).

    ``backend`` defaults to NCCL when CUDA is available, else gloo. Calling it again returns the
    existing group's numbers.
    """
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), local_rank, _pick_device(local_rank, dist.get_backend())
        )
    if "RANK" not in os.environ and _in_slurm_step():
        _export_slurm_env()
    timeout = timedelta(seconds=timeout_s)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        device = _pick_device(local_rank, backend)
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(
            backend, init_method="env://", rank=rank, world_size=world_size, timeout=timeout, **kwargs
        )
    else:
        # alone: a world of one on an in-memory store, so collectives and DDP still work
        rank, world_size, local_rank = 0, 1, 0
        device = _pick_device(0, backend)
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    return DistInfo(rank, world_size, local_rank, device)


def cleanup() -> None:
    """Leave the process group (no-op when none was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def probe() -> dict:
    """Smoke test of a distributed launch: all-reduce rank+1 and say where this rank ran."""
    info = init_distributed()
    try:
        t = torch.tensor([info.rank + 1.0], device=info.device)
        dist.all_reduce(t)
        return {
            "rank": info.rank,
            "world_size": info.world_size,
            "local_rank": info.local_rank,
            "sum": float(t.item()),
            "node": os.environ.get("SLURMD_NODENAME", ""),
            "job_id": os.environ.get("SLURM_JOB_ID", ""),
            "device": str(info.device),
        }
    finally:
        cleanup()
