"""BlockDrop policy networks: small ResNets that output one keep probability per block.

The CIFAR policy (ResNet-8) sees the full 32x32 image; the ImageNet policy (ResNet-10) sees the
image average-pooled to 112x112, and its trunk uses torchvision ResNet-18 parameter names, so
``policy.load_state_dict(resnet18_state, strict=False)`` initialises it from a ResNet-18 (the
missing keys are the later blocks of each ResNet-18 segment; ``logit`` stays random).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from frugalcv.models.blockdrop.resnet import ResNetTrunk
from frugalcv.models.blocks import BasicBlock
from frugalcv.models.registry import register_model


class PolicyNet(ResNetTrunk):
    """ResNet trunk + ``logit`` (Linear to K); ``forward`` returns sigmoid probabilities [B, K]."""

    def __init__(self, *args, num_blocks: int, pool_input_to: int | None, debug: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.logit = nn.Linear(self.feature_dim, num_blocks)
        self.num_blocks = num_blocks  # K, the number of blocks of the ResNet it steers
        self.pool_input_to = pool_input_to
        self.debug = debug

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores [B, K]."""
        if self.pool_input_to is not None and tuple(x.shape[-2:]) != (self.pool_input_to,) * 2:
            x = F.adaptive_avg_pool2d(x, self.pool_input_to)  # 224 -> 112 is a 2x2 average pool
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.logit(self.pool(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Keep probabilities [B, K] in (0, 1)."""
        return torch.sigmoid(self.logits(x))


@register_model
def policy_resnet8_cifar(num_blocks: int | None = None, debug: bool = False) -> PolicyNet:
    """CIFAR policy ResNet-8: 3 basic blocks on 32x32, K sigmoid outputs (default 54; debug 9)."""
    widths = [4, 8, 16] if debug else [16, 32, 64]
    return PolicyNet(
        BasicBlock,
        [1, 1, 1],
        widths,
        stem_width=widths[0],
        imagenet_stem=False,
        shortcut="zero_pad",
        input_size=(3, 32, 32),
        num_blocks=num_blocks or (9 if debug else 54),
        pool_input_to=None,
        debug=debug,
    )


@register_model
def policy_resnet10_imagenet(num_blocks: int | None = None, debug: bool = False) -> PolicyNet:
    """ImageNet policy ResNet-10: 4 basic blocks on the image pooled to 112x112, K outputs (default 33; debug 5)."""
    widths = [8, 16, 32, 64] if debug else [64, 128, 256, 512]
    return PolicyNet(
        BasicBlock,
        [1, 1, 1, 1],
        widths,
        stem_width=widths[0],
        imagenet_stem=True,
        shortcut="conv",
        input_size=(3, 64, 64) if debug else (3, 224, 224),
        num_blocks=num_blocks or (5 if debug else 33),
        pool_input_to=32 if debug else 112,
        debug=debug,
    )
