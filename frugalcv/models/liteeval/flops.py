"""Per-step compute of LiteEval's recurrent part, in multiply-adds (MACs), for a stage's GFLOPs accounting.

An LSTM cell with input I and hidden H costs ``4H·(I + H)`` MACs (its two gate matmuls; biases and the
element-wise ops are not counted), a linear layer ``in·out``. Per video of T valid steps with R fine reads:

    MACs = T·every_step + R·fine_read + classifier        (one offline prediction)

plus the CNNs that produce the features (the public code adds 0.08 G per step for MobileNetV2 at 112
and 7.82 G per fine read for ResNet-101 at 224). The house FLOPs count (``models/flops.py``) is 2 × MACs.
"""

from __future__ import annotations


def lstm_cell_macs(input_size: int, hidden: int) -> int:
    """MACs of one ``nn.LSTMCell`` step: ``W_ih x + W_hh h`` for the four gates."""
    return 4 * hidden * (input_size + hidden)


def liteeval_flops(coarse_dim: int, fine_dim: int, coarse_hidden: int, fine_hidden: int,
                   num_classes: int) -> dict[str, int]:
    """Per-step MACs: ``coarse_lstm`` + ``gate`` (= ``every_step``, run at each valid step), ``fine_read``
    (the fine LSTM, run when B_t = 1) and ``classifier`` (once per prediction)."""
    coarse = lstm_cell_macs(coarse_dim, coarse_hidden)
    gate = 2 * (coarse_dim + 2 * fine_hidden)  # Eq. 4.2 on [v_t^c, h_{t-1}^f, c_{t-1}^f]
    return {
        "coarse_lstm": coarse,
        "gate": gate,
        "every_step": coarse + gate,
        "fine_read": lstm_cell_macs(coarse_dim + fine_dim, fine_hidden),
        "classifier": fine_hidden * num_classes,
    }


def video_macs(costs: dict[str, int], steps: float, fine_reads: float, predictions: int = 1) -> float:
    """MACs of one video from ``liteeval_flops``'s costs: ``steps`` valid steps, ``fine_reads`` reads."""
    return steps * costs["every_step"] + fine_reads * costs["fine_read"] + predictions * costs["classifier"]
