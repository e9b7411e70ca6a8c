"""Typed params of AdaFrame's stages, checked when the pipeline loads.

Defaults are the dissertation's recipe (Ch. 3): SGD with momentum 0.9, weight decay 1e-4, batch
128, 100 epochs, an LSTM of 2048 units, a memory of T_d = 16 coarse frames, T_e = 10 glimpses,
λ = 1, discount γ = 0.9 and a location policy of std σ = 0.1. The text gives no learning rate;
0.01 is ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from frugalcv.workflows.kit import FieldError


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise FieldError(name, f"{value}: must be > 0")


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise FieldError(name, f"{value}: must be >= {low}")


def _frame_counts(name: str, values: list[int]) -> None:
    if not values:
        raise FieldError(name, "[]: give at least one frame count K")
    if any(k < 1 for k in values):
        raise FieldError(name, f"{values}: every frame count K must be >= 1")


@dataclass(kw_only=True)
class FeatureParams:
    """How the per-frame features reach the networks (fixed at training, carried in the model file)."""

    #: frames per video; null: the split's own count (its manifest's ``frames``), which every
    #: video must then have. Shorter videos are padded (and masked)
    max_frames: int | None = None
    #: how a video longer than ``max_frames`` is cut: uniform (that many frames spread evenly over
    #: it) or first (its first frames)
    long_videos: Literal["uniform", "first"] = "uniform"
    #: none: as extracted; l2: each frame's fine and coarse vectors scaled to unit norm;
    #: standardize: each dimension shifted and scaled by the training split's mean and std over
    #: all frames (one streamed pass before training; kept in the model file)
    normalize: Literal["none", "l2", "standardize"] = "none"

    def __post_init__(self):
        if self.max_frames is not None:
            _at_least("max_frames", self.max_frames, 1)


@dataclass(kw_only=True)
class OptimizerParams(FeatureParams):
    """The optimiser and the training budget."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.01
    #: SGD's momentum (unused by Adam)
    momentum: float = 0.9
    weight_decay: float = 1.0e-4
    #: constant, or cosine: decayed to 0 over the run
    lr_schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float | None = None
    epochs: int = 100
    #: global: each rank gets batch_size / world_size
    batch_size: int = 128
    eval_batch_size: int = 256
    seed: int = 0
    log_every: int = 20

    def __post_init__(self):
        super().__post_init__()
        _positive("lr", self.lr)
        if not 0 <= self.momentum < 1:
            raise FieldError("momentum", f"{self.momentum}: expected 0 <= momentum < 1")
        if self.weight_decay < 0:
            raise FieldError("weight_decay", f"{self.weight_decay}: must be >= 0")
        if self.grad_clip is not None:
            _positive("grad_clip", self.grad_clip)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            _at_least(name, getattr(self, name), 1)


@dataclass(kw_only=True)
class LookaheadParams:
    """Adaptive lookahead inference: stop once the predicted utility has fallen more than
    ``margin`` below its best so far on more than ``patience`` steps."""

    #: μ: how far below the best utility so far a step's utility must be to count
    margin: float = 0.05
    #: p: steps that may count before the glimpses stop
    patience: int = 1

    def __post_init__(self):
        if (parent := getattr(super(), "__post_init__", None)) is not None:
            parent()
        if self.margin < 0:
            raise FieldError("margin", f"{self.margin}: must be >= 0")
        _at_least("patience", self.patience, 0)


@dataclass(kw_only=True)
class TrainParams(LookaheadParams, OptimizerParams):
    """``adaframe.train``: the memory-augmented LSTM with its three heads, on Eq. 3.7."""

    hidden: int = 2048
    #: T_d: coarse frames in the global memory, sampled uniformly over each video
    memory_frames: int = 16
    #: T_e: glimpses per video in training (and the most at test)
    steps: int = 10
    #: γ, the discount of future rewards in the returns (Eq. 3.5)
    gamma: float = 0.9
    #: λ, the weight of the utility and selection terms (Eq. 3.7)
    lam: float = 1.0
    #: σ, the std of the Gaussian location policy
    sigma: float = 0.1
    #: dimensions of the memory that get the positional encoding; null: all of them
    pe_dim: int | None = None
    #: cross-entropy at every glimpse (the adaptive stop predicts at any step), not only the last
    cls_all_steps: bool = False

    def __post_init__(self):
        super().__post_init__()
        for name in ("hidden", "memory_frames", "steps"):
            _at_least(name, getattr(self, name), 1)
        if not 0 <= self.gamma <= 1:
            raise FieldError("gamma", f"{self.gamma}: the discount, in [0, 1]")
        if self.lam < 0:
            raise FieldError("lam", f"{self.lam}: must be >= 0")
        _positive("sigma", self.sigma)
        if self.pe_dim is not None:
            _at_least("pe_dim", self.pe_dim, 0)


BASELINE_MODELS = ("avgpool", "lstm")


@dataclass(kw_only=True)
class BaselinesParams(OptimizerParams):
    """``adaframe.baselines``: AVGPOOLING (trained on every frame) and an LSTM (trained on K
    randomly sampled frames, K drawn per batch from ``frames`` and all of them); one stage per
    baseline (``models: [avgpool]``, ``[lstm]``) gives each its own settings."""

    #: which baselines to train
    models: list[str] = field(default_factory=lambda: list(BASELINE_MODELS))
    #: the LSTM baseline's units
    hidden: int = 2048
    #: the frame counts K the LSTM learns to classify (with all frames); evaluated at these K
    frames: list[int] = field(default_factory=lambda: [3, 5, 8, 10])

    def __post_init__(self):
        super().__post_init__()
        if not self.models or any(m not in BASELINE_MODELS for m in self.models):
            raise FieldError("models", f"{self.models}: a non-empty list of {', '.join(BASELINE_MODELS)}")
        _at_least("hidden", self.hidden, 1)
        _frame_counts("frames", self.frames)


@dataclass(kw_only=True)
class EvaluateParams(LookaheadParams):
    """``adaframe.evaluate``: mAP, frames and GFLOPs of the adaptive lookahead on ``test``, the
    baselines at K frames, the report with its table and figures."""

    batch_size: int = 256
    #: glimpses at most (T_e); null: the trained ``steps``
    steps: int | None = None
    #: the trade-off curve: μ values, each at every T_e of ``curve_steps`` (with the point that
    #: never stops early, all T_e glimpses)
    curve_margins: list[float] = field(default_factory=lambda: [0.0, 0.02, 0.05, 0.1, 0.2])
    #: T_e values of the curve (at most the trained steps make sense, more are allowed); null: [steps]
    curve_steps: list[int] | None = None
    #: K of the baselines' rows (uniform U and random R frames); null: the baselines file's
    frames: list[int] | None = None
    #: classes named in the stop-step figure at each end (earliest and latest stoppers)
    figure_classes: int = 10
    title: str | None = None
    #: seeds the random (R) frame draws of the baselines
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        _at_least("batch_size", self.batch_size, 1)
        if self.steps is not None:
            _at_least("steps", self.steps, 1)
        if not self.curve_margins or any(m < 0 for m in self.curve_margins):
            raise FieldError("curve_margins", f"{self.curve_margins}: a non-empty list of margins >= 0")
        if self.curve_steps is not None:
            _frame_counts("curve_steps", self.curve_steps)
        if self.frames is not None:
            _frame_counts("frames", self.frames)
        _at_least("figure_classes", self.figure_classes, 1)
