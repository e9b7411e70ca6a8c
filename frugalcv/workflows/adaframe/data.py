"""AdaFrame's inputs: ``video.extract`` splits streamed as padded batches, and the feature settings
(frames per video, normalisation) every stage after training must reproduce.

A batch is ``{"features": [B, N, D] fine (v_t), "coarse": [B, N, Dc] (the memory's light
features), "length": [B], "label": [B]}`` on the stage's device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from frugalcv.errors import ConfigError
from frugalcv.sharding import storage
from frugalcv.workflows import kit
from frugalcv.workflows.video.data import eval_stream, split_info, train_stream


def features_of(ctx: kit.StageContext, split: str, p, *, coarse: bool = True) -> dict:
    """The feature settings of a training stage on ``split``: dims, per-frame GFLOPs, classes, and the
    frames per video (``p.max_frames``, else the split's count), with ``p``'s cut and normalisation."""
    info = split_info(ctx, split)
    where = f"stages.{ctx.stage}.inputs.{split}: {storage.redact(ctx.input(split))}"
    if not info["fine_dim"]:
        raise ConfigError(f"{where} records no feature dim in its manifest; give a video.extract output")
    if coarse and not info["coarse_dim"]:
        raise ConfigError(f"{where} has no coarse features (coarse.npy) for AdaFrame's memory; extract them "
                          "with video.extract and a `coarse:` backbone (e.g. mobilenet_v2 at 112)")
    frames = p.max_frames if p.max_frames is not None else info["frames"]
    if not frames:
        raise ConfigError(f"{where}: its videos have different numbers of frames; set "
                          f"stages.{ctx.stage}.params.max_frames (e.g. 25)")
    return {"classes": info["classes"], "max_frames": int(frames), "long_videos": p.long_videos,
            "normalize": p.normalize, "fine_dim": int(info["fine_dim"]),
            "coarse_dim": int(info["coarse_dim"] or 0), "fine_gflops": float(info["fine_gflops"] or 0.0),
            "coarse_gflops": float(info["coarse_gflops"] or 0.0)}


def check_matches(ctx: kit.StageContext, split: str, features: dict, what: str) -> dict:
    """``split``'s facts, refused when its features are not those ``features`` (a model file's) were trained on."""
    info = split_info(ctx, split)
    for key in ("fine_dim", "coarse_dim"):
        if features.get(key) and info[key] and int(info[key]) != int(features[key]):
            raise ConfigError(f"stages.{ctx.stage}.inputs.{split}: {key.split('_')[0]} features of dim {info[key]}, "
                              f"but the {what} was trained on {features[key]}; extract {split} with the same "
                              "backbones")
    if len(info["classes"]) != len(features["classes"]):
        raise ConfigError(f"stages.{ctx.stage}.inputs.{split}: {len(info['classes'])} classes, but the {what} "
                          f"has {len(features['classes'])}")
    return info


def training_batches(ctx: kit.StageContext, split: str, batch_size: int, features: dict, *,
                     coarse: bool = True) -> kit.TrainStream:
    return train_stream(ctx, split, batch_size, features["max_frames"], coarse=coarse,
                        uniform=features["long_videos"] == "uniform")


def evaluation_batches(ctx: kit.StageContext, split: str, batch_size: int, features: dict, *,
                       coarse: bool = True) -> kit.EvalStream:
    return eval_stream(ctx, split, batch_size, features["max_frames"], coarse=coarse,
                       uniform=features["long_videos"] == "uniform")


def prepare(batch: dict, normalize: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(fine [B, N, D], coarse [B, N, Dc] or None) of a batch, each frame L2-normalised with
    ``normalize: l2`` (the padding stays zero)."""
    fine, coarse = batch["features"].float(), batch.get("coarse")
    coarse = coarse.float() if coarse is not None else None
    if normalize == "l2":
        fine = F.normalize(fine, dim=-1)
        coarse = F.normalize(coarse, dim=-1) if coarse is not None else None
    return fine, coarse
