"""Residual blocks that can be dropped: each exposes its shortcut and its residual branch.

A block computes ``out = relu(residual(x) + shortcut(x))``. BlockDrop's per-image decision
``keep`` replaces a dropped block by its shortcut, so a dropped identity block passes its input
through unchanged and a dropped downsampling block still runs its (cheap) shortcut so that the
next block sees the right shape, as in the official code.

Parameter names follow torchvision (``conv1``, ``bn1``, ..., ``downsample.0``/``downsample.1``)
so ImageNet state dicts load directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Parameter-free CIFAR shortcut: ``stride``x``stride`` average pooling, then zero channels.

    The pooling runs as a depthwise convolution with fixed weights 1/stride^2 (a non-persistent
    buffer, so state dicts are unchanged): the same sums as ``F.avg_pool2d`` (bit-identical on
    CPU), but oneDNN's kernel is about 3x faster than aten's NCHW pooling, which matters because
    a dropped downsampling block still runs its shortcut. No FLOPs are counted for it.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(f"ZeroPadShortcut cannot shrink channels ({in_ch} -> {out_ch})")
        self.extra_channels = out_ch - in_ch
        self.stride = stride
        self.in_channels = in_ch
        weight = torch.full((in_ch, 1, stride, stride), 1.0 / (stride * stride))
        self.register_buffer("pool_weight", weight, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.conv2d(x, self.pool_weight.to(x.dtype), stride=self.stride, groups=self.in_channels)
        if self.extra_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return x


def conv_shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """torchvision's projection shortcut: 1x1 conv (strided) + BN."""
    return nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))


def mix_kept(keep_B: torch.Tensor, out: torch.Tensor, skipped: torch.Tensor) -> torch.Tensor:
    """Per row: ``out`` where the block is kept, ``skipped`` (its shortcut) where dropped.

    Bool masks select; float masks blend as ``keep*out + (1-keep)*skipped``, which is exactly
    ``out`` for ``keep == 1`` (``1*a + 0*b == a`` in floating point).
    """
    k = keep_B.reshape(-1, 1, 1, 1)
    if k.dtype == torch.bool:
        return torch.where(k, out, skipped)
    k = k.to(out.dtype)
    return out * k + skipped * (1 - k)


class DroppableBlock(nn.Module):
    """Common interface; subclasses define ``residual`` and set ``downsample``."""

    downsample: nn.Module | None

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.downsample is None else self.downsample(x)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Block output; with ``keep`` ([B]), dropped rows get the shortcut instead."""
        skipped = self.shortcut(x)
        out = self.residual(x)
        out += skipped
        out = F.relu(out, inplace=True)
        return out if keep is None else mix_kept(keep, out, skipped)

    def residual_modules(self) -> list[nn.Module]:
        """Modules that run only when the block is kept (everything but the shortcut)."""
        shortcut = set() if self.downsample is None else {id(m) for m in self.downsample.modules()}
        return [m for m in self.modules() if id(m) not in shortcut]


class BasicBlock(DroppableBlock):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR ResNets)."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1, shortcut: str = "conv"):
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = conv3x3(in_ch, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = make_shortcut(shortcut, in_ch, out_ch, stride)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class Bottleneck(DroppableBlock):
    """1x1 -> 3x3 (strided, torchvision's "v1.5") -> 1x1 with 4x expansion (ResNet-50/101)."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1, shortcut: str = "conv"):
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = conv1x1(in_ch, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_shortcut(shortcut, in_ch, out_ch, stride)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


def make_shortcut(kind: str, in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    """None (identity) when shapes match, else a ``"zero_pad"`` or ``"conv"`` shortcut."""
    if stride == 1 and in_ch == out_ch:
        return None
    if kind == "zero_pad":
        return ZeroPadShortcut(in_ch, out_ch, stride)
    if kind == "conv":
        return conv_shortcut(in_ch, out_ch, stride)
    raise ValueError(f"unknown shortcut kind {kind!r}; allowed: 'zero_pad', 'conv'")
