"""Typed params of SCN's stages, checked when the pipeline loads.

Defaults are the dissertation's recipe (Ch. 5): VGG-19 fc7 features of 224x224 patches, SGD
with batch 64, lr 1e-3 divided by 10 after 100 epochs, weight decay 5e-4, 200 epochs; the
bottom stream's fully-connected layers train, its convolutions stay frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from frugalcv.workflows.kit import FieldError

BACKBONES = ("cnn_m", "vgg19")
DEFAULT_POOL = {"cnn_m": 6, "vgg19": 7}


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise FieldError(name, f"{value}: must be > 0")


@dataclass(kw_only=True)
class BackboneFields:
    """The CNN both streams are built from, and the patches it sees."""

    #: cnn_m | vgg19 (fc7 is the representation)
    backbone: Literal["cnn_m", "vgg19"] = "vgg19"
    #: channel and fc multiplier (1: the real network, whose ImageNet weights load)
    width: float = 1.0
    #: side of the adaptive pool before fc6 (default: 6 for cnn_m, 7 for vgg19, as the real networks)
    pool: int | None = None
    #: dropout after fc6 and fc7 (the bottom stream trains with it; the top stream never)
    dropout: float = 0.5
    #: the tiny flavour for tests
    debug: bool = False
    #: a torchvision-layout state dict of the backbone (e.g. vgg19's ImageNet file), any fsspec URL
    weights: str | None = None
    #: patches are resized to patch_size x patch_size
    patch_size: int = 224
    #: seeds the initial weights, dropout and the order of the samples
    seed: int = 0
    #: optimizer steps per logged (averaged) line
    log_every: int = 20

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise FieldError("backbone", f"{self.backbone!r}: expected one of {', '.join(BACKBONES)}")
        _positive("width", self.width)
        if self.pool is not None and self.pool < 1:
            raise FieldError("pool", f"{self.pool}: must be >= 1")
        if not 0 <= self.dropout < 1:
            raise FieldError("dropout", f"{self.dropout}: expected 0 <= dropout < 1")
        if self.patch_size < 16:
            raise FieldError("patch_size", f"{self.patch_size}: must be >= 16")

    def backbone_args(self, num_classes: int) -> dict:
        return {"width": self.width, "pool": self.pool or DEFAULT_POOL[self.backbone], "num_classes": num_classes,
                "dropout": self.dropout, "debug": self.debug}


@dataclass(kw_only=True)
class OptimFields:
    """SGD with momentum and weight decay, by epochs (``iterations`` caps the steps)."""

    epochs: int = 200
    #: stop after this many optimizer steps (default: after `epochs`)
    iterations: int | None = None
    #: samples per optimizer step, global (each rank gets batch_size / world_size)
    batch_size: int = 64
    #: SGD's learning rate
    lr: float = 1.0e-3
    #: epochs after which the lr is multiplied by lr_gamma
    lr_milestones: list[int] = field(default_factory=lambda: [100])
    lr_gamma: float = 0.1
    #: SGD's momentum
    momentum: float = 0.9
    #: L2 weight decay
    weight_decay: float = 5.0e-4

    def __post_init__(self):
        if (parent := getattr(super(), "__post_init__", None)) is not None:
            parent()
        if self.epochs < 1:
            raise FieldError("epochs", f"{self.epochs}: must be >= 1")
        if self.iterations is not None and self.iterations < 0:
            raise FieldError("iterations", f"{self.iterations}: must be >= 0")
        if self.batch_size < 1:
            raise FieldError("batch_size", f"{self.batch_size}: must be >= 1")
        _positive("lr", self.lr)
        if any(not isinstance(m, int) or m < 1 for m in self.lr_milestones) or self.lr_milestones != sorted(
                self.lr_milestones):
            raise FieldError("lr_milestones", f"{self.lr_milestones}: expected increasing epochs >= 1")
        _positive("lr_gamma", self.lr_gamma)
        if not 0 <= self.momentum < 1:
            raise FieldError("momentum", f"{self.momentum}: expected 0 <= momentum < 1")
        if self.weight_decay < 0:
            raise FieldError("weight_decay", f"{self.weight_decay}: must be >= 0")


@dataclass(kw_only=True)
class PretrainParams(OptimFields, BackboneFields):
    """The backbone trained as a classifier on a labelled split: the top stream's "pre-trained" CNN
    where no ImageNet weights are at hand."""

    epochs: int = 30
    lr: float = 0.01
    lr_milestones: list[int] = field(default_factory=list)


@dataclass(kw_only=True)
class TrainParams(OptimFields, BackboneFields):
    """SCN (Eqs. 5.1, 5.2): the bottom stream and the spatial context module."""

    #: False: the module sees no offset (h2 = sigmoid(V1 h1)), the ablation of Fig. 5.4
    use_offset: bool = True
    #: features: predict g(X_i; W_T) (fc7); pixels: X_i's pixels at target_size (the reconstruction experiment)
    target: Literal["features", "pixels"] = "features"
    target_size: int = 16
    #: train the bottom stream's convolutions too (default: its fully-connected layers only)
    train_convs: bool = False
    #: size of h2 (default: the backbone's feature size)
    hidden: int | None = None
    #: std of V_loc's initial weights (and half-range of V1's initial bias); 0: PyTorch's default init
    offset_init: float = 10.0
    #: test_mse on the `test` input every eval_every epochs (the curve of Fig. 5.4)
    eval_every: int = 1
    eval_batch_size: int = 100

    def __post_init__(self):
        super().__post_init__()
        if self.target not in ("features", "pixels"):
            raise FieldError("target", f"{self.target!r}: expected features or pixels")
        if self.target_size < 4:
            raise FieldError("target_size", f"{self.target_size}: must be >= 4")
        if self.offset_init < 0:
            raise FieldError("offset_init", f"{self.offset_init}: must be >= 0")
        if self.hidden is not None and self.hidden < 1:
            raise FieldError("hidden", f"{self.hidden}: must be >= 1")
        for name in ("eval_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"{getattr(self, name)}: must be >= 1")


@dataclass(kw_only=True)
class EvaluateParams:
    """Test regression error, with and without offsets, and the linear probe on h1 vs the original features."""

    #: patches per batch of feature extraction
    batch_size: int = 100
    #: linear_svm (LinearSVC) | logistic (LogisticRegression), on standardised features
    probe: Literal["linear_svm", "logistic"] = "linear_svm"
    #: the probe's inverse regularisation strength
    probe_c: float = 1.0
    #: the report's title (default: names the backbone, pipeline and run)
    title: str | None = None
    #: the probe's random state
    seed: int = 0

    def __post_init__(self):
        if self.batch_size < 1:
            raise FieldError("batch_size", f"{self.batch_size}: must be >= 1")
        if self.probe not in ("linear_svm", "logistic"):
            raise FieldError("probe", f"{self.probe!r}: expected linear_svm or logistic")
        _positive("probe_c", self.probe_c)
