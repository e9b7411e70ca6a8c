"""Channel-wise alignment (AdaIN) and Gram matrices, DCAN's two feature statistics.

A source feature map takes the per-channel mean and standard deviation of its target(s):
``ĥ = σ(F_t)·(F_s − μ(F_s))/σ(F_s) + μ(F_t)``, statistics per sample and channel over H×W, with
the population variance and ``σ = sqrt(var + eps)``. A target batch may be ``k`` times the source
batch: source image ``j`` then takes the pooled statistics of targets ``j·k … j·k+k−1`` (the
statistics of all their pixels together), and ``k = 1`` is the plain formula.
"""

from __future__ import annotations

from torch import Tensor


def targets_per_source(content_batch: int, style_batch: int) -> int:
    """``k`` = style batch / content batch; anything but a positive whole multiple is an error."""
    if content_batch < 1 or style_batch % content_batch or style_batch < content_batch:
        raise ValueError(f"the target batch ({style_batch}) must be a whole multiple of the source batch "
                         f"({content_batch}): k target images per source image")
    return style_batch // content_batch


def channel_stats(x: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-sample, per-channel ``(mean, sqrt(var + eps))`` over H×W, each [B, C, 1, 1]."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), keepdim=True, correction=0)
    return mean, (var + eps).sqrt()


def pooled_stats(style: Tensor, batch: int, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """``(mean, std)`` [batch, C, 1, 1] of each run of ``k = len(style) / batch`` style samples.

    Pooled mean = mean of the k means; pooled variance = mean of the k variances + the variance
    of the k means (the variance of all their pixels, the samples having equal sizes).
    """
    k = targets_per_source(batch, style.shape[0])
    mean_i = style.mean(dim=(2, 3), keepdim=True).unflatten(0, (batch, k))
    var_i = style.var(dim=(2, 3), keepdim=True, correction=0).unflatten(0, (batch, k))
    mean = mean_i.mean(dim=1)
    var = var_i.mean(dim=1) + (mean_i - mean.unsqueeze(1)).square().mean(dim=1)
    return mean, (var + eps).sqrt()


def adain(content: Tensor, style: Tensor, eps: float = 1e-5) -> Tensor:
    """``content`` [B, C, H, W] re-normalised to the (pooled) channel statistics of ``style`` [k·B, C, H', W']."""
    content_mean, content_std = channel_stats(content, eps)
    style_mean, style_std = pooled_stats(style, content.shape[0], eps)
    return style_std * (content - content_mean) / content_std + style_mean


def pooled_mean(x: Tensor, batch: int) -> Tensor:
    """Mean over each run of ``k = len(x) / batch`` samples: [k·B, ...] -> [B, ...]."""
    k = targets_per_source(batch, x.shape[0])
    return x.unflatten(0, (batch, k)).mean(dim=1)


def gram(features: Tensor) -> Tensor:
    """Gram matrices ``F Fᵀ / (C·H·W)`` [B, C, C] of feature maps [B, C, H, W] (style statistics)."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)
