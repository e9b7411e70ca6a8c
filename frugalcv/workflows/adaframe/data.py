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


def _valid(batch: dict) -> torch.Tensor:
    """[B, N, 1] 1.0 on each video's first ``length`` frames."""
    frames = batch["features"].shape[1]
    return (torch.arange(frames, device=batch["length"].device)[None, :] < batch["length"][:, None]).unsqueeze(-1)


@torch.no_grad()
def feature_stats(batches) -> dict[str, torch.Tensor]:
    """Per-dimension mean and std of the fine and coarse features over every valid frame of ``batches``."""
    sums: dict[str, list[torch.Tensor]] = {}
    count = 0
    for batch in batches:
        valid = _valid(batch)
        count += int(valid.sum())
        for name in ("features", "coarse"):
            if name in batch:
                x = torch.where(valid, batch[name].double(), 0.0)
                total, squares = x.sum(dim=(0, 1)), (x * x).sum(dim=(0, 1))
                if name in sums:
                    sums[name][0] += total
                    sums[name][1] += squares
                else:
                    sums[name] = [total, squares]
    out = {}
    for name, (total, squares) in sums.items():
        mean = total / max(count, 1)
        std = (squares / max(count, 1) - mean * mean).clamp(min=0).sqrt()
        key = "fine" if name == "features" else "coarse"
        out[f"{key}_mean"], out[f"{key}_std"] = mean.float().cpu(), std.clamp(min=1e-6).float().cpu()
    return out


def prepare(batch: dict, features: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(fine [B, N, D], coarse [B, N, Dc] or None) of a batch as the networks read them:
    ``normalize: l2`` scales each frame to unit norm, ``standardize`` shifts and scales each
    dimension by the training split's mean and std (``features["stats"]``); the padding stays zero."""
    fine, coarse = batch["features"].float(), batch.get("coarse")
    coarse = coarse.float() if coarse is not None else None
    normalize = features["normalize"]
    if normalize == "l2":
        fine = F.normalize(fine, dim=-1)
        coarse = F.normalize(coarse, dim=-1) if coarse is not None else None
    elif normalize == "standardize":
        stats, valid = features["stats"], _valid(batch)
        fine = torch.where(valid, (fine - stats["fine_mean"].to(fine.device)) / stats["fine_std"].to(fine.device), 0.0)
        if coarse is not None and "coarse_mean" in stats:
            coarse = torch.where(valid, (coarse - stats["coarse_mean"].to(coarse.device))
                                 / stats["coarse_std"].to(coarse.device), 0.0)
    return fine, coarse


def with_stats(ctx: kit.StageContext, features: dict, batch_size: int, coarse: bool) -> dict:
    """``features`` with the training split's statistics under ``stats`` when it standardises."""
    if features["normalize"] != "standardize":
        return features
    stats = feature_stats(evaluation_batches(ctx, "train", batch_size, features, coarse=coarse))
    return {**features, "stats": stats}
