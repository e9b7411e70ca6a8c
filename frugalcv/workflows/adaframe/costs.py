"""GFLOPs per video of AdaFrame and its baselines, 2 FLOPs per multiply-add (as ``video.extract``
counts the backbones; the dissertation counts multiply-adds, so its figures are half of these).

AdaFrame: the fine backbone on every glimpsed frame, the coarse one on the T_d memory frames, and
one LSTM step (cell, memory attention, three heads; ``adaframe_flops``) per glimpse. A frame glimpsed
twice is charged twice. AVGPOOLING: the fine backbone on its K frames and the linear layer; the
LSTM baseline: the fine backbone and one LSTM step per frame, then its linear layer.
"""

from __future__ import annotations

import numpy as np

from frugalcv.models.adaframe import adaframe_flops

FLOPS_PER_MAC = 2


def adaframe_gflops(glimpses: np.ndarray, features: dict, model_args: dict) -> np.ndarray:
    """GFLOPs of each video that took ``glimpses`` [N] steps."""
    step = adaframe_flops(model_args["hidden"], model_args["feature_dim"], model_args["memory_dim"],
                          model_args["memory_frames"], model_args["num_classes"], FLOPS_PER_MAC) / 1e9
    memory = features["coarse_gflops"] * model_args["memory_frames"]
    return glimpses * (features["fine_gflops"] + step) + memory


def avgpool_gflops(frames: np.ndarray, features: dict, args: dict) -> np.ndarray:
    head = FLOPS_PER_MAC * args["feature_dim"] * args["num_classes"] / 1e9
    return frames * features["fine_gflops"] + head


def lstm_gflops(frames: np.ndarray, features: dict, args: dict) -> np.ndarray:
    hidden = args["hidden"]
    step = FLOPS_PER_MAC * 4 * hidden * (args["feature_dim"] + hidden) / 1e9
    head = FLOPS_PER_MAC * hidden * args["num_classes"] / 1e9
    return frames * (features["fine_gflops"] + step) + head


BASELINE_GFLOPS = {"avgpool": avgpool_gflops, "lstm": lstm_gflops}
