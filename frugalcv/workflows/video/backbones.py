"""Per-frame feature networks built from a :class:`BackboneSpec`, and the frames' way through them.

A torchvision network is built with ``weights=None``, its weights file (if any) loaded with
``kit.load_pretrained`` into the whole network (a file without the classifier, or with one for
other classes, is fine), then the classifier is replaced by the identity: the features are the
global-average-pooled penultimate activations (1280-d for MobileNetV2, 512 for ResNet-18, 2048
for ResNet-50/101). A registered
frugalcv model gives ``forward_features`` (else ``forward``), pooled over space when 4-D.
``pixels`` is no network at all: the resized frame, flattened (3·size² values).

Frames go in as uint8 [N, H, W, 3] on the device: to [0, 1] floats, resized to size x size
(bilinear, antialiased; the whole frame, aspect ratio not kept), normalised; all as whole-batch
tensor ops, then ``batch_size`` frames per forward under ``torch.no_grad`` and autocast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from frugalcv.errors import ConfigError
from frugalcv.sharding import storage
from frugalcv.workflows import kit
from frugalcv.workflows.video.params import PIXELS, TORCHVISION_HEADS, BackboneSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Pixels(nn.Module):
    """The ``pixels`` baseline: a frame's values as its features."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class PooledFeatures(nn.Module):
    """A registered model's features per image: ``forward_features`` or ``forward``, pooled when spatial."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net.forward_features(x) if hasattr(self.net, "forward_features") else self.net(x)
        if out.dim() == 4:
            out = out.mean(dim=(2, 3))
        return out.flatten(1)


def _torchvision(spec: BackboneSpec, load_weights: bool) -> nn.Module:
    import torchvision

    try:
        net = getattr(torchvision.models, spec.model)(weights=None, **spec.args)
    except TypeError as e:
        raise ConfigError(f"backbone {spec.model}: bad args {spec.args}: {e}") from None
    head = TORCHVISION_HEADS[spec.model]
    if spec.weights and load_weights:
        kit.load_pretrained(net, spec.weights, allow_missing=(f"{head}.",), allow_mismatch=(f"{head}.",))
    setattr(net, head, nn.Identity())
    return net


def build_network(spec: BackboneSpec, *, load_weights: bool = True) -> nn.Module:
    """The spec's feature network on the CPU, in eval mode and frozen: [N, 3, size, size] -> [N, D].

    ``load_weights=False`` skips the weights file (enough to know the feature size and FLOPs)."""
    if spec.model == PIXELS:
        net: nn.Module = Pixels()
    elif spec.model in TORCHVISION_HEADS:
        net = _torchvision(spec, load_weights)
    else:
        from frugalcv.models import build_model

        inner = build_model(spec.model, **spec.args)
        if spec.weights and load_weights:
            kit.load_pretrained(inner, spec.weights)
        net = PooledFeatures(inner)
    return net.eval().requires_grad_(False)


def prepare(frames_NHWC: torch.Tensor, size: int, normalize: str) -> torch.Tensor:
    """uint8 [N, H, W, 3] frames -> float [N, 3, size, size], in [0, 1] or ImageNet-normalised."""
    x = frames_NHWC.permute(0, 3, 1, 2).float().div_(255)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if normalize == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x


@torch.no_grad()
def feature_size(net: nn.Module, size: int) -> tuple[int, float]:
    """(feature dim D, GFLOPs per frame) at input ``size``: conv and linear layers, 2 FLOPs per
    multiply-add, as ``frugalcv.models.flops`` counts them (0 for ``pixels``)."""
    from frugalcv.models.flops import count_flops

    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dim = int(net(torch.zeros(1, 3, size, size, device=device)).shape[1])
    flops = count_flops(net, (3, size, size)) if param is not None else 0
    return dim, flops / 1e9


@dataclass
class Backbone:
    """A built backbone: its spec, network (on the device it runs on), feature dim and per-frame GFLOPs."""

    spec: BackboneSpec
    net: nn.Module
    dim: int
    gflops: float

    @classmethod
    def build(cls, spec: BackboneSpec, device: torch.device | str = "cpu", *, channels_last: bool = False,
              load_weights: bool = True) -> Backbone:
        net = build_network(spec, load_weights=load_weights).to(device)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        return cls(spec, net, *feature_size(net, spec.size))

    def record(self) -> dict:
        """The spec with its dim and per-frame GFLOPs, for the manifest (the weights URL redacted)."""
        weights = storage.redact(self.spec.weights) if self.spec.weights else None
        return {**self.spec.record(), "weights": weights, "dim": self.dim, "gflops": self.gflops}

    def embed(self, videos: list[np.ndarray], device: torch.device | str, *, batch_size: int,
              precision: str = "fp32", channels_last: bool = False) -> list[np.ndarray]:
        """float32 [T_i, D] features of each uint8 [T_i, H_i, W_i, 3] video; ``batch_size`` frames per forward."""
        device = torch.device(device)
        x = torch.cat([prepare(kit.to_device(torch.from_numpy(np.ascontiguousarray(v)), device), self.spec.size,
                               self.spec.normalize) for v in videos])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        parts = []
        with torch.no_grad(), kit.autocast(device, precision):
            for first in range(0, len(x), batch_size):
                parts.append(self.net(x[first:first + batch_size]).float())
        out = torch.cat(parts).cpu().numpy()
        return np.split(out, np.cumsum([len(v) for v in videos])[:-1])
