"""AdaFrame's network: an LSTM that reads one frame per step and chooses where to look next (Ch. 3).

Per step t: the global context u_t = β_tᵀ M attends over a memory M of T_d coarse features sampled
uniformly from the video (positional encoding added, β_t from h_{t−1}); the LSTM reads
[v_t, u_t] (Eq. 3.1); from h_t the prediction net gives class scores s_t, the utility net V̂_t and
the selection net a_t ∈ [0, 1], the mean of the next location ℓ ~ N(a_t, σ²) (a_t at test).
The first frame read is the middle one (location 0.5). Features are precomputed per frame;
padded frames (index ≥ ``lengths[b]``) are never read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from frugalcv.errors import ConfigError
from frugalcv.models.adaframe.maths import (
    discounted_returns,
    gaussian_log_prob,
    location_to_index,
    lookahead_stop,
    margins,
    positional_encoding,
    rewards,
    uniform_indices,
)
from frugalcv.models.registry import register_model

FIRST_LOCATION = 0.5  # the fixed first glimpse: the middle frame


@dataclass
class Rollout:
    """One pass of ``steps`` glimpses over a batch.

    ``logits`` [B, T, C] and ``values`` (V̂_t) [B, T] come from h_t; ``locations`` [B, T] are the
    frame indices read at each step; ``log_probs`` [B, T] is log π of the location chosen at step t
    (read at t + 1), 0 at the last step, which chooses nothing; ``mask`` [B, T] is False on the
    steps a video shorter than ``steps`` frames does not take (t ≥ its length).
    """

    logits: torch.Tensor
    values: torch.Tensor
    log_probs: torch.Tensor
    locations: torch.Tensor
    mask: torch.Tensor

    def last_step(self) -> torch.Tensor:
        """Index of each video's last valid step, [B] long."""
        return (self.mask.long().sum(dim=1) - 1).clamp(min=0)


