"""AdaFrame's per-step cost in multiply-adds, the unit its paper reports as "FLOPs".

Counted: the LSTM cell's input and recurrent matrices, the memory attention (W_h, the T_d scores
and the weighted sum) and the three heads (prediction, selection, utility). Not counted: biases,
activations and the backbones that make the features (a ResNet per glimpsed frame, the light CNN
over the T_d memory frames), which a caller adds from ``frugalcv.models.flops``. That module counts
2 FLOPs per multiply-add; pass ``flops_per_mac=2`` to use its convention.
"""

from __future__ import annotations


def adaframe_flops(
    hidden: int, feature_dim: int, memory_dim: int, memory_frames: int, num_classes: int,
    flops_per_mac: int = 1,
) -> float:
    """Multiply-adds (times ``flops_per_mac``) of one AdaFrame step, for one video."""
    lstm = 4 * hidden * (feature_dim + memory_dim + hidden)  # four gates over [v_t, u_t] and h_{t-1}
    attention = hidden * memory_dim + 2 * memory_frames * memory_dim  # W_h h, scores, β_tᵀ M
    heads = hidden * (num_classes + 2)  # f_p, f_s, f_u
    return float(flops_per_mac * (lstm + attention + heads))
