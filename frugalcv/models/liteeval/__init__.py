"""LiteEval (coarse-to-fine video recognition over pre-extracted features): the networks and their maths.

``gumbel``: the straight-through Gumbel-softmax gate; ``net``: the coarse/fine LSTMs, Eq. 4.5's loss;
``baselines``: forced gate patterns and the online prediction; ``flops``: per-step multiply-adds.
"""

from frugalcv.models.liteeval.baselines import (
    always_fine_decisions,
    online_logits,
    online_step,
    seq_k_decisions,
    uniform_k_decisions,
)
from frugalcv.models.liteeval.flops import liteeval_flops, lstm_cell_macs, video_macs
from frugalcv.models.liteeval.gumbel import gumbel_softmax_decision, hard_decision
from frugalcv.models.liteeval.net import LiteEvalNet, Output, liteeval_lstm, valid_mask

__all__ = ["LiteEvalNet", "Output", "always_fine_decisions", "gumbel_softmax_decision", "hard_decision",
           "liteeval_flops", "liteeval_lstm", "lstm_cell_macs", "online_logits", "online_step",
           "seq_k_decisions", "uniform_k_decisions", "valid_mask", "video_macs"]