class AdaFrameNet(nn.Module):
    """LSTM (hidden), memory attention and the prediction / selection / utility heads."""

    def __init__(
        self,
        feature_dim: int,
        memory_dim: int,
        num_classes: int,
        hidden: int = 2048,
        memory_frames: int = 16,
        pe_dim: int | None = None,
        sigma: float = 0.1,
    ):
        super().__init__()
        pe_dim = memory_dim if pe_dim is None else pe_dim
        if not 0 <= pe_dim <= memory_dim:
            raise ConfigError(f"pe_dim={pe_dim} must be in [0, memory_dim={memory_dim}] (it is added to the memory)")
        if sigma <= 0:
            raise ConfigError(f"sigma={sigma} must be > 0 (the std of the location policy)")
        self.feature_dim, self.memory_dim, self.num_classes = feature_dim, memory_dim, num_classes
        self.hidden, self.memory_frames, self.pe_dim, self.sigma = hidden, memory_frames, pe_dim, sigma
        self.lstm = nn.LSTMCell(feature_dim + memory_dim, hidden)
        self.attend = nn.Linear(hidden, memory_dim)  # W_h
        self.classify = nn.Linear(hidden, num_classes)  # f_p
        self.select = nn.Linear(hidden, 1)  # f_s, W_s
        self.utility = nn.Linear(hidden, 1)  # f_u, W_u

    def memory(self, memory_features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """M: T_d coarse features sampled uniformly over each video's own length, plus PE, [B, T_d, Dm]."""
        idx_BK = uniform_indices(lengths, self.memory_frames)
        mem = memory_features.gather(1, idx_BK.unsqueeze(-1).expand(-1, -1, memory_features.shape[-1]))
        if self.pe_dim:
            positions = idx_BK.to(mem.dtype) / (lengths - 1).clamp(min=1).to(mem.dtype).unsqueeze(1)
            pe = positional_encoding(positions, self.pe_dim).to(mem.dtype)
            mem = mem + F.pad(pe, (0, self.memory_dim - self.pe_dim))
        return mem

    def forward(
        self,
        features: torch.Tensor,
        lengths: torch.Tensor,
        memory_features: torch.Tensor,
        steps: int,
        *,
        sample: bool,
        generator: torch.Generator | None = None,
    ) -> Rollout:
        """Glimpse ``steps`` frames of ``features`` [B, N, D] (``lengths`` [B] valid frames each).

        ``memory_features`` [B, N, Dm] are the coarse per-frame features for the memory;
        ``sample`` draws ℓ ~ N(a_t, σ²) (training), else ℓ = a_t (test).
        """
        self._check(features, lengths, memory_features, steps)
        batch = features.shape[0]
        rows = torch.arange(batch, device=features.device)
        mem_BKD = self.memory(memory_features, lengths)
        h = features.new_zeros(batch, self.hidden)
        c = features.new_zeros(batch, self.hidden)
        idx_B = location_to_index(features.new_full((batch,), FIRST_LOCATION), lengths)
        logits, values, log_probs, locations = [], [], [], []
        for t in range(steps):
            locations.append(idx_B)
            beta_BK = torch.softmax(torch.einsum("bd,bkd->bk", self.attend(h), mem_BKD), dim=1)
            u_BD = torch.einsum("bk,bkd->bd", beta_BK, mem_BKD)
            h, c = self.lstm(torch.cat([features[rows, idx_B], u_BD], dim=1), (h, c))  # Eq. 3.1
            logits.append(self.classify(h))
            values.append(self.utility(h).squeeze(-1))
            if t == steps - 1:
                log_probs.append(h.new_zeros(batch))
                break
            a_B = torch.sigmoid(self.select(h).squeeze(-1))
            loc_B = a_B.detach()
            if sample:
                noise = torch.randn(batch, generator=generator, device=a_B.device, dtype=a_B.dtype)
                loc_B = loc_B + self.sigma * noise
            log_probs.append(gaussian_log_prob(loc_B, a_B, self.sigma))
            idx_B = location_to_index(loc_B, lengths)
        mask = torch.arange(steps, device=features.device).unsqueeze(0) < lengths.unsqueeze(1)
        return Rollout(
            logits=torch.stack(logits, dim=1),
            values=torch.stack(values, dim=1),
            log_probs=torch.stack(log_probs, dim=1),
            locations=torch.stack(locations, dim=1),
            mask=mask,
        )

    def loss(
        self, rollout: Rollout, labels: torch.Tensor, gamma: float = 0.9, lam: float = 1.0,
        cls_all_steps: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Eq. 3.7: L_cls + λ·L_util − λ·J_sel, with its parts and the mean total reward (for logging).

        L_cls: cross-entropy at each video's last step (Eq. 3.2; ``cls_all_steps`` averages it over
        the valid steps); L_util: MSE of V̂_t on R_t (Eq. 3.6); J_sel: REINFORCE
        Σ_t log π(ℓ|h_t)·(R_t − V̂_t), batch mean, with V̂ as baseline (no gradient through it).
        """
        mask = rollout.mask
        rows = torch.arange(labels.shape[0], device=labels.device)
        if cls_all_steps:
            ce_BT = F.cross_entropy(rollout.logits.transpose(1, 2), labels.unsqueeze(1).expand_as(mask),
                                    reduction="none")
            cls = (ce_BT * mask).sum() / mask.sum().clamp(min=1)
        else:
            cls = F.cross_entropy(rollout.logits[rows, rollout.last_step()], labels)
        r_BT = rewards(margins(rollout.logits.detach().softmax(dim=-1), labels), mask)
        returns_BT = discounted_returns(r_BT, gamma, mask)
        util = ((rollout.values - returns_BT) ** 2 * mask).sum() / mask.sum().clamp(min=1)
        acted_BT = F.pad(mask[:, 1:], (0, 1), value=False)  # a choice is scored only if its frame is read
        advantage_BT = (returns_BT - rollout.values).detach()
        sel = (rollout.log_probs * advantage_BT * acted_BT).sum(dim=1).mean()
        return {
            "loss": cls + lam * util - lam * sel,
            "cls": cls,
            "util": util,
            "sel": sel,
            "reward": r_BT.sum(dim=1).mean(),
        }

    def _check(self, features, lengths, memory_features, steps) -> None:
        if features.shape[-1] != self.feature_dim or memory_features.shape[-1] != self.memory_dim:
            raise ConfigError(
                f"features [B, N, {features.shape[-1]}] / memory_features [B, N, {memory_features.shape[-1]}] "
                f"do not match feature_dim={self.feature_dim} / memory_dim={self.memory_dim}"
            )
        if steps < 1:
            raise ConfigError(f"steps={steps} must be >= 1")
        if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > features.shape[1]
                                or int(lengths.max()) > memory_features.shape[1]):
            raise ConfigError(
                f"lengths must be in [1, N={features.shape[1]}] (memory N={memory_features.shape[1]}); "
                f"got {lengths.tolist()}"
            )


def adaptive_prediction(rollout: Rollout, margin: float, patience: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive lookahead inference on a (test) rollout: (logits [B, C] at the stop step, stop step [B])."""
    stop_B = lookahead_stop(rollout.values, margin, patience, rollout.mask)
    rows = torch.arange(stop_B.shape[0], device=stop_B.device)
    return rollout.logits[rows, stop_B], stop_B


@register_model
def adaframe_lstm(
    *,
    feature_dim: int | None = None,
    memory_dim: int | None = None,
    num_classes: int | None = None,
    hidden: int | None = None,
    memory_frames: int | None = None,
    debug: bool = False,
) -> AdaFrameNet:
    """AdaFrame LSTM (2048 hidden) over ResNet features (2048), 16-frame MobileNet memory (1280), 239 classes."""
    # full size: FCVID with ResNet-101 frame features and a MobileNetV2 memory; debug: a tiny flavour
    return AdaFrameNet(
        feature_dim or (12 if debug else 2048),
        memory_dim or (8 if debug else 1280),
        num_classes or (5 if debug else 239),
        hidden=hidden or (16 if debug else 2048),
        memory_frames=memory_frames or (4 if debug else 16),
    )
