"""Evaluation: one streamed pass over a split, then every operating point from what it kept.

The pass runs AdaFrame's deterministic rollout (ℓ = a_t) for the most glimpses any point needs
and keeps, per video, the scores and utilities of every step, the frames read, its class and
length; the baselines' class scores at every K (uniform U and random R frames) and at all frames
are kept alongside. A rollout is causal, so its first T steps are the rollout of T_e = T, and the
lookahead stop at any (μ, p, T_e) is computed from the kept utilities without another pass.
Memory: N × C floats per step and per baseline row (45k FCVID test videos × 239 classes × 4 B =
44 MB each).

Metrics (names are part of the interface): ``map``, ``top1``, ``frames_mean`` (glimpses up to the
stop, repeats counted), ``frames_std``, ``unique_frames_mean``, ``gflops_mean``; with baselines
``avgpool_map``, ``lstm_map`` (all frames) and ``{avgpool,lstm}_{u,r}{K}_map`` with their
``_gflops``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from frugalcv.models.adaframe import AdaFrameNet, gather_frames, lookahead_stop, sample_frames
from frugalcv.workflows.adaframe.costs import BASELINE_GFLOPS, adaframe_gflops
from frugalcv.workflows.adaframe.data import prepare
from frugalcv.workflows.adaframe.metrics import mean_average_precision, top1

MODES = {"u": "uniform", "r": "random"}


@dataclass
class Rollouts:
    """Per video of a split: ``logits`` [N, S, C], ``values`` (V̂) [N, S], ``mask`` [N, S] (steps
    taken), ``locations`` [N, S] (frames read), ``labels`` [N], ``lengths`` [N]."""

    logits: np.ndarray
    values: np.ndarray
    mask: np.ndarray
    locations: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray

    def lookahead(self, steps: int, margin: float | None, patience: int) -> tuple[np.ndarray, np.ndarray]:
        """(class probabilities [N, C] at the stop, stop step [N], 0-based) with at most ``steps``
        glimpses; ``margin=None`` never stops early."""
        values, mask = torch.from_numpy(self.values[:, :steps]), torch.from_numpy(self.mask[:, :steps])
        if margin is None:
            stop = (mask.long().sum(dim=1) - 1).clamp(min=0)
        else:
            stop = lookahead_stop(values, margin, patience, mask)
        stop = stop.numpy()
        logits = torch.from_numpy(self.logits[np.arange(len(stop)), stop])
        return logits.softmax(dim=-1).numpy(), stop


@dataclass
class BaselineRow:
    """One baseline at one frame budget: ``model`` (avgpool | lstm), ``mode`` (u | r | all), ``k``."""

    model: str
    mode: str
    k: int | None
    scores: np.ndarray  # [N, C] class probabilities
    frames: np.ndarray  # [N] frames read

    @property
    def key(self) -> str:
        return f"{self.model}" if self.mode == "all" else f"{self.model}_{self.mode}{self.k}"


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0,))


@torch.no_grad()
def evaluate_split(net: AdaFrameNet, batches: Iterable[dict], steps: int, features: dict, *,
                   baselines: dict[str, tuple[nn.Module, dict]] | None = None, frames: Iterable[int] = (),
                   seed: int = 0) -> tuple[Rollouts, list[BaselineRow]]:
    """One pass over ``batches``: AdaFrame's rollout of ``steps`` glimpses, and the rows of the
    ``baselines`` (name -> (network, the feature settings it was trained with))."""
    net.eval()
    baselines = baselines or {}
    generator = torch.Generator().manual_seed(seed)
    kept: dict[str, list] = {k: [] for k in ("logits", "values", "mask", "locations", "labels", "lengths")}
    rows: dict[tuple, list] = {}
    for batch in batches:
        fine, coarse = prepare(batch, features)
        lengths, labels = batch["length"], batch["label"]
        r = net(fine, lengths, coarse, steps, sample=False)
        for name, value in (("logits", r.logits.float()), ("values", r.values.float()), ("mask", r.mask),
                            ("locations", r.locations), ("labels", labels), ("lengths", lengths)):
            kept[name].append(value.cpu().numpy())
        for name, (model, own) in baselines.items():
            model.eval()
            fine, _ = prepare(batch, own)
            budgets = [("all", None)] + [(m, k) for k in frames if k < fine.shape[1] for m in MODES]
            for mode, k in budgets:
                if mode == "all":
                    x, n = fine, lengths
                else:
                    idx = sample_frames(lengths.cpu(), k, MODES[mode], generator).to(fine.device)
                    x, n = gather_frames(fine, idx), torch.full_like(lengths, k)
                probs = model(x, n).float().softmax(dim=-1)
                rows.setdefault((name, mode, k), []).append((probs.cpu().numpy(), n.cpu().numpy()))
    rollouts = Rollouts(**{k: _cat(v) for k, v in kept.items()})
    out = [BaselineRow(name, mode, k, _cat([s for s, _ in parts]), _cat([f for _, f in parts]))
           for (name, mode, k), parts in rows.items()]
    return rollouts, out


def adaframe_metrics(r: Rollouts, steps: int, margin: float | None, patience: int, features: dict,
                     model_args: dict) -> tuple[dict[str, float], np.ndarray]:
    """(metrics of one operating point, its stop steps [N])."""
    scores, stop = r.lookahead(steps, margin, patience)
    glimpses = (stop + 1).astype(np.float64)
    unique = [len(set(r.locations[i, : stop[i] + 1].tolist())) for i in range(len(stop))]
    gflops = adaframe_gflops(glimpses, features, model_args)
    metrics = {"map": mean_average_precision(scores, r.labels), "top1": top1(scores, r.labels),
               "frames_mean": float(glimpses.mean()), "frames_std": float(glimpses.std()),
               "unique_frames_mean": float(np.mean(unique)), "gflops_mean": float(gflops.mean()),
               "steps": float(steps), "video_frames_mean": float(r.lengths.mean())}
    return metrics, stop


def baseline_metrics(row: BaselineRow, labels: np.ndarray, features: dict, args: dict) -> dict[str, float]:
    gflops = BASELINE_GFLOPS[row.model](row.frames.astype(np.float64), features, args)
    return {"map": mean_average_precision(row.scores, labels), "top1": top1(row.scores, labels),
            "frames_mean": float(row.frames.mean()), "gflops_mean": float(gflops.mean())}
