"""Typed params of DCAN's stages, checked when the pipeline loads.

Defaults are the dissertation's recipe (Ch. 6): SGD with momentum 0.99, lr 1e-3 (FCN8s-ResNet101,
PSPNet; 1e-5 for FCN8s-VGG16), batch 3, 100,000 iterations, 512x1024 crops, lambda = 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from frugalcv.workflows.kit import FieldError

SEGMENTATION_MODELS = ("fcn8s_vgg16", "fcn8s_resnet101", "pspnet_resnet50")


def _size(name: str, value: list[int] | None) -> None:
    if value is None:
        return
    if len(value) != 2 or any(not isinstance(v, int) or v < 16 for v in value):
        raise FieldError(name, f"{value}: expected [height, width], two ints >= 16")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise FieldError(name, f"{value}: must be > 0")


@dataclass(kw_only=True)
class DataParams:
    """How both domains' images reach the networks."""

    #: [H, W] every source image (and mask) is resized to first (GTA5's images are not all one size)
    source_resize: list[int] | None = None
    #: [H, W] every target image is resized to first
    target_resize: list[int] | None = None
    #: [H, W] of the random crops taken from both domains (clamped to the image)
    crop: list[int] = field(default_factory=lambda: [512, 1024])
    hflip: bool = True
    #: target images drawn at random for each source image (1 for GTA5, 2 for SYNTHIA)
    targets_per_source: int = 1
    batch_size: int = 3
    iterations: int = 100_000
    seed: int = 0
    log_every: int = 20

    def __post_init__(self):
        for name in ("source_resize", "target_resize", "crop"):
            _size(name, getattr(self, name))
        if self.targets_per_source < 1:
            raise FieldError("targets_per_source", f"{self.targets_per_source}: must be >= 1")
        if self.batch_size < 1:
            raise FieldError("batch_size", f"{self.batch_size}: must be >= 1")
        if self.iterations < 0:
            raise FieldError("iterations", f"{self.iterations}: must be >= 0")


@dataclass(kw_only=True)
class SegmentationParams(DataParams):
    """The segmentation network and its optimiser."""

    #: fcn8s_vgg16 | fcn8s_resnet101 | pspnet_resnet50
    model: str = "fcn8s_vgg16"
    num_classes: int = 19
    #: the convolution group after which the network is split and aligned (3: after conv3)
    align_at: int = 3
    #: channel multiplier (1: the real network, whose ImageNet weights load)
    width: float = 1.0
    debug: bool = False
    #: torchvision's ImageNet state dict of the backbone (vgg16 / resnet101 / resnet50), any fsspec URL
    weights: str | None = None
    lr: float = 1.0e-3
    momentum: float = 0.99
    weight_decay: float = 5.0e-4
    lr_schedule: Literal["constant", "poly"] = "constant"
    poly_power: float = 0.9
    grad_clip: float | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.model not in SEGMENTATION_MODELS:
            raise FieldError("model", f"{self.model!r}: expected one of {', '.join(SEGMENTATION_MODELS)}")
        if self.num_classes < 2:
            raise FieldError("num_classes", f"{self.num_classes}: must be >= 2")
        for name in ("width", "lr"):
            _positive(name, getattr(self, name))
        if not 0 <= self.momentum < 1:
            raise FieldError("momentum", f"{self.momentum}: expected 0 <= momentum < 1")


@dataclass(kw_only=True)
class GeneratorFields:
    """The image generator (VGG-19 encoder to relu4_1, frozen; a mirrored decoder)."""

    generator_width: float = 1.0
    #: the encoder's last layer: 4 = relu4_1 (the dissertation's); 1..3 stop at relu1_1..relu3_1 (cheaper, small images)
    generator_depth: int = 4
    #: torchvision's ImageNet VGG-19 state dict for the frozen encoder
    generator_weights: str | None = None
    #: weight of the Gram (style) terms in the generator loss
    style_weight: float = 1.0

    def __post_init__(self):
        if (parent := getattr(super(), "__post_init__", None)) is not None:
            parent()
        if self.generator_depth not in (1, 2, 3, 4):
            raise FieldError("generator_depth", f"{self.generator_depth}: expected 1..4 (relu1_1 .. relu4_1)")


@dataclass(kw_only=True)
class SourceOnlyParams(SegmentationParams):
    """Segmentation trained on source images only: the baseline adaptation is measured against."""


@dataclass(kw_only=True)
class GeneratorParams(GeneratorFields, DataParams):
    """The generator trained alone (the first of the two stages): its loss only, Adam."""

    lr: float = 1.0e-4
    debug: bool = False

    def __post_init__(self):
        super().__post_init__()
        _positive("lr", self.lr)
        _positive("generator_width", self.generator_width)


@dataclass(kw_only=True)
class TwoStageParams(SegmentationParams):
    """Segmentation on source images synthesised by a trained, frozen generator, aligned with the target."""


@dataclass(kw_only=True)
class TrainParams(GeneratorFields, SegmentationParams):
    """DCAN end to end (Eq. 6.5): l_seg + lambda * l_gen, so l_seg reaches the generator's decoder."""

    #: lambda, the weight of the generator loss
    gen_weight: float = 0.1
    #: the decoder's update rule: adam (the generator stage's, no weight decay) or sgd (the segmentation network's)
    generator_optimizer: Literal["adam", "sgd"] = "adam"
    #: the decoder's learning rate (0 keeps the generator stage's decoder)
    generator_lr: float = 1.0e-4

    def __post_init__(self):
        super().__post_init__()
        _positive("generator_width", self.generator_width)
        if self.gen_weight < 0:
            raise FieldError("gen_weight", f"{self.gen_weight}: must be >= 0")
        if self.generator_lr < 0:
            raise FieldError("generator_lr", f"{self.generator_lr}: must be >= 0 (0 keeps the decoder fixed)")


@dataclass(kw_only=True)
class EvaluateParams:
    """Target-domain mIoU (alignment off), the per-class table, figures."""

    batch_size: int = 2
    #: [H, W] images are predicted at (logits are upsampled to the label's size); default: as stored
    size: list[int] | None = None
    #: examples shown in the figures
    figures: int = 4
    title: str | None = None
    seed: int = 0

    def __post_init__(self):
        _size("size", self.size)
        if self.batch_size < 1:
            raise FieldError("batch_size", f"{self.batch_size}: must be >= 1")
        if self.figures < 0:
            raise FieldError("figures", f"{self.figures}: must be >= 0")
