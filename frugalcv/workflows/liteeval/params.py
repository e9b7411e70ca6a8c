"""Typed params of LiteEval's stages, checked when the pipeline loads.

Defaults are the dissertation's recipe (Ch. 4): Adam, lr 1e-4, batch 128, λ = 2, coarse / fine
LSTMs of 512 / 2048 units, a Gumbel-softmax gate whose temperature is annealed from high to low.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from frugalcv.workflows.kit import FieldError

GATES = ("learned", "always_fine")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise FieldError(name, f"{value}: must be > 0")


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise FieldError(name, f"{value}: must be >= {low}")


@dataclass(kw_only=True)
class FeatureParams:
    """How the per-frame features reach the LSTMs (fixed at training, carried in the model file)."""

    #: frames per video: longer videos are truncated, shorter ones padded (and masked);
    #: null: the split's own count (its manifest's ``frames``), which every video must then have
    max_frames: int | None = None
    #: l2: each frame's coarse and fine feature vectors scaled to norm ``feature_norm`` (the public
    #: code L2-normalises its features); none: as extracted
    normalize: Literal["l2", "none"] = "l2"
    #: the norm of each frame's feature vectors after ``normalize: l2`` (1: unit vectors)
    feature_norm: float = 1.0

    def __post_init__(self):
        if self.max_frames is not None:
            _at_least("max_frames", self.max_frames, 1)
        _positive("feature_norm", self.feature_norm)


@dataclass(kw_only=True)
class TrainParams(FeatureParams):
    """``liteeval.train``: the coarse/fine LSTMs and the gate, trained jointly on Eq. 4.5."""

    #: learned: the Gumbel-softmax gate (LiteEval); always_fine: the same network reading every
    #: fine frame (its gate unused), the baseline LiteEval is compared with
    gate: Literal["learned", "always_fine"] = "learned"
    #: units of the coarse LSTM (FCVID 512, ActivityNet 64)
    coarse_hidden: int = 512
    #: units of the fine LSTM (FCVID 2048, ActivityNet 512); >= coarse_hidden
    fine_hidden: int = 2048
    #: γ, the target fraction of frames whose fine features are read (Eq. 4.5)
    gamma: float = 0.5
    #: λ, the weight of the gate term (γ − fine fraction)²
    lam: float = 2.0
    #: Gumbel-softmax temperature at the first step, annealed exponentially to ``tau_end`` at the last
    tau_start: float = 5.0
    #: the temperature at the last step
    tau_end: float = 0.5
    #: scale of the Gumbel noise (1: exact categorical samples; the public code uses 0.5)
    noise_scale: float = 1.0
    #: passes over the training split (the dissertation gives none: our budget)
    epochs: int = 100
    #: videos per optimizer step, global (each rank gets batch_size / world_size)
    batch_size: int = 128
    #: Adam's learning rate
    lr: float = 1.0e-4
    #: constant (the dissertation's) or cosine: decayed to 0 over the run (steadier short demo runs)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    #: decoupled weight decay (AdamW) when > 0
    weight_decay: float = 0.0
    #: clip the gradients' global norm to this value; null: no clipping
    grad_clip: float | None = None
    #: videos per batch of the ``val`` evaluation after training
    eval_batch_size: int = 128
    #: seeds the initial weights, the Gumbel noise and the order of the videos
    seed: int = 0
    #: optimizer steps per logged (averaged) line
    log_every: int = 20

    def __post_init__(self):
        super().__post_init__()
        _at_least("coarse_hidden", self.coarse_hidden, 1)
        if self.fine_hidden < self.coarse_hidden:
            raise FieldError("fine_hidden", f"{self.fine_hidden}: must be >= coarse_hidden ({self.coarse_hidden}): "
                             "a skipped step copies the coarse state into the first coarse_hidden fine units")
        if not 0.0 <= self.gamma <= 1.0:
            raise FieldError("gamma", f"{self.gamma}: the target fraction of fine reads, in [0, 1]")
        if self.lam < 0:
            raise FieldError("lam", f"{self.lam}: must be >= 0")
        for name in ("tau_start", "tau_end", "lr"):
            _positive(name, getattr(self, name))
        if self.tau_end > self.tau_start:
            raise FieldError("tau_end", f"{self.tau_end}: the temperature anneals down; use <= tau_start "
                             f"({self.tau_start})")
        if self.noise_scale < 0:
            raise FieldError("noise_scale", f"{self.noise_scale}: must be >= 0")
        _at_least("epochs", self.epochs, 1)
        _at_least("batch_size", self.batch_size, 1)
        _at_least("eval_batch_size", self.eval_batch_size, 1)
        if self.weight_decay < 0:
            raise FieldError("weight_decay", f"{self.weight_decay}: must be >= 0")
        if self.grad_clip is not None:
            _positive("grad_clip", self.grad_clip)


@dataclass(kw_only=True)
class EvaluateParams:
    """``liteeval.evaluate``: the hard gate on ``test``, the baselines, the online setting, report."""

    #: videos per batch (every network runs on each batch)
    batch_size: int = 128
    #: K of UNIFORM-K / SEQ-K and of the online predictions (after the K-th fine read); null: 1..T
    budgets: list[int] | None = None
    #: which network runs UNIFORM-K and SEQ-K: the ``always_fine`` input's (trained to read fine
    #: frames; needs that input) or the ``learned`` checkpoint's with forced decisions; auto: the
    #: always-fine one when given
    baseline_model: Literal["auto", "always_fine", "learned"] = "auto"
    #: the report's title (default: the pipeline and run)
    title: str | None = None

    def __post_init__(self):
        _at_least("batch_size", self.batch_size, 1)
        if self.budgets is not None:
            if not self.budgets:
                raise FieldError("budgets", "[]: give at least one K, or null for 1..T")
            for k in self.budgets:
                if k < 1:
                    raise FieldError("budgets", f"{self.budgets}: every K (fine reads) must be >= 1")
