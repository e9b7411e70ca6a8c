"""PSPNet (Zhao et al.) on a dilated ResNet-50, split for DCAN after one of its 5 stages.

Groups as the ResNet: 1 = conv1 (+ max pool), 2..5 = layer1..layer4. layer3 and layer4 trade
their stride for dilation 2 and 4 (output stride 8); pyramid pooling averages the layer4 features
over 1×1, 2×2, 3×3 and 6×6 bins, reduces each with 1×1 conv + BN + ReLU, upsamples them and
concatenates them with the features; a 3×3 conv + BN + ReLU, dropout 0.1 and a 1×1 classifier
follow. No auxiliary head. The 1×1 bin's BN needs at least 2 source images per training batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from frugalcv.models.dcan.backbones import ResNetBackbone, init_conv_bn, scaled
from frugalcv.models.dcan.base import SegNet
from frugalcv.models.dcan.fcn_resnet import RESNET_GROUPS
from frugalcv.models.dcan.heads import resize_to, score_layer
from frugalcv.models.registry import register_model


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class PyramidPooling(nn.Module):
    """Features concatenated with their average pools over ``bins`` (each reduced to in/len(bins) channels)."""

    def __init__(self, in_ch: int, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), *conv_bn_relu(in_ch, in_ch // len(bins), 1)) for b in bins)
        self.out_channels = in_ch + len(bins) * (in_ch // len(bins))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x] + [resize_to(branch(x), x) for branch in self.branches], dim=1)


class PSPNet(SegNet):
    group_names = RESNET_GROUPS

    def __init__(self, layers: tuple[int, ...], num_classes: int = 19, align_at: int = 3, width: float = 1.0):
        super().__init__(num_classes, align_at)
        self.backbone = ResNetBackbone(layers, width, dilations=(1, 1, 2, 4))
        self.ppm = PyramidPooling(self.backbone.channels[-1])
        self.bottleneck = nn.Sequential(*conv_bn_relu(self.ppm.out_channels, scaled(512, width), 3),
                                        nn.Dropout2d(0.1))
        init_conv_bn(self.ppm)
        init_conv_bn(self.bottleneck)
        self.classifier = score_layer(scaled(512, width), num_classes)

    def run_group(self, group: int, x: Tensor) -> Tensor:
        return self.backbone.stage(group, x)

    def head(self, taps: dict[int, Tensor]) -> Tensor:
        return self.classifier(self.bottleneck(self.ppm(taps[5])))


@register_model
def pspnet_resnet50(*, num_classes: int = 19, align_at: int = 3, width: float = 1.0, debug: bool = False) -> PSPNet:
    """PSPNet on a dilated ResNet-50 (output stride 8, bins 1/2/3/6), split after group align_at (1..5); debug: tiny."""
    if debug:
        return PSPNet((1, 1, 1, 1), num_classes, align_at, 1 / 16)
    return PSPNet((3, 4, 6, 3), num_classes, align_at, width)
