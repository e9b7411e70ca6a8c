"""LiteEval at test time: the hard gate (argmax of b_t), the baselines, the online setting, metrics.

One pass over the split runs every *variant* on each batch: LiteEval (hard gate), the always-fine
network, UNIFORM-K and SEQ-K for each budget K (forced decisions, prediction at the video's end),
and further LiteEval networks (e.g. trained at other γ). Per variant it keeps the final class
probabilities, fine reads and valid steps of every video, and the correctness of the *online*
prediction after the K-th fine read (``online_logits``; a video that reads fewer than K frames
predicts at its end).

Cost per video (GFLOPs): ``coarse_gflops·T + fine_gflops·R`` for the backbones (per frame, from the
split's manifest) plus ``2·video_macs`` for the LSTMs, the gate and the classifier (2 FLOPs per
multiply-add, as ``frugalcv.models.flops`` counts), T valid steps, R fine reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from frugalcv.models.liteeval import (
    LiteEvalNet,
    always_fine_decisions,
    liteeval_flops,
    online_logits,
    seq_k_decisions,
    uniform_k_decisions,
    video_macs,
)
from frugalcv.workflows.liteeval.train import prepare_features
from frugalcv.workflows.video.data import PadFrames

#: (lengths [B], steps T) -> forced decisions [B, T]; None: the network's own hard gate
Decide = Callable[[Tensor, int], Tensor] | None


class EvalPad(PadFrames):
    """PadFrames that keeps the frame marks (``informative``, padded with 0) for the report's analysis;
    no training step sees them."""

    def __call__(self, sample: dict) -> dict:
        out = super().__call__(sample)
        marks = sample.get("informative")
        if marks is not None:
            out["informative"] = torch.zeros(self.max_frames, dtype=torch.uint8)
            kept = np.asarray(marks[:self.max_frames], dtype=np.uint8)
            out["informative"][:len(kept)] = torch.from_numpy(kept)
        return out


@dataclass
class Variant:
    """A network, how its features are prepared and its gate (own or forced), with what it saw."""

    net: LiteEvalNet
    features: dict  # the model file's {normalize, feature_norm, ...}
    decide: Decide = None
    online: tuple[int, ...] = ()  # K of the online predictions kept
    keep_decisions: bool = False
    probs: list[Tensor] = field(default_factory=list)
    reads: list[Tensor] = field(default_factory=list)
    lengths: list[Tensor] = field(default_factory=list)
    online_correct: dict[int, list[Tensor]] = field(default_factory=dict)
    decisions: list[Tensor] = field(default_factory=list)

    @torch.no_grad()
    def run(self, batch: dict) -> None:
        coarse, fine = prepare_features(batch, self.features["normalize"], self.features["feature_norm"])
        lengths, labels = batch["length"], batch["label"]
        if self.decide is None:
            out = self.net(coarse, fine, lengths, mode="hard")
        else:
            out = self.net(coarse, fine, lengths, decisions=self.decide(lengths, coarse.shape[1]))
        self.probs.append(torch.softmax(out.final_logits.float(), dim=1).cpu())
        self.reads.append(out.decisions.sum(dim=1).cpu())
        self.lengths.append(lengths.cpu())
        for k in self.online:
            hit = online_logits(out, k).argmax(dim=1) == labels
            self.online_correct.setdefault(k, []).append(hit.cpu())
        if self.keep_decisions:
            self.decisions.append(out.decisions.cpu())


def run_variants(variants: dict[str, Variant], batches: Iterable[dict], device) -> dict[str, Tensor]:
    """Run every variant over ``batches`` (one pass); returns the labels [N] and, when the split has
    them, the frame marks [N, T] and valid-step mask."""
    nets = {id(v.net): v.net for v in variants.values()}
    for net in nets.values():
        net.to(device).eval()
    labels, marks, masks = [], [], []
    for batch in batches:
        for variant in variants.values():
            variant.run(batch)
        labels.append(batch["label"].cpu())
        steps = batch["coarse"].shape[1]
        masks.append(torch.arange(steps)[None, :] < batch["length"].cpu()[:, None])
        if "informative" in batch:
            marks.append(batch["informative"].cpu())
    if not labels:
        raise ValueError("the test split yielded no batches")
    seen = {"labels": torch.cat(labels), "mask": torch.cat(masks)}
    if marks:
        seen["informative"] = torch.cat(marks)
    return seen


def mean_average_precision(probs_NC: np.ndarray, labels_N: np.ndarray) -> float:
    """mAP: the mean over classes present in ``labels`` of the average precision of ranking the
    videos by that class's probability (one-vs-rest)."""
    from sklearn.metrics import average_precision_score

    present = [c for c in range(probs_NC.shape[1]) if (labels_N == c).any()]
    return float(np.mean([average_precision_score(labels_N == c, probs_NC[:, c]) for c in present]))


