"""Params of the video stages: which backbone makes the per-frame features, and how extraction runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from frugalcv.workflows import kit

#: torchvision constructors (built with ``weights=None``) -> the classifier removed for features
TORCHVISION_HEADS = {"mobilenet_v2": "classifier", "resnet18": "fc", "resnet50": "fc", "resnet101": "fc"}
#: the baseline "backbone" without a network: the frame resized to ``size`` and flattened
PIXELS = "pixels"
MIN_SIZE = 8


def known_models() -> list[str]:
    """Every backbone name: the torchvision ones, ``pixels`` and frugalcv's registered models."""
    from frugalcv.models import list_models

    return sorted({*TORCHVISION_HEADS, PIXELS, *list_models()})


@dataclass(kw_only=True)
class BackboneSpec:
    """A per-frame feature network: its name, input side, weights and input normalisation."""

    #: mobilenet_v2 | resnet18 | resnet50 | resnet101 (torchvision, classifier removed: pooled
    #: penultimate features), pixels (resize + flatten, no network), or a registered frugalcv model
    model: str
    #: frames are resized to size x size (e.g. 112 for a coarse MobileNetV2, 224 for a fine ResNet-101)
    size: int
    #: a torchvision-style state dict (path or fsspec URL); null: random initial weights from the seed
    weights: str | None = None
    #: imagenet: (x - mean) / std with ImageNet's statistics on [0, 1] pixels; none: [0, 1] pixels
    normalize: Literal["imagenet", "none"] = "imagenet"
    #: keyword arguments of the model's constructor (e.g. {debug: true} for a registered model)
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        known = known_models()
        if self.model not in known:
            raise kit.FieldError("model", f"unknown model {self.model!r}; use one of {', '.join(known)}")
        if self.size < MIN_SIZE:
            raise kit.FieldError("size", f"{self.size}: frames are resized to size x size; use at least {MIN_SIZE}")
        if self.model == PIXELS and (self.weights is not None or self.args):
            raise kit.FieldError("weights" if self.weights is not None else "args",
                                 "pixels has no network: it takes no weights or args")

    def record(self) -> dict[str, Any]:
        """The spec as plain data, for the manifest and the writer's settings."""
        return {"model": self.model, "size": self.size, "weights": self.weights, "normalize": self.normalize,
                "args": dict(self.args)}


@dataclass(kw_only=True)
class ExtractParams:
    """Params of ``video.extract``."""

    #: the expensive network: ``features.npy`` [T, D_fine]
    fine: BackboneSpec
    #: an optional cheap network over the same frames: ``coarse.npy`` [T, D_coarse]
    coarse: BackboneSpec | None = None
    #: take every n-th frame (the frame layouts frugalcv writes hold one frame per second)
    fps_stride: int = 1
    #: frames per forward pass (the frames of consecutive videos are batched together)
    batch_size: int = 64
    #: videos per output shard (needed with tasks > 1; else shards are cut at 256 MB)
    max_shard_samples: int | None = None
    #: array tasks writing disjoint ranges of shards (a Slurm job array under the slurm executor)
    tasks: int = 1
    #: seeds the initial weights of backbones without a weights file
    seed: int = 0

    def __post_init__(self):
        for name in ("fps_stride", "batch_size"):
            if getattr(self, name) < 1:
                raise kit.FieldError(name, f"{getattr(self, name)}: must be >= 1")
        if self.max_shard_samples is not None and self.max_shard_samples < 1:
            raise kit.FieldError("max_shard_samples", f"{self.max_shard_samples}: must be >= 1")
        if self.tasks < 1:
            raise kit.FieldError("tasks", f"{self.tasks}: expected an int >= 1 (array tasks writing shards)")
        if self.tasks > 1 and self.max_shard_samples is None:
            raise kit.FieldError("tasks", f"{self.tasks}: needs params.max_shard_samples, so that each task "
                                 "knows its shard boundaries before extracting (e.g. max_shard_samples: 1000)")
