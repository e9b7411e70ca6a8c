"""AdaFrame mathematics as pure tensor functions (dissertation Ch. 3).

Shapes: ``B`` videos, ``T`` time steps of the rollout, ``C`` classes, ``N`` (padded) frames.
A step mask ``mask_BT`` is True on the steps a video actually took; every function treats the
masked steps as absent (no reward, no return, no stop there).
"""

from __future__ import annotations

import math

import torch


def margins(probs_BTC: torch.Tensor, labels_B: torch.Tensor) -> torch.Tensor:
    """Eq. 3.3's margin m_t = s_t^gt − max_{c≠gt} s_t^c, from the class probabilities.  Returns [B, T]."""
    num_classes = probs_BTC.shape[-1]
    labels_BT1 = labels_B.view(-1, 1, 1).expand(-1, probs_BTC.shape[1], 1)
    true_BT = probs_BTC.gather(-1, labels_BT1).squeeze(-1)
    is_true_BTC = torch.nn.functional.one_hot(labels_B, num_classes).bool().unsqueeze(1)
    best_other_BT = probs_BTC.masked_fill(is_true_BTC, -math.inf).amax(dim=-1)
    return true_BT - best_other_BT


def rewards(margins_BT: torch.Tensor, mask_BT: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 3.3: r_t = max{0, m_t − max_{t'<t} m_t'}, the gain over the best margin so far.

    The first step has nothing to improve on and gets r_1 = 0 (the return then counts only what
    the selected frames add); masked steps get 0 and never set the running maximum.
    """
    m_BT = margins_BT.detach()
    if mask_BT is not None:
        m_BT = m_BT.masked_fill(~mask_BT, -math.inf)
    best_so_far_BT = m_BT.cummax(dim=1).values
    previous_best_BT = torch.cat([torch.full_like(m_BT[:, :1], math.inf), best_so_far_BT[:, :-1]], dim=1)
    r_BT = (m_BT - previous_best_BT).clamp(min=0.0)
    r_BT = torch.nan_to_num(r_BT, nan=0.0)  # -inf - -inf on masked steps
    if mask_BT is not None:
        r_BT = r_BT.masked_fill(~mask_BT, 0.0)
    return r_BT


def discounted_returns(
    rewards_BT: torch.Tensor, gamma: float = 0.9, mask_BT: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 3.5: R_t = Σ_{t'≥t} γ^{t'−t} r_t' (masked steps count 0 and have R = 0).  Returns [B, T]."""
    r_BT = rewards_BT.detach()
    if mask_BT is not None:
        r_BT = r_BT.masked_fill(~mask_BT, 0.0)
    returns = torch.zeros_like(r_BT)
    running_B = torch.zeros_like(r_BT[:, 0])
    for t in range(r_BT.shape[1] - 1, -1, -1):
        running_B = r_BT[:, t] + gamma * running_B
        returns[:, t] = running_B
    if mask_BT is not None:
        returns = returns.masked_fill(~mask_BT, 0.0)
    return returns


def lookahead_stop(
    values_BT: torch.Tensor, margin: float, patience: int, mask_BT: torch.Tensor | None = None
) -> torch.Tensor:
    """Adaptive lookahead inference: the 0-based step to stop at, [B] long.

    A step t counts when the best utility so far beats the current one by more than ``margin``
    (max_{t'≤t} V̂_t' − V̂_t > μ); stop at the first step where the count exceeds ``patience``,
    otherwise at the last (valid) step.
    """
    v_BT = values_BT.detach()
    num_steps = v_BT.shape[1]
    counts_BT = ((v_BT.cummax(dim=1).values - v_BT) > margin).long().cumsum(dim=1)
    over_BT = counts_BT > patience
    last_B = torch.full_like(v_BT[:, 0], num_steps - 1, dtype=torch.long)
    if mask_BT is not None:
        last_B = (mask_BT.long().sum(dim=1) - 1).clamp(min=0)
        over_BT = over_BT & mask_BT
    steps_T = torch.arange(num_steps, device=v_BT.device)
    first_B = torch.where(over_BT, steps_T, num_steps).amin(dim=1)
    return torch.minimum(first_B, last_B)


def positional_encoding(positions_01: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal encoding of relative positions in [0, 1] (a frame's place in its video), [B, N, dim].

    The Transformer's PE at position ``p·scale``: PE_2i = sin(p·scale / 10000^(2i/dim)),
    PE_2i+1 = cos(same); ``scale`` stretches [0, 1] over as many "frames" as the sinusoids resolve.
    """
    pos_BN1 = (positions_01.to(torch.float32) * scale).unsqueeze(-1)
    pair = torch.arange(0, dim, 2, dtype=torch.float32, device=positions_01.device)
    angles_BNK = pos_BN1 * torch.exp(-math.log(10000.0) * pair / dim)
    pe = torch.stack([angles_BNK.sin(), angles_BNK.cos()], dim=-1).flatten(-2)
    return pe[..., :dim]


def uniform_indices(lengths_B: torch.Tensor, k: int) -> torch.Tensor:
    """k frame indices per video at the centres of k equal segments of its own length, [B, k] long."""
    centres_K = (torch.arange(k, dtype=torch.float64, device=lengths_B.device) + 0.5) / k
    idx_BK = (centres_K.unsqueeze(0) * lengths_B.to(torch.float64).unsqueeze(1)).floor().long()
    return torch.minimum(idx_BK, (lengths_B - 1).clamp(min=0).unsqueeze(1))


def location_to_index(location_B: torch.Tensor, lengths_B: torch.Tensor) -> torch.Tensor:
    """A location in [0, 1] (clamped) to a frame index round(ℓ·(L − 1)) < L, [B] long."""
    last_B = (lengths_B - 1).clamp(min=0).to(location_B.dtype)
    return torch.round(location_B.detach().clamp(0.0, 1.0) * last_B).long()


def gaussian_log_prob(sample_B: torch.Tensor, mean_B: torch.Tensor, sigma: float) -> torch.Tensor:
    """log N(sample; mean, σ²), differentiable in ``mean`` only (the sample is an action)."""
    z = (sample_B.detach() - mean_B) / sigma
    return -0.5 * z**2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
