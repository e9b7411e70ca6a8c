"""Heuristic keep masks of Table 2.1: run exactly ``k`` of the ``num_blocks`` blocks per image.

FIRSTK keeps the first k blocks, RANDOMK k blocks drawn per image, DISTRIBUTEK k blocks
spread evenly over the network (first and last included). k is usually the learned
policy's mean block count rounded up, so the comparison is at equal cost.
"""

from __future__ import annotations

import torch

from frugalcv.errors import ConfigError

BASELINES = ("firstk", "randomk", "distributek")


def _check(num_blocks: int, k: int) -> None:
    if not 0 <= k <= num_blocks:
        raise ConfigError(f"baseline k={k}: must be between 0 and num_blocks={num_blocks}")


def firstk_policy(batch_size: int, num_blocks: int, k: int) -> torch.Tensor:
    _check(num_blocks, k)
    policy = torch.zeros(batch_size, num_blocks)
    policy[:, :k] = 1.0
    return policy


def randomk_policy(batch_size: int, num_blocks: int, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    _check(num_blocks, k)
    order = torch.rand(batch_size, num_blocks, generator=generator).argsort(dim=1)
    policy = torch.zeros(batch_size, num_blocks)
    policy.scatter_(1, order[:, :k], 1.0)
    return policy


def distributek_policy(batch_size: int, num_blocks: int, k: int) -> torch.Tensor:
    _check(num_blocks, k)
    policy = torch.zeros(batch_size, num_blocks)
    if k == 1:
        policy[:, 0] = 1.0
    elif k > 1:
        # the spacing (K − 1)/(k − 1) >= 1, so the rounded positions are distinct
        index = torch.linspace(0, num_blocks - 1, k).round().long()
        policy[:, index] = 1.0
    return policy


def baseline_policy(name: str, batch_size: int, num_blocks: int, k: int,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """The [B, K] keep mask of baseline ``name`` (one of ``BASELINES``)."""
    if name == "firstk":
        return firstk_policy(batch_size, num_blocks, k)
    if name == "randomk":
        return randomk_policy(batch_size, num_blocks, k, generator)
    if name == "distributek":
        return distributek_policy(batch_size, num_blocks, k)
    raise ConfigError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
