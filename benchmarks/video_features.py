"""Feature extraction: the ``video.extract`` stage's frames/s against the backbone's bare forward.

    .venv/bin/python benchmarks/video_features.py [--model resnet101] [--size 224] [--videos 32]
        [--frames 16] [--frame-size 128] [--batch 64] [--device cuda] [--precision bf16] [--rounds 3]

Both sides see the same frames: ``--videos`` videos of ``--frames`` random uint8 frames of
``--frame-size``² pixels, written once as a ``video_frames`` shard split in a temporary folder.

- stage: the ``video.extract`` stage function on a StageContext, as the runner calls it: it
  streams the shards, decodes each video, resizes and normalises on the device, forwards
  ``--batch`` frames at a time and writes the feature shards and manifest. Its frames/s is the
  stage's own ``frames_per_s`` metric (the write loop; building the network is not in it);
  ``stage_wall_s`` is the whole call.
- bare: the same network (same seed, so the same weights) forwarding the same frames, already
  resized and normalised on the device, ``--batch`` at a time (synchronised on CUDA).

``ratio_vs_bare_forward`` is the median over rounds of stage frames/s / bare frames/s: 1.0 when
the stage costs nothing beyond the network. One warm-up round of each side comes first. The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

from frugalcv.sharding.sources.base import EncodedSample, Source
from frugalcv.sharding.writer import write_split
from frugalcv.workflows import kit
from frugalcv.workflows.pipeline.schema import build
from frugalcv.workflows.video.backbones import prepare
from frugalcv.workflows.video.extract import feature_source
from frugalcv.workflows.video.frames import open_frames
from frugalcv.workflows.video.params import ExtractParams
from frugalcv.workflows.video.stages import extract_stage


class RandomVideos(Source):
    """``count`` videos of ``frames`` random RGB frames (a stand-in for decoded footage)."""

    kind, task, splits = "video-frames", "video_frames", ("train",)

    def __init__(self, count: int, frames: int, side: int):
        super().__init__("-", "train")
        self.count, self.frames, self.side = count, frames, side

    def __len__(self) -> int:
        return self.count

    def class_names(self) -> list[str]:
        return ["0", "1"]

    def schema(self) -> dict[str, str]:
        return {"frames.npy": "uint8 [T, H, W, 3]", "cls": "class index"}

    def video(self, index: int) -> np.ndarray:
        rng = np.random.default_rng(index)
        return rng.integers(0, 256, (self.frames, self.side, self.side, 3), dtype=np.uint8)

    def encode(self, index: int) -> EncodedSample:
        buf = io.BytesIO()
        np.save(buf, self.video(index), allow_pickle=False)
        return EncodedSample(f"v{index:05d}", {"frames.npy": buf.getvalue(), "cls": str(index % 2).encode()})

    def extra_manifest(self) -> dict:
        return {"frames": self.frames}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_stage(args, params: ExtractParams, frames_url: str, out: str, device: torch.device) -> dict:
    ctx = kit.StageContext(pipeline="bench", run_id="bench", stage="extract", params=params,
                           inputs={"frames": frames_url}, output_dir=out, checkpoint_dir=f"{out}/checkpoints",
                           device=device, precision=args.precision, printer=lambda _: None)
    start = time.perf_counter()
    result = extract_stage(ctx)
    sync(device)
    return {"frames_per_s": result.metrics["frames_per_s"], "wall_s": time.perf_counter() - start}


def bare_forward(args, params: ExtractParams, source: RandomVideos, device: torch.device) -> tuple:
    """(a function timing one bare pass, in frames/s; the per-frame GFLOPs)."""
    backbone = feature_source(open_frames(args.frames_url), params, device=device, precision=args.precision).fine
    x = torch.cat([prepare(torch.from_numpy(source.video(i)).to(device), args.size, "imagenet")
                   for i in range(len(source))])

    def once() -> float:
        sync(device)
        start = time.perf_counter()
        with torch.no_grad(), kit.autocast(device, args.precision):
            for first in range(0, len(x), args.batch):
                backbone.net(x[first:first + args.batch])
        sync(device)
        return len(x) / (time.perf_counter() - start)

    return once, backbone.gflops


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet101")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--videos", type=int, default=32)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--frame-size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    params = build(ExtractParams, {"fine": {"model": args.model, "size": args.size}, "batch_size": args.batch},
                   "params")
    source = RandomVideos(args.videos, args.frames, args.frame_size)
    with tempfile.TemporaryDirectory() as tmp:
        args.frames_url = write_split(source, f"{tmp}/frames", progress=False).location
        bare, gflops = bare_forward(args, params, source, device)
        bare()
        run_stage(args, params, args.frames_url, f"{tmp}/warmup", device)
        rounds = []
        for r in range(args.rounds):
            stage = run_stage(args, params, args.frames_url, f"{tmp}/round{r}", device)
            rounds.append({"stage_frames_per_s": stage["frames_per_s"], "stage_wall_s": stage["wall_s"],
                           "bare_frames_per_s": bare()})
            print(f"round {r}: {rounds[-1]}", file=sys.stderr)
    median = lambda key: statistics.median(r[key] for r in rounds)  # noqa: E731
    result = {
        "model": args.model, "size": args.size, "device": str(device), "precision": args.precision,
        "videos": args.videos, "frames": args.videos * args.frames, "batch": args.batch,
        "gflops_per_frame": gflops,
        "stage_frames_per_s": median("stage_frames_per_s"), "stage_wall_s": median("stage_wall_s"),
        "bare_frames_per_s": median("bare_frames_per_s"),
        "ratio_vs_bare_forward": statistics.median(r["stage_frames_per_s"] / r["bare_frames_per_s"] for r in rounds),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
