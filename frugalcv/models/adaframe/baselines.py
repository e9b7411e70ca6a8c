"""AdaFrame's baselines over K precomputed frame features: AVGPOOLING and an LSTM.

Frames are picked with ``sample_frames`` (uniformly, U, or at random, R) and gathered with
``gather_frames``; both classifiers take features [B, N, D] with ``lengths`` [B] valid frames
and never read the padding.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from frugalcv.errors import ConfigError
from frugalcv.models.adaframe.maths import uniform_indices
from frugalcv.models.registry import register_model


def sample_frames(
    lengths: torch.Tensor, k: int, mode: Literal["uniform", "random"], generator: torch.Generator | None = None
) -> torch.Tensor:
    """k frame indices per video, [B, k] long, each < its length.

    ``uniform``: the centres of k equal segments; ``random``: k independent uniform draws, sorted
    so that an LSTM reads them in temporal order (repeats when a video has fewer than k frames).
    """
    if k < 1:
        raise ConfigError(f"k={k} must be >= 1 frames")
    if mode == "uniform":
        return uniform_indices(lengths, k)
    if mode == "random":
        u = torch.rand(lengths.shape[0], k, generator=generator, device=lengths.device, dtype=torch.float64)
        idx = (u * lengths.to(torch.float64).unsqueeze(1)).floor().long()
        return torch.minimum(idx, (lengths - 1).clamp(min=0).unsqueeze(1)).sort(dim=1).values
    raise ConfigError(f"unknown frame sampling mode {mode!r}; use 'uniform' or 'random'")


def gather_frames(features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """features [B, N, D] at ``indices`` [B, k] -> [B, k, D]."""
    return features.gather(1, indices.unsqueeze(-1).expand(-1, -1, features.shape[-1]))


def valid_mask(lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
    """[B, N] True on each video's first ``lengths[b]`` frames."""
    return torch.arange(num_frames, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


class AvgPoolClassifier(nn.Module):
    """AVGPOOLING: the mean feature over the valid frames, then one linear layer."""

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(feature_dim, num_classes)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits [B, C]."""
        mask = valid_mask(lengths, features.shape[1]).unsqueeze(-1)
        mean = torch.where(mask, features, 0.0).sum(dim=1) / lengths.clamp(min=1).unsqueeze(1).to(features.dtype)
        return self.fc(mean)


class LSTMClassifier(nn.Module):
    """A one-layer LSTM over the frames; a linear layer on the hidden state after the last valid frame."""

    def __init__(self, feature_dim: int, num_classes: int, hidden: int = 1024):
        super().__init__()
        self.lstm = nn.LSTM(feature_dim, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits [B, C]."""
        packed = pack_padded_sequence(features, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)
        return self.fc(h_n[-1])


@register_model
def avgpool_classifier(
    *, feature_dim: int | None = None, num_classes: int | None = None, debug: bool = False
) -> AvgPoolClassifier:
    """AVGPOOLING baseline: mean of K frame features (2048) -> linear to 239 classes."""
    return AvgPoolClassifier(feature_dim or (12 if debug else 2048), num_classes or (5 if debug else 239))


@register_model
def lstm_classifier(
    *, feature_dim: int | None = None, num_classes: int | None = None, hidden: int | None = None,
    debug: bool = False,
) -> LSTMClassifier:
    """LSTM baseline: a 1024-unit LSTM over K frame features (2048) -> linear to 239 classes."""
    return LSTMClassifier(
        feature_dim or (12 if debug else 2048), num_classes or (5 if debug else 239), hidden or (16 if debug else 1024)
    )