def summarise(variant: Variant, labels: Tensor, costs: dict[str, int], backbone_gflops: tuple[float, float]
              ) -> dict[str, float]:
    """``map``, ``top1``, ``fine_fraction`` (mean over videos of R/T), ``fine_reads``, ``gflops`` of a variant."""
    probs = torch.cat(variant.probs).numpy()
    reads, lengths = torch.cat(variant.reads).double(), torch.cat(variant.lengths).double()
    coarse_g, fine_g = backbone_gflops
    lstm = torch.tensor([video_macs(costs, t, r) for t, r in zip(lengths.tolist(), reads.tolist(), strict=True)],
                        dtype=torch.float64)
    gflops = coarse_g * lengths + fine_g * reads + 2 * lstm / 1e9
    y = labels.numpy()
    return {"map": mean_average_precision(probs, y), "top1": float((probs.argmax(1) == y).mean()),
            "fine_fraction": float((reads / lengths).mean()), "fine_reads": float(reads.mean()),
            "gflops": float(gflops.mean()), "lstm_gflops": float((2 * lstm / 1e9).mean())}


def online_accuracy(variant: Variant) -> dict[int, float]:
    """K -> top-1 of the prediction forced after the K-th fine read."""
    return {k: float(torch.cat(hits).float().mean()) for k, hits in sorted(variant.online_correct.items())}


def variant_costs(net: LiteEvalNet) -> dict[str, int]:
    return liteeval_flops(**net.dims)


def always_fine(lengths: Tensor, steps: int) -> Tensor:
    return always_fine_decisions(lengths, steps)


def uniform_k(k: int) -> Decide:
    return lambda lengths, steps: uniform_k_decisions(lengths, steps, k)


def seq_k(k: int) -> Decide:
    return lambda lengths, steps: seq_k_decisions(lengths, steps, k)


def read_positions(variant: Variant, seen: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """Per frame position: the fraction of (valid) videos whose fine frame LiteEval read, and the
    fraction of frames that show the class where the split marks them."""
    decisions = torch.cat(variant.decisions)
    mask = seen["mask"].float()
    valid = mask.sum(0).clamp(min=1)
    out = {"read_rate": (decisions.sum(0) / valid).numpy()}
    if "informative" in seen:
        out["informative_rate"] = ((seen["informative"].float() * mask).sum(0) / valid).numpy()
    return out


def informative_metrics(variant: Variant, seen: dict[str, Tensor]) -> dict[str, float]:
    """Where frames are marked: the share of fine reads that land on frames showing the class
    (``informative_precision``) against the share of such frames (``informative_rate``), and the share
    of those frames read (``informative_recall``)."""
    if "informative" not in seen:
        return {}
    decisions = torch.cat(variant.decisions).bool()
    marks = seen["informative"].bool() & seen["mask"]
    reads = int(decisions.sum())
    return {"informative_precision": float((decisions & marks).sum()) / max(reads, 1),
            "informative_recall": float((decisions & marks).sum()) / max(int(marks.sum()), 1),
            "informative_rate": float(marks.sum()) / max(int(seen["mask"].sum()), 1)}
