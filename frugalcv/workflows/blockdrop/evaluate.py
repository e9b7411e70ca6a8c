"""Stage 4: evaluate the greedy policy (s > 0.5) against the full ResNet and the heuristics.

Metrics (names are part of the interface): ``accuracy``, ``blocks_mean``, ``blocks_std``,
``blocks_min``, ``flops_mean``, ``flops_std`` (policy network included), ``full_accuracy``,
``full_flops`` (all blocks, no policy), ``flops_speedup`` (full_flops / flops_mean),
``unique_policies``, and ``firstk_accuracy``, ``randomk_accuracy``, ``distributek_accuracy``
at K = ceil(blocks_mean) (plus ``baseline_k`` and each baseline's ``*_flops``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from frugalcv.models.flops import block_flops, count_flops, policy_flops
from frugalcv.workflows.blockdrop import policy as P
from frugalcv.workflows.blockdrop.baselines import BASELINES, baseline_policy


@dataclass
class PolicyEvaluation:
    """Metrics plus the per-image record the report's figures need."""

    metrics: dict[str, float]
    policies: torch.Tensor  # bool [N, K], greedy policy per test image
    labels: torch.Tensor  # long [N]
    correct: torch.Tensor  # bool [N], prediction under the policy was right
    extra: dict = field(default_factory=dict)


def _passes(data) -> tuple[Iterable, Iterable]:
    """Two passes over the same batches: callables and re-iterables are re-read, iterators cached."""
    if callable(data):
        return data(0), data(0)
    if iter(data) is data:  # a one-shot iterator
        cached = list(data)
        return cached, cached
    return data, data


def _run(resnet: nn.Module, images: torch.Tensor, keep: torch.Tensor, dynamic: bool) -> torch.Tensor:
    return resnet.forward_dynamic(images, keep) if dynamic else resnet(images, keep=keep)


@torch.no_grad()
def evaluate_policy(resnet: nn.Module, policy_net: nn.Module, data, *, baselines: bool = True,
                    baseline_k: int | None = None, seed: int = 0, dynamic: bool = True) -> PolicyEvaluation:
    """Greedy-policy metrics over one pass of ``data`` (batches of (images, labels)).

    ``dynamic`` runs ``forward_dynamic`` (skips the dropped blocks' work); the baselines need a
    second pass unless ``baseline_k`` is given, so ``data`` should be re-iterable or a callable.
    """
    resnet_mode, policy_mode = resnet.training, policy_net.training
    resnet.eval()
    policy_net.eval()
    first, second = _passes(data)
    device = next(resnet.parameters()).device  # batches come from the loader on the CPU
    num_blocks = int(resnet.num_blocks)
    costs = None  # FLOPs at the images' own size, known from the first batch

    policies, labels, correct, full_correct = [], [], [], []
    for images, y in first:
        images, y = images.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if costs is None:
            size = tuple(images.shape[1:])
            costs = (*block_flops(resnet, size), count_flops(policy_net, size))
        keep = P.greedy_policy(policy_net(images))
        policies.append(keep.bool().cpu())
        labels.append(y.cpu())
        correct.append((_run(resnet, images, keep, dynamic).argmax(1) == y).cpu())
        full_correct.append((resnet(images).argmax(1) == y).cpu())
    if costs is None:
        raise ValueError("evaluate_policy: the data yielded no batches")
    base, per_block, policy_cost = costs
    policies_NK, labels_N, correct_N = torch.cat(policies), torch.cat(labels), torch.cat(correct)
    blocks = policies_NK.sum(1).double()
    flops = policy_flops(policies_NK, base, per_block, policy_cost)
    full_flops = float(base + sum(per_block))
    metrics = {
        "accuracy": correct_N.float().mean().item(),
        "blocks_mean": blocks.mean().item(),
        "blocks_std": blocks.std(unbiased=False).item(),
        "blocks_min": blocks.min().item(),
        "flops_mean": flops.mean().item(),
        "flops_std": flops.std(unbiased=False).item(),
        "full_accuracy": torch.cat(full_correct).float().mean().item(),
        "full_flops": full_flops,
        "flops_speedup": full_flops / flops.mean().item(),
        "unique_policies": float(torch.unique(policies_NK, dim=0).shape[0]),
        "policy_flops": float(policy_cost),
        "num_blocks": float(num_blocks),
    }

    if baselines:
        k = baseline_k if baseline_k is not None else min(num_blocks, math.ceil(metrics["blocks_mean"] - 1e-9))
        generator = torch.Generator().manual_seed(seed)
        hits = dict.fromkeys(BASELINES, 0)
        cost = dict.fromkeys(BASELINES, 0.0)
        total = 0
        for images, y in second:
            images, y = images.to(device, non_blocking=True), y.to(device, non_blocking=True)
            for name in BASELINES:
                keep = baseline_policy(name, len(y), num_blocks, k, generator).to(images.device)
                hits[name] += int((_run(resnet, images, keep, dynamic).argmax(1) == y).sum())
                cost[name] += float(policy_flops(keep, base, per_block).sum())
            total += len(y)
        metrics["baseline_k"] = float(k)
        for name in BASELINES:
            metrics[f"{name}_accuracy"] = hits[name] / max(total, 1)
            metrics[f"{name}_flops"] = cost[name] / max(total, 1)

    resnet.train(resnet_mode)
    policy_net.train(policy_mode)
    return PolicyEvaluation(metrics, policies_NK, labels_N, correct_N)
