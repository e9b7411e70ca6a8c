"""AdaFrame (adaptive frame selection for fast video recognition, Ch. 3): networks and maths.

``maths``: margins, rewards, returns, lookahead stop, positional encoding (Eqs. 3.3-3.6);
``net``: the memory-augmented LSTM with its prediction, selection and utility heads (Eqs. 3.1, 3.7);
``baselines``: AVGPOOLING and LSTM over K uniformly or randomly sampled frames; ``flops``: per-step cost.
"""

from frugalcv.models.adaframe.baselines import (
    AvgPoolClassifier,
    LSTMClassifier,
    avgpool_classifier,
    gather_frames,
    lstm_classifier,
    sample_frames,
)
from frugalcv.models.adaframe.flops import adaframe_flops
from frugalcv.models.adaframe.maths import (
    discounted_returns,
    lookahead_stop,
    margins,
    positional_encoding,
    rewards,
)
from frugalcv.models.adaframe.net import AdaFrameNet, Rollout, adaframe_lstm, adaptive_prediction

__all__ = ["AdaFrameNet", "AvgPoolClassifier", "LSTMClassifier", "Rollout", "adaframe_flops", "adaframe_lstm",
           "adaptive_prediction", "avgpool_classifier", "discounted_returns", "gather_frames", "lookahead_stop",
           "lstm_classifier", "margins", "positional_encoding", "rewards", "sample_frames"]
