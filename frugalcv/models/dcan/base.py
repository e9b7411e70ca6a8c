"""A segmentation network split into an encoder ``f_seg`` and a decoder ``g_seg`` for DCAN.

The network is a chain of groups (conv blocks, ResNet stages); ``align_at`` names the group after
which it splits. In training with target images, ``p = g_seg(AdaIN(f_seg(x̂_s), f_seg(x_t)))``;
in eval mode, or without a target, ``p = g_seg(f_seg(x))``. Skips that leave the encoder before
the split reach the decoder unaligned; the split output is aligned, and the decoder uses the
aligned tensor wherever it uses that group's output (a skip from the split group included).

Source and target go through the encoder in one call (concatenated) when their images have the
same size, so BatchNorm normalises and tracks statistics of both domains; images of different
sizes go through separately.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from frugalcv.errors import ConfigError
from frugalcv.models.dcan.align import adain


class SegNet(nn.Module):
    """Subclasses set ``backbone``, ``group_names`` and ``skip_groups`` and define ``run_group`` and ``head``."""

    num_classes: int
    align_at: int
    backbone: nn.Module
    group_names: tuple[str, ...]      # group g (1-based) is group_names[g - 1]
    skip_groups: tuple[int, ...] = ()  # groups whose outputs the head reads besides the last one

    def __init__(self, num_classes: int, align_at: int, eps: float = 1e-5):
        super().__init__()
        self.num_classes = num_classes
        self.eps = eps
        n = len(self.group_names)
        if not isinstance(align_at, int) or isinstance(align_at, bool) or not 1 <= align_at <= n:
            names = ", ".join(f"{g}={name}" for g, name in enumerate(self.group_names, 1))
            raise ConfigError(f"{type(self).__name__}: align_at={align_at!r} is not a group to split after; "
                              f"allowed: 1..{n} ({names})")
        self.align_at = align_at

    def run_group(self, group: int, x: Tensor) -> Tensor:
        """Group ``group``'s output from the previous group's (the image for group 1)."""
        raise NotImplementedError

    def head(self, taps: dict[int, Tensor]) -> Tensor:
        """Logits at the network's output stride from ``taps`` (the skip groups and the last group)."""
        raise NotImplementedError

    def _kept(self) -> list[int]:
        return [g for g in self.skip_groups if g < self.align_at] + [self.align_at]

    def encode(self, x: Tensor) -> list[Tensor]:
        """``f_seg``: the outputs of the skip groups before the split, then the split output (last)."""
        feats = []
        for g in range(1, self.align_at + 1):
            x = self.run_group(g, x)
            if g in self.skip_groups and g < self.align_at:
                feats.append(x)
        feats.append(x)
        return feats

    def decode(self, feats: list[Tensor], size: tuple[int, int]) -> Tensor:
        """``g_seg``: logits [B, num_classes, *size] (bilinear upsampling) from ``encode``'s list."""
        taps = dict(zip(self._kept(), feats, strict=True))
        x = feats[-1]
        last = len(self.group_names)
        for g in range(self.align_at + 1, last + 1):
            x = self.run_group(g, x)
            if g in self.skip_groups or g == last:
                taps[g] = x
        logits = self.head(taps)
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)

    def forward(self, x: Tensor, target: Tensor | None = None) -> Tensor:
        """Logits for ``x``; in training mode with ``target`` [k·B, ...], aligned at the split."""
        size = x.shape[-2:]
        if target is None or not self.training:
            return self.decode(self.encode(x), size)
        if target.shape[-2:] == size:
            both = self.encode(torch.cat([x, target]))
            source = [f[: x.shape[0]] for f in both]
            split_target = both[-1][x.shape[0]:]
        else:
            source = self.encode(x)
            split_target = self.encode(target)[-1]
        return self.decode(source[:-1] + [adain(source[-1], split_target, self.eps)], size)
