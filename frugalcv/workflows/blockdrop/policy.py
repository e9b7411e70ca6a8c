"""BlockDrop policy mathematics as pure tensor functions (dissertation Ch. 2).

Shapes: ``B`` images, ``K`` residual blocks. A policy ``u`` is a float {0,1} tensor
[B, K] where ``u[b, k] = 1`` keeps block k for image b.
"""

from __future__ import annotations

import torch

_EPS = 1e-7


def bound_probs(probs_BK: torch.Tensor, alpha: float) -> torch.Tensor:
    """Exploration bound s' = α·s + (1 − α)·(1 − s): keeps every probability in [1−α, α]."""
    return alpha * probs_BK + (1.0 - alpha) * (1.0 - probs_BK)


def sample_policy(probs_BK: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """u ~ Bernoulli(s), one independent decision per block."""
    return torch.bernoulli(probs_BK.detach(), generator=generator)


def greedy_policy(probs_BK: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """ũ = [s > threshold], the test-time policy and the self-critical baseline (Eq. 2.6)."""
    return (probs_BK.detach() > threshold).float()


def policy_reward(policy_BK: torch.Tensor, correct_B: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. 2.3: R(u) = 1 − (|u|₀ / K)² if the prediction is correct, else −γ.  Returns [B]."""
    num_blocks = policy_BK.shape[1]
    usage = policy_BK.detach().sum(dim=1) / num_blocks
    return torch.where(correct_B.bool(), 1.0 - usage**2, torch.full_like(usage, -float(gamma)))


def self_critical_advantage(reward_sampled_B: torch.Tensor, reward_greedy_B: torch.Tensor) -> torch.Tensor:
    """Eq. 2.6: A = R(u) − R(ũ); the greedy policy's reward is the baseline (no gradient)."""
    return (reward_sampled_B - reward_greedy_B).detach()


def policy_log_prob(probs_BK: torch.Tensor, policy_BK: torch.Tensor) -> torch.Tensor:
    """log π(u|x) per block: u·log s + (1 − u)·log(1 − s), shape [B, K]."""
    p = probs_BK.clamp(_EPS, 1.0 - _EPS)
    return policy_BK * torch.log(p) + (1.0 - policy_BK) * torch.log1p(-p)


def bernoulli_entropy(probs_BK: torch.Tensor) -> torch.Tensor:
    """H(s) = −s·log s − (1 − s)·log(1 − s) per block, shape [B, K]."""
    p = probs_BK.clamp(_EPS, 1.0 - _EPS)
    return -(p * torch.log(p) + (1.0 - p) * torch.log1p(-p))


def policy_gradient_loss(
    probs_BK: torch.Tensor,
    policy_BK: torch.Tensor,
    advantage_B: torch.Tensor,
    learned_mask_K: torch.Tensor | None = None,
    entropy_weight: float = 0.0,
) -> torch.Tensor:
    """REINFORCE surrogate of Eq. 2.6 over all K decisions at once, averaged over the batch.

    loss = −mean_b [ A_b · Σ_k m_k log π(u_bk) + β · Σ_k m_k H(s_bk) ]. ``probs_BK`` are the
    probabilities ``policy_BK`` was sampled from (the bounded ones); ``learned_mask_K``
    (curriculum, Alg. 1) zeroes the terms of blocks that are forced on.
    """
    log_prob = policy_log_prob(probs_BK, policy_BK)
    entropy = bernoulli_entropy(probs_BK)
    if learned_mask_K is not None:
        mask = learned_mask_K.to(log_prob.dtype).unsqueeze(0)
        log_prob, entropy = log_prob * mask, entropy * mask
    objective = advantage_B.detach() * log_prob.sum(dim=1) + entropy_weight * entropy.sum(dim=1)
    return -objective.mean()


# -- curriculum (Alg. 1) ----------------------------------------------------------------
def learned_blocks_at_epoch(epoch: int, num_blocks: int) -> int:
    """Curriculum schedule: epoch e learns the last min(1 + e, K) blocks.

    This is the reference code's schedule (the full policy is learned from epoch K − 1);
    Alg. 1's "last t blocks in epoch t" differs only by starting one epoch later.
    """
    return max(1, min(num_blocks, epoch + 1))


def curriculum_mask(num_blocks: int, learned: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Bool [K]: True for the last ``learned`` blocks (sampled and learned), False for the first
    K − learned (forced on, no gradient)."""
    mask = torch.zeros(num_blocks, dtype=torch.bool, device=device)
    if learned > 0:
        mask[num_blocks - min(learned, num_blocks):] = True
    return mask


def apply_curriculum(policy_BK: torch.Tensor, learned_mask_K: torch.Tensor) -> torch.Tensor:
    """Force every block outside the learned set on: u_k = 1 where the mask is False."""
    return torch.where(learned_mask_K.unsqueeze(0), policy_BK, torch.ones_like(policy_BK))


def blocks_kept(policy_BK: torch.Tensor) -> torch.Tensor:
    """|u|₀ per image, shape [B]."""
    return policy_BK.detach().sum(dim=1)
