"""FCN-8s on ResNet-101, split for DCAN after one of its 5 stages.

Groups: 1 = conv1 (+ max pool), 2..5 = layer1..layer4 (ResNet's conv2_x..conv5_x). Scores from
layer4 (stride 32), layer3 (16) and layer2 (8) are fused FCN-8s style. ``backbone`` is torchvision's
resnet101 without ``fc``.
"""

from __future__ import annotations

from torch import Tensor

from frugalcv.models.dcan.backbones import ResNetBackbone
from frugalcv.models.dcan.base import SegNet
from frugalcv.models.dcan.heads import fcn8s_fuse, score_layer
from frugalcv.models.registry import register_model

RESNET_GROUPS = ("conv1", "layer1", "layer2", "layer3", "layer4")


class FCN8sResNet(SegNet):
    group_names = RESNET_GROUPS
    skip_groups = (3, 4)  # layer2 (stride 8), layer3 (stride 16)

    def __init__(self, layers: tuple[int, ...], num_classes: int = 19, align_at: int = 3, width: float = 1.0):
        super().__init__(num_classes, align_at)
        self.backbone = ResNetBackbone(layers, width)
        c2, c3, c4 = self.backbone.channels[1:]
        self.score_fr = score_layer(c4, num_classes)
        self.score_layer3 = score_layer(c3, num_classes)
        self.score_layer2 = score_layer(c2, num_classes)

    def run_group(self, group: int, x: Tensor) -> Tensor:
        return self.backbone.stage(group, x)

    def head(self, taps: dict[int, Tensor]) -> Tensor:
        return fcn8s_fuse(self.score_fr(taps[5]), self.score_layer3(taps[4]), self.score_layer2(taps[3]))


@register_model
def fcn8s_resnet101(*, num_classes: int = 19, align_at: int = 3, width: float = 1.0,
                    debug: bool = False) -> FCN8sResNet:
    """FCN-8s on ResNet-101 (skips from layer2, layer3), split after group align_at (1..5); debug: 4 tiny blocks."""
    if debug:
        return FCN8sResNet((1, 1, 1, 1), num_classes, align_at, 1 / 16)
    return FCN8sResNet((3, 4, 23, 3), num_classes, align_at, width)
