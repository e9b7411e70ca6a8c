"""Where a rank computes: its device, its CPU share, how batches reach the device, precision.

Device placement happens here and nowhere else: ``rank_device`` picks the local rank's GPU (or
the CPU), ``place`` moves a module once, ``to_device`` moves every batch (pinned memory and
``non_blocking`` copies on CUDA), ``autocast`` wraps the forward pass for bf16/fp16.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from frugalcv.errors import ConfigError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def rank_device(local_rank: int = 0) -> torch.device:
    """``cuda:<local rank>`` when this node has GPUs (made the current device), else the CPU."""
    if torch.cuda.is_available():
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def rank_cpus(local_world_size: int = 1) -> int:
    """CPUs this rank may use: ``SLURM_CPUS_PER_TASK`` under Slurm (as torchrun does), else its share
    of the CPUs this process may run on."""
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return max(1, int(os.environ["SLURM_CPUS_PER_TASK"]))
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count() or 1
    return max(1, available // max(1, local_world_size))


def configure_threads(cpus: int) -> None:
    """Size torch's intra-op pool to the rank's CPUs, so several ranks on one node do not oversubscribe it."""
    torch.set_num_threads(max(1, cpus))


def default_workers(cpus: int) -> int:
    """Loader workers for a rank with ``cpus`` CPUs: one CPU stays with the training process."""
    return max(0, min(8, cpus - 1))


def place(module: nn.Module, device: torch.device | str, *, channels_last: bool = False) -> nn.Module:
    """Move ``module`` (parameters and buffers) to ``device``, in NHWC when ``channels_last``."""
    module = module.to(device)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module


def to_device(batch: Any, device: torch.device | str, *, channels_last: bool = False) -> Any:
    """``batch`` (tensors in tuples, lists, dicts) on ``device``; 4-D float tensors NHWC when asked."""
    device = torch.device(device)
    if isinstance(batch, torch.Tensor):
        if channels_last and batch.dim() == 4 and batch.is_floating_point():
            return batch.to(device, non_blocking=True, memory_format=torch.channels_last)
        if batch.device == device:
            return batch
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, channels_last=channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [to_device(v, device, channels_last=channels_last) for v in batch]
        return type(batch)(moved) if isinstance(batch, list) else tuple(moved)
    return batch


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")


def autocast(device: torch.device | str, precision: str):
    """The forward pass's autocast context (a no-op for fp32)."""
    check_precision(precision)
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def grad_scaler(device: torch.device | str, precision: str):
    """A gradient scaler for fp16 (bf16 and fp32 need none)."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def collective_device() -> torch.device:
    """The device a collective's tensors must live on: the current GPU under NCCL, else the CPU."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
