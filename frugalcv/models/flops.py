"""FLOPs as BlockDrop reports them: conv and linear layers only, 2 FLOPs per multiply-accumulate
(conv ``2*Cin/groups*Cout*kh*kw*Hout*Wout``, linear ``2*in*out``), one image, counted with
forward hooks on the real modules during a 1-image pass (BN, ReLU, pooling, additions and the
parameter-free CIFAR shortcut count 0).

Under a policy, ``flops(keep) = base + sum_k keep_k * per_block[k] (+ policy network)``, where
``base`` is the stem, the classifier and the shortcuts of downsampling blocks (they run even when
the block is dropped) and ``per_block[k]`` is block k's residual branch.

Sanity check against the dissertation (2 x MAC, from ``flops_report``):

* ``cifar_resnet110``: 505,775,360 = 5.06e8, as reported (base 886,016: stem + classifier;
  52 blocks of 9,437,184 and the two downsampling blocks of 7,077,888). Policy ResNet-8 on
  32x32: 24,484,608 (2.4e7). At the published 16.9 blocks this gives about
  0.9e6 + 16.9 * 9.4e6 + 2.4e7 = 1.85e8 with the policy net, vs the published 1.81e8
  +- 3.4e7: 2% apart, which the rounded block count and averaging over per-image policies
  (whose kept blocks differ) can account for; we cannot rerun their exact policies.
* ``imagenet_resnet101``: 15,602,810,880 = 1.56e10, as reported (torchvision: 7.8 GMACs).
  Base 959,447,040 = stem, classifier and the four 1x1 projection shortcuts, which run even
  for dropped downsampling blocks. Policy ResNet-10 on the image pooled to 112x112:
  471,917,568 (4.7e8). At the published 24.8 blocks (mostly 4.4e8 each) the total is about
  1.0e9 + 24.8 * 4.4e8 + 4.7e8 = 1.24e10, consistent with the published 1.25e10.
"""

from __future__ import annotations

import torch
from torch import nn

from frugalcv.models.blockdrop.policy import PolicyNet
from frugalcv.models.blockdrop.resnet import BlockDropResNet, ResNetTrunk
from frugalcv.models.registry import build_model, list_models


def layer_flops(module: nn.Module, output: torch.Tensor) -> int:
    """FLOPs of one conv or linear call per image, from its output shape (batch dim first)."""
    per_image_outputs = output[0].numel()
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = 1
        for s in module.kernel_size:
            kernel *= s
        return 2 * (module.in_channels // module.groups) * kernel * per_image_outputs
    if isinstance(module, nn.Linear):
        return 2 * module.in_features * per_image_outputs
    return 0


@torch.no_grad()
def module_flops(model: nn.Module, input_size: tuple[int, ...] | None = None) -> dict[nn.Module, int]:
    """FLOPs of every conv/linear module in a 1-image forward pass (model state untouched)."""
    size = tuple(input_size or model.input_size)
    param = next(model.parameters())
    counts: dict[nn.Module, int] = {}

    def hook(module, _inputs, output):
        counts[module] = counts.get(module, 0) + layer_flops(module, output)

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
    ]
    was_training = model.training
    model.eval()  # a 1-image pass must not touch BN running statistics
    try:
        model(torch.zeros((1, *size), dtype=param.dtype, device=param.device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return counts


def count_flops(model: nn.Module, input_size: tuple[int, ...] | None = None) -> int:
    """Total FLOPs of one image through ``model`` (all blocks kept)."""
    return sum(module_flops(model, input_size).values())


def block_flops(model: ResNetTrunk, input_size: tuple[int, ...] | None = None) -> tuple[int, list[int]]:
    """``(base_flops, per_block)``: cost that always runs and each block's residual cost."""
    counts = module_flops(model, input_size)
    owner = {m: k for k, block in enumerate(model.blocks) for m in block.residual_modules()}
    base = 0
    per_block = [0] * len(model.blocks)
    for m, f in counts.items():
        if m in owner:
            per_block[owner[m]] += f
        else:
            base += f
    return base, per_block


def policy_flops(
    keep: torch.Tensor, base_flops: int, per_block: list[int], policy_net_flops: int = 0
) -> torch.Tensor:
    """Per-image FLOPs [B] (float64) under ``keep`` [B, K]: base + keep @ per_block + policy net."""
    costs = torch.tensor(per_block, dtype=torch.float64, device=keep.device)
    return keep.detach().to(torch.float64) @ costs + (base_flops + policy_net_flops)


def flops_report(name: str, input_size: tuple[int, ...] | None = None, **kwargs) -> dict:
    """JSON-ready FLOPs summary of a registered model (kwargs go to its constructor).

    Keys: name, description, input_size, params, flops (all blocks), blocks (K), base_flops,
    per_block; for a block-drop ResNet also ``policy`` (name, flops, input_size of the matching
    policy network built for K outputs) and ``flops_with_policy``; for a policy net ``outputs``.
    """
    model = build_model(name, **kwargs)
    size = tuple(input_size or model.input_size)
    base, per_block = block_flops(model, size)
    report = {
        "name": name,
        "description": list_models()[name],
        "input_size": list(size),
        "params": sum(p.numel() for p in model.parameters()),
        "flops": base + sum(per_block),
        "blocks": len(per_block),
        "base_flops": base,
        "per_block": per_block,
    }
    if isinstance(model, BlockDropResNet):
        policy = build_model(model.policy_name, num_blocks=model.num_blocks, debug=model.debug)
        policy_size = size if input_size else policy.input_size
        report["policy"] = {
            "name": model.policy_name,
            "flops": count_flops(policy, policy_size),
            "input_size": list(policy_size),
        }
        report["flops_with_policy"] = report["flops"] + report["policy"]["flops"]
    elif isinstance(model, PolicyNet):
        report["outputs"] = model.num_blocks
    return report
