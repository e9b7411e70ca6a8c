"""Fixed gate patterns for LiteEval's baselines, and the online (early) prediction.

The baselines are the same network with the gate overridden (``forward(..., decisions=...)``):
always fine (every valid step), SEQ-K (the first K steps) and UNIFORM-K (K uniformly spaced steps).
"""

from __future__ import annotations

import torch
from torch import Tensor

from frugalcv.models.liteeval.net import Output, valid_mask


def _check_k(k: int) -> None:
    if k < 0:
        raise ValueError(f"k is a number of fine reads and must be >= 0, got {k}")


def always_fine_decisions(lengths: Tensor, steps: int) -> Tensor:
    """[B, T] float: 1 on every valid step (``B_t = 1``), 0 on padding."""
    return valid_mask(lengths, steps).float()


def seq_k_decisions(lengths: Tensor, steps: int, k: int) -> Tensor:
    """[B, T] float: SEQ-K, the first ``min(k, length)`` steps of each video read fine."""
    _check_k(k)
    return valid_mask(torch.clamp(lengths, max=k), steps).float()


def uniform_k_decisions(lengths: Tensor, steps: int, k: int) -> Tensor:
    """[B, T] float: UNIFORM-K, reads at the centres of ``min(k, length)`` equal segments of each video,
    step ``⌊(2i + 1)·L / 2k⌋`` for i = 0..k−1 (L = 10, k = 3: steps 1, 5, 8; k ≥ L: every step)."""
    _check_k(k)
    reads = torch.clamp(lengths, max=k)[:, None]  # [B, 1]
    i = torch.arange(k, device=lengths.device)[None, :]  # [1, k]
    at = ((2 * i + 1) * lengths[:, None]) // (2 * reads.clamp(min=1))
    used = (i < reads).float()
    out = torch.zeros(lengths.shape[0], steps, device=lengths.device)
    # the used positions are distinct (consecutive ones are L/k >= 1 apart); unused ones add 0
    return out.scatter_add_(1, at.clamp(max=steps - 1), used)


def online_step(out: Output, k: int) -> Tensor:
    """[B] long: the step of each video's k-th fine read, or its last valid step if it reads fewer."""
    if k < 1:
        raise ValueError(f"online prediction needs k >= 1 fine reads, got {k}")
    reached = torch.cumsum((out.decisions > 0.5).long(), dim=1) >= k  # decisions are 0 on padding
    first = reached.long().argmax(dim=1)  # first True (argmax returns the first maximum)
    return torch.where(reached.any(dim=1), first, out.lengths - 1)


def online_logits(out: Output, k: int) -> Tensor:
    """[B, C]: logits at the k-th fine read's step (the state right after it), or at the last valid step."""
    step = online_step(out, k)
    return out.logits[torch.arange(step.shape[0], device=step.device), step]
