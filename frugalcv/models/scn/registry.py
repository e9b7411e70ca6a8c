"""SCN's backbones in the model registry (``build_model("scn_cnn_m", width=0.125)``)."""

from __future__ import annotations

from frugalcv.models.registry import build_model, register_model
from frugalcv.models.scn.backbones import CNNM, VGG19, Backbone

BACKBONES = {"cnn_m": "scn_cnn_m", "vgg19": "scn_vgg19"}
DEBUG_WIDTH = 1 / 32


@register_model
def scn_cnn_m(width: float = 1.0, pool: int = 6, num_classes: int = 1000, dropout: float = 0.5,
              debug: bool = False) -> CNNM:
    """CNN_M (Chatfield et al.): the dissertation's smaller SCN backbone; fc7 is the representation."""
    if debug:
        width, pool = DEBUG_WIDTH, 1
    return CNNM(width=width, pool=pool, num_classes=num_classes, dropout=dropout)


@register_model
def scn_vgg19(width: float = 1.0, pool: int = 7, num_classes: int = 1000, dropout: float = 0.5,
              debug: bool = False) -> VGG19:
    """VGG-19 in torchvision's layout (its ImageNet state dict loads): the dissertation's SCN backbone."""
    if debug:
        width, pool = DEBUG_WIDTH, 1
    return VGG19(width=width, pool=pool, num_classes=num_classes, dropout=dropout)


def scn_backbone(name: str, **kwargs) -> Backbone:
    """The backbone ``name`` (``cnn_m`` | ``vgg19``) with registry arguments ``kwargs``."""
    if name not in BACKBONES:
        raise ValueError(f"unknown SCN backbone {name!r}; known: {', '.join(BACKBONES)}")
    return build_model(BACKBONES[name], **kwargs)
