"""ImageNet backbones in torchvision's layout (parameter names and shapes), so its state dicts load.

``vgg_features`` builds ``features`` of VGG-16 / VGG-19 (3×3 convs + ReLU, 2×2 max pools);
``ResNetBackbone`` is torchvision's ResNet without ``avgpool``/``fc`` (``conv1, bn1, layer1..4``),
with PSPNet's optional dilation of the last stages. ``width`` scales every channel count.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from frugalcv.models.blocks import Bottleneck

# torchvision's VGG configurations: channels of each 3x3 conv, "M" for a 2x2 max pool
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG19_TO_RELU4_1 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512)


def scaled(channels: int, width: float, minimum: int = 4) -> int:
    """``channels · width`` rounded, at least ``minimum`` (width 1 is the real network)."""
    return max(minimum, int(round(channels * width)))


def init_conv_bn(module: nn.Module) -> None:
    """torchvision's initialisation: He (fan-out) convs with zero bias, BN at weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def vgg_features(config: Sequence[int | str], width: float = 1.0) -> nn.Sequential:
    """``features`` of a VGG, indexed as torchvision's (conv, ReLU, ..., pool)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            out_ch = scaled(int(v), width)
            layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(inplace=True)]
            in_ch = out_ch
    features = nn.Sequential(*layers)
    init_conv_bn(features)
    return features


def dilate(block: Bottleneck, dilation: int) -> None:
    """Make a bottleneck's 3×3 conv atrous (padding = dilation keeps the size; no new parameters)."""
    block.conv2.dilation = (dilation, dilation)
    block.conv2.padding = (dilation, dilation)


class ResNetBackbone(nn.Module):
    """torchvision ResNet trunk (v1.5: stride on the 3×3 conv) returning its stages one at a time.

    ``dilations[i]`` > 1 replaces stage ``i``'s stride by that dilation in all its blocks (PSPNet's
    dilated ResNet; torchvision's ``replace_stride_with_dilation`` differs only in the first block).
    """

    def __init__(self, layers: Sequence[int], width: float = 1.0, dilations: Sequence[int] = (1, 1, 1, 1)):
        super().__init__()
        stem = scaled(64, width)
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = stem
        self.channels: list[int] = []  # output channels of layer1..layer4
        for i, (n, base, d) in enumerate(zip(layers, (64, 128, 256, 512), dilations, strict=True)):
            planes = scaled(base, width)
            stride = 2 if i > 0 and d == 1 else 1
            blocks = []
            for b in range(n):
                block = Bottleneck(in_ch, planes, stride if b == 0 else 1, "conv")
                if d > 1:
                    dilate(block, d)
                blocks.append(block)
                in_ch = planes * Bottleneck.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.channels.append(in_ch)
        init_conv_bn(self)

    def stem(self, x: Tensor) -> Tensor:
        """conv1 + bn1 + ReLU + max pool (output stride 4)."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def stage(self, index: int, x: Tensor) -> Tensor:
        """Stage ``index``: 1 = the stem, 2..5 = layer1..layer4 (ResNet's conv1, conv2_x..conv5_x)."""
        return self.stem(x) if index == 1 else getattr(self, f"layer{index - 1}")(x)
