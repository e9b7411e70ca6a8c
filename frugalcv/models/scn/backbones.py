"""The CNNs SCN is built over: each gives ``penultimate(x)`` (fc7, after its ReLU) and keeps its
convolutions in ``features`` and its fully-connected layers in ``classifier``.

``VGG19`` uses torchvision's layout (``features.N``, ``classifier.N``), so at ``width=1`` and
``pool=7`` torchvision's ImageNet state dict loads by name. ``CNNM`` is CNN_M of Chatfield et
al. (7x7/2 conv, LRN, 5x5/2 conv, LRN, three 3x3 convs, fc6, fc7), the dissertation's other
backbone, with channel and fc widths scaled by ``width`` and an adaptive pool before fc6 so that
small patches (32x32) give a map of any size.
"""

from __future__ import annotations

from torch import Tensor, nn

from frugalcv.models.dcan.backbones import scaled, vgg_features

# torchvision's VGG-19 configuration (channels of each 3x3 conv, "M" a 2x2 max pool)
VGG19_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M")
FC7_INDEX = 5  # classifier[:5] = fc6, ReLU, Dropout, fc7, ReLU


def classifier(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    """fc6, ReLU, Dropout, fc7, ReLU, Dropout, fc8: torchvision VGG's ``classifier`` layout."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))


def init_linear(classifier: nn.Sequential) -> None:
    """He initialisation of fc6 and fc7 (they are followed by ReLUs), N(0, 0.01) for fc8, zero biases.
    (torchvision's N(0, 0.01) everywhere leaves narrow nets' activations too small to train from.)"""
    for m in classifier[:-1]:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    nn.init.normal_(classifier[-1].weight, 0, 0.01)
    nn.init.zeros_(classifier[-1].bias)


class Backbone(nn.Module):
    """``features`` (convolutions) -> ``avgpool`` -> ``classifier`` (fc6, fc7, fc8)."""

    def __init__(self, features: nn.Sequential, channels: int, pool: int, hidden: int, num_classes: int,
                 dropout: float):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
        self.classifier = classifier(channels * pool * pool, hidden, num_classes, dropout)
        self.feature_dim = hidden
        init_linear(self.classifier)

    def penultimate(self, x_BCHW: Tensor) -> Tensor:
        """fc7 (after its ReLU): the representation SCN predicts and probes, [B, feature_dim]."""
        x = self.avgpool(self.features(x_BCHW)).flatten(1)
        return self.classifier[:FC7_INDEX](x)

    def forward(self, x_BCHW: Tensor) -> Tensor:
        return self.classifier[FC7_INDEX:](self.penultimate(x_BCHW))


class VGG19(Backbone):
    """VGG-19 with torchvision's parameter names; ``width`` scales every layer (1: the real one)."""

    def __init__(self, *, width: float = 1.0, pool: int = 7, num_classes: int = 1000, dropout: float = 0.5):
        features = vgg_features(VGG19_CONFIG, width)
        super().__init__(features, scaled(512, width), pool, scaled(4096, width), num_classes, dropout)


def cnn_m_features(width: float) -> nn.Sequential:
    c1, c2, c3 = scaled(96, width), scaled(256, width), scaled(512, width)
    features = nn.Sequential(
        nn.Conv2d(3, c1, 7, stride=2, padding=3), nn.ReLU(inplace=True), nn.LocalResponseNorm(5),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(c1, c2, 5, stride=2, padding=2), nn.ReLU(inplace=True), nn.LocalResponseNorm(5),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c3, c3, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c3, c3, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return features


class CNNM(Backbone):
    """CNN_M (Chatfield et al. 2014): 96-256-512-512-512 convs, fc6/fc7 of 4096, scaled by ``width``."""

    def __init__(self, *, width: float = 1.0, pool: int = 6, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__(cnn_m_features(width), scaled(512, width), pool, scaled(4096, width), num_classes,
                         dropout)
