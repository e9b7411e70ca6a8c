"""Inference-only rewrite: fold each eval-mode BatchNorm into the convolution before it.

Conv and linear FLOPs are unchanged (BN counts 0), so FLOPs reports stay the same; the fused
model skips one memory pass per BN. The result must not be trained: its BNs are gone.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from frugalcv.models.blockdrop.resnet import ResNetTrunk

# (conv, bn) attribute pairs of the stem and of BasicBlock / Bottleneck
_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def fuse_batchnorm(model: ResNetTrunk) -> ResNetTrunk:
    """An eval-mode copy of ``model`` with every conv+BN pair folded into one conv."""
    fused = copy.deepcopy(model).eval()
    for owner in [fused, *fused.blocks]:
        for conv_name, bn_name in _PAIRS:
            conv, bn = getattr(owner, conv_name, None), getattr(owner, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(owner, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(owner, bn_name, nn.Identity())
        shortcut = getattr(owner, "downsample", None)
        if isinstance(shortcut, nn.Sequential) and isinstance(shortcut[-1], nn.BatchNorm2d):
            shortcut[0] = fuse_conv_bn_eval(shortcut[0], shortcut[1])
            shortcut[1] = nn.Identity()
    return fused
