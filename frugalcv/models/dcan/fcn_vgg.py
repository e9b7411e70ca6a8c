"""FCN-8s on VGG-16 (Long et al.), split for DCAN after one of its 7 groups.

Groups: 1..5 = conv1..conv5 (each ending at its max pool), 6 = fc6, 7 = fc7. ``backbone.features``
is torchvision's ``vgg16.features`` (indices 0..30). fc6 is a 7×7 conv (padding 3, so no crop of
FCN's 100-pixel input padding is needed) and fc7 a 1×1 conv, 4096 channels each, ReLU and dropout
0.5 after both: the shapes of VGG-16's fully connected layers, which ``fc_from_vgg_classifier``
reshapes into them. Scores from fc7, pool4 and pool3 are fused FCN-8s style.
"""

from __future__ import annotations

from torch import Tensor, nn

from frugalcv.models.dcan.backbones import VGG16, init_conv_bn, scaled, vgg_features
from frugalcv.models.dcan.base import SegNet
from frugalcv.models.dcan.heads import fcn8s_fuse, score_layer
from frugalcv.models.registry import register_model


class VGGBackbone(nn.Module):
    """Holds ``features`` so that a vgg16 state dict loads by name (its ``classifier`` is unused)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        self.features = vgg_features(VGG16, width)


def fc_layer(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    layer = nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2), nn.ReLU(inplace=True),
                          nn.Dropout(0.5))
    init_conv_bn(layer)
    return layer


class FCN8sVGG16(SegNet):
    group_names = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
    skip_groups = (3, 4)  # pool3, pool4

    def __init__(self, num_classes: int = 19, align_at: int = 3, width: float = 1.0):
        super().__init__(num_classes, align_at)
        self.backbone = VGGBackbone(width)
        features = self.backbone.features
        ends = [i + 1 for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
        self.block_ranges = list(zip([0] + ends[:-1], ends, strict=True))  # features[a:b] of conv1..conv5
        c3, c4, c5 = (features[b - 3].out_channels for _, b in self.block_ranges[2:])
        fc = scaled(4096, width)
        self.fc6 = fc_layer(c5, fc, 7)
        self.fc7 = fc_layer(fc, fc, 1)
        self.score_fr = score_layer(fc, num_classes)
        self.score_pool4 = score_layer(c4, num_classes)
        self.score_pool3 = score_layer(c3, num_classes)

    def run_group(self, group: int, x: Tensor) -> Tensor:
        if group <= 5:
            start, end = self.block_ranges[group - 1]
            for i in range(start, end):
                x = self.backbone.features[i](x)
            return x
        return self.fc6(x) if group == 6 else self.fc7(x)

    def head(self, taps: dict[int, Tensor]) -> Tensor:
        return fcn8s_fuse(self.score_fr(taps[7]), self.score_pool4(taps[4]), self.score_pool3(taps[3]))


def fc_from_vgg_classifier(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """fc6/fc7 weights (``fc6.0.weight`` ...) from a torchvision vgg16 state dict's ``classifier.0``/``.3``.

    For ``net.load_state_dict(fc_from_vgg_classifier(state), strict=False)`` on a width-1 net; the
    7×7 fc6 kernel is VGG's first fully connected layer over its 512×7×7 pooled features.
    """
    w6, w7 = state["classifier.0.weight"], state["classifier.3.weight"]
    return {
        "fc6.0.weight": w6.reshape(w6.shape[0], -1, 7, 7), "fc6.0.bias": state["classifier.0.bias"],
        "fc7.0.weight": w7.reshape(*w7.shape, 1, 1), "fc7.0.bias": state["classifier.3.bias"],
    }


@register_model
def fcn8s_vgg16(*, num_classes: int = 19, align_at: int = 3, width: float = 1.0, debug: bool = False) -> FCN8sVGG16:
    """FCN-8s on VGG-16 (fc6 7x7, fc7 1x1, dropout), split after group align_at (1..7); debug: 1/16 width."""
    return FCN8sVGG16(num_classes, align_at, 1 / 16 if debug else width)
