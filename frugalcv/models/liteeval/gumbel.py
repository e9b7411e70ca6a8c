"""LiteEval's binary gate: a straight-through Gumbel-softmax sample of "read the fine frame or not".

With ``g_i ~ Gumbel(0, 1)``, the soft sample is ``softmax((b + g) / τ)`` (Eqs. 4.6–4.7). The hard
decision is its argmax, i.e. the Gumbel-max trick, so at any ``τ`` it is an exact sample of
``Categorical(softmax(b))``; ``τ`` only shapes the backward pass, which goes through the soft sample
(low ``τ``: close to the hard decision but high-variance gradients; training anneals it down).
"""

from __future__ import annotations

import torch
from torch import Tensor

FINE = 1  # index of "read the fine frame" in the gate's two logits; 0 is "skip"


def gumbel_noise(shape: torch.Size, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard Gumbel samples ``−log(−log U)``, U clamped away from 0 and 1 so no sample is infinite."""
    tiny = torch.finfo(like.dtype).tiny
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return -torch.log(-torch.log(u.clamp(min=tiny, max=1.0 - torch.finfo(like.dtype).eps)))


def gumbel_softmax_decision(
    logits_B2: Tensor,
    tau: float,
    *,
    hard: bool = True,
    generator: torch.Generator | None = None,
    noise_scale: float = 1.0,
) -> Tensor:
    """Per-row decision [B]: 1 = read the fine frame. ``hard``: forward value in {0, 1} (the sample's
    argmax), gradient of the soft sample (straight-through); otherwise the soft probability itself.

    ``noise_scale`` < 1 shrinks the Gumbel noise (the public code uses 0.5); then the hard samples are
    no longer exact categorical samples of ``softmax(logits)``.
    """
    if logits_B2.dim() != 2 or logits_B2.shape[1] != 2:
        raise ValueError(f"gate logits must have shape [B, 2] (skip, fine), got {tuple(logits_B2.shape)}")
    if not tau > 0:
        raise ValueError(f"Gumbel-softmax temperature tau must be > 0, got {tau}")
    noisy = logits_B2 + noise_scale * gumbel_noise(logits_B2.shape, logits_B2, generator)
    soft = torch.softmax(noisy / tau, dim=1)[:, FINE]
    if not hard:
        return soft
    decision = (noisy.argmax(dim=1) == FINE).to(soft.dtype)
    return decision + (soft - soft.detach())  # forward: exactly the decision; backward: d soft


def hard_decision(logits_B2: Tensor) -> Tensor:
    """Evaluation gate [B]: the argmax of the logits (no noise), 1 = read fine; no gradient."""
    return (logits_B2.detach().argmax(dim=1) == FINE).to(logits_B2.dtype)
