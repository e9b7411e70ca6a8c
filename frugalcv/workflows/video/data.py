"""Per-frame feature sequences as training batches, shared by the video methods.

A sample of a ``video-features`` split, ``{"key", "features": [T, D], "coarse": [T, Dc]?, "label",
"informative"?}``, becomes ``{"features": [max_frames, D], "coarse": [max_frames, Dc]?,
"length": T', "label"}``: cut to ``max_frames`` (its first frames, or with ``uniform`` that many
spread evenly over the video) and zero-padded after ``length`` so that videos of different
lengths stack. Models mask the padded steps with ``length``. Frame marks
(``informative``) are dropped: no training step may use them.
"""

from __future__ import annotations

import numpy as np
import torch

from frugalcv.workflows import kit


def uniform_frames(length: int, frames: int) -> np.ndarray:
    """``frames`` indices spread evenly over ``length`` frames (the centres of equal segments)."""
    return np.minimum(((np.arange(frames) + 0.5) * length / frames).astype(np.int64), length - 1)


def _pad(array: np.ndarray, frames: int, uniform: bool = False) -> torch.Tensor:
    if uniform and array.shape[0] > frames:
        array = array[uniform_frames(array.shape[0], frames)]
    x = torch.from_numpy(np.ascontiguousarray(array[:frames], dtype=np.float32))
    if x.shape[0] < frames:
        x = torch.cat([x, x.new_zeros(frames - x.shape[0], *x.shape[1:])])
    return x


class PadFrames:
    """Picklable per-sample transform: truncate / zero-pad every feature sequence to ``max_frames``
    (``uniform``: a longer video keeps ``max_frames`` frames spread over it, not its first ones)."""

    def __init__(self, max_frames: int, *, coarse: bool, uniform: bool = False):
        self.max_frames, self.coarse, self.uniform = max_frames, coarse, uniform

    def __call__(self, sample: dict) -> dict:
        length = min(int(sample["features"].shape[0]), self.max_frames)
        out = {"features": _pad(sample["features"], self.max_frames, self.uniform), "length": length,
               "label": int(sample["label"])}
        if self.coarse:
            if "coarse" not in sample:
                raise KeyError("this split has no coarse features (coarse.npy): extract it with video.extract "
                               "and a `coarse:` backbone")
            out["coarse"] = _pad(sample["coarse"], self.max_frames, self.uniform)
        return out


def train_stream(ctx: kit.StageContext, split: str, batch_size: int, max_frames: int, *,
                 coarse: bool = False, uniform: bool = False) -> kit.TrainStream:
    """``split`` as shuffled training batches of padded sequences, on ``ctx.device``."""
    return kit.stream(ctx, ctx.input(split), batch_size, PadFrames(max_frames, coarse=coarse, uniform=uniform),
                      batch_transform=_on_device)


def eval_stream(ctx: kit.StageContext, split: str, batch_size: int, max_frames: int, *,
                coarse: bool = False, uniform: bool = False) -> kit.EvalStream:
    """``split`` in order, every video once."""
    return kit.stream(ctx, ctx.input(split), batch_size, PadFrames(max_frames, coarse=coarse, uniform=uniform),
                      batch_transform=_on_device, train=False)


def _on_device(batch: dict, generator: torch.Generator) -> dict:
    """Nothing random: batches arrive on the device, lengths and labels as long tensors."""
    return {**batch, "length": batch["length"].long(), "label": batch["label"].long()}


def split_info(ctx: kit.StageContext, split: str) -> dict:
    """The split's manifest facts the stages need: feature dims, GFLOPs per frame, frames, classes."""
    from frugalcv.sharding.manifest import load_manifest

    manifest = load_manifest(ctx.input(split))
    extra = manifest.extra or {}
    fine, coarse = extra.get("fine") or {}, extra.get("coarse") or {}
    return {"classes": list(manifest.classes), "frames": extra.get("frames"),
            "fine_dim": fine.get("dim"), "fine_gflops": fine.get("gflops"),
            "coarse_dim": coarse.get("dim"), "coarse_gflops": coarse.get("gflops")}
