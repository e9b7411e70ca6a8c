"""DCAN's image generator: source images re-rendered with target channel statistics.

``x̂_s = g_gen(AdaIN(f_gen(x_s), f_gen(x_t)))`` with ``f_gen`` a frozen VGG-19 up to relu4_1 and
``g_gen`` a decoder that mirrors it (an AdaIN style-transfer network). Its loss is

    ℓ_gen = ‖f_gen(x̂_s) − ĥ‖₂ + Σ_{l=1..4} ‖G(f_gen^l(x̂_s)) − G(f_gen^l(x_t))‖₂

(mean squared errors; relu4_1 for the content term, the Gram matrices at relu1_1..relu4_1 for the
style term). With k targets per source image, a source's target Gram is the mean of its k targets'.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from frugalcv.models.dcan.align import adain, gram, pooled_mean
from frugalcv.models.dcan.backbones import VGG19_TO_RELU4_1, scaled, vgg_features
from frugalcv.models.registry import register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision vgg19.features indices of relu1_1, relu2_1, relu3_1, relu4_1
TAPS = (1, 6, 11, 20)
#: per depth (the last tap: 1 = relu1_1 ... 4 = relu4_1), the encoder's VGG config prefix and the decoder's start
_ENCODER_CONFIG = {1: 1, 2: 4, 3: 7, 4: 12}
_DECODER_START = {1: 11, 2: 8, 3: 5, 4: 0}
_TAP_CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512}
DEPTHS = tuple(_ENCODER_CONFIG)


def _check_depth(depth: int) -> None:
    if depth not in DEPTHS:
        from frugalcv.errors import ConfigError

        raise ConfigError(f"generator depth={depth}: expected 1..4 (the encoder's last layer relu1_1 .. relu4_1; "
                          "4, relu4_1, is the dissertation's)")


class VGGEncoder(nn.Module):
    """VGG-19 ``features[0..20]`` on [0, 1] images (ImageNet normalisation inside); returns the 4 taps.

    ``depth`` < 4 stops earlier (at relu{depth}_1) and returns that many taps: a cheaper generator
    for small images and CPU demos; the layers kept are named as torchvision's."""

    def __init__(self, width: float = 1.0, depth: int = 4):
        super().__init__()
        _check_depth(depth)
        self.taps = TAPS[:depth]
        self.features = vgg_features(VGG19_TO_RELU4_1[:_ENCODER_CONFIG[depth]], width)
        # not in the state dict: torchvision's vgg19 file has no such keys
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.channels = self.features[self.taps[-1] - 1].out_channels

    def forward(self, x01: Tensor) -> list[Tensor]:
        """[relu1_1, relu2_1, relu3_1, relu4_1] of images in [0, 1]."""
        x = (x01 - self.mean) / self.std
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                taps.append(x)
        return taps


# the decoder mirrors the encoder: 3x3 conv channels, "U" for a x2 nearest upsampling
DECODER = (256, "U", 256, 256, 256, 128, "U", 128, 64, "U", 64, 3)


class Decoder(nn.Module):
    """relu4_1 (or relu{depth}_1) features -> image: reflection-padded 3×3 convs with ReLU (none after
    the last), no norm."""

    def __init__(self, width: float = 1.0, depth: int = 4):
        super().__init__()
        _check_depth(depth)
        in_ch = scaled(_TAP_CHANNELS[depth], width)
        layers: list[nn.Module] = []
        config = DECODER[_DECODER_START[depth]:]
        for i, v in enumerate(config):
            if v == "U":
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
                continue
            out_ch = 3 if i == len(config) - 1 else scaled(int(v), width)
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(in_ch, out_ch, 3)]
            if i < len(config) - 1:
                layers.append(nn.ReLU(inplace=True))
            in_ch = out_ch
        self.layers = nn.Sequential(*layers)  # PyTorch's default initialisation, as AdaIN's decoder

    def forward(self, h: Tensor) -> Tensor:
        """An image (8× the feature map's size), [0, 1]-ish: no output activation."""
        return self.layers(h)


@dataclass
class GeneratorOutput:
    image: Tensor               # x̂_s [B, 3, H, W]
    aligned: Tensor             # ĥ: source relu4_1 with target statistics, the content target
    target_feats: list[Tensor]  # f_gen^l(x_t), l = 1..4 [k·B, ...]: the style targets


class Generator(nn.Module):
    """Frozen VGG-19 encoder + trainable decoder; the encoder stays in eval mode and gets no gradient."""

    def __init__(self, width: float = 1.0, style_weight: float = 1.0, eps: float = 1e-5, depth: int = 4):
        super().__init__()
        self.encoder = VGGEncoder(width, depth)
        self.decoder = Decoder(width, depth)
        self.style_weight = style_weight
        self.eps = eps
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> Generator:
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, source: Tensor, target: Tensor) -> GeneratorOutput:
        """Source images [B, 3, H, W] rendered in the style of targets [k·B, 3, H', W'] (all in [0, 1])."""
        # no autograd graph unless an input needs a gradient: the encoder's weights are frozen
        source_h = self.encoder(source)[-1]
        target_feats = self.encoder(target)
        aligned = adain(source_h, target_feats[-1], self.eps)
        image = self.decoder(aligned)
        if image.shape[-2:] != source.shape[-2:]:  # sizes that are not multiples of 8
            image = F.interpolate(image, size=source.shape[-2:], mode="bilinear", align_corners=False)
        return GeneratorOutput(image=image, aligned=aligned, target_feats=target_feats)

    def loss(self, out: GeneratorOutput) -> dict[str, Tensor]:
        """``{"gen": content + style_weight·style, "content": ..., "style": ...}``; encodes ``out.image``."""
        feats = self.encoder(out.image)
        content = F.mse_loss(feats[-1], out.aligned)
        batch = out.image.shape[0]
        style = sum(F.mse_loss(gram(f), pooled_mean(gram(t), batch))
                    for f, t in zip(feats, out.target_feats, strict=True))
        return {"gen": content + self.style_weight * style, "content": content, "style": style}


@register_model
def dcan_generator(*, width: float = 1.0, depth: int = 4, debug: bool = False) -> Generator:
    """DCAN image generator: frozen VGG-19 (to relu4_1) + mirrored decoder, AdaIN between; debug: 1/16 width."""
    return Generator(width=1 / 16 if debug else width, depth=depth)
