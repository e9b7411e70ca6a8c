"""The shared video stage on the stage kit: ``video.extract`` (frames -> per-frame features)."""

from __future__ import annotations

import time

from frugalcv.sharding.tasks import finish_split, write_split_task
from frugalcv.sharding.writer import write_split
from frugalcv.workflows import kit
from frugalcv.workflows.video.extract import feature_source
from frugalcv.workflows.video.frames import open_frames
from frugalcv.workflows.video.params import ExtractParams


def extract_tasks(params: ExtractParams) -> int:
    """How many array tasks the stage runs as (``params.tasks``)."""
    return params.tasks


@kit.register_stage("video.extract", params=ExtractParams, inputs=("frames",), outputs=("features",),
                    array_tasks=extract_tasks)
def extract_stage(ctx: kit.StageContext) -> kit.StageResult:
    """Per-frame CNN features of every video: `frames` (a `video_frames` shard split, or a folder
    `<class>/<video>/<frame>.jpg|png`) -> `features`, `video-features` shards of `features.npy`
    (float32 [T, D_fine]), `coarse.npy` (float32 [T, D_coarse], with `coarse`), `cls` and
    `informative.npy` when the input has it. `fine` / `coarse` take `model` (mobilenet_v2, resnet18,
    resnet50, resnet101, pixels or a registered model), `size`, `weights`, `normalize` and `args`.
    The manifest's extra records each backbone with its `dim` and per-frame `gflops`, and `frames`
    (T). Runs on rank 0 on `ctx.device`; `tasks: N` runs N array tasks over disjoint shard ranges
    (byte-identical to one task); a rerun writes only the missing shards."""
    p: ExtractParams = ctx.params
    if not ctx.is_main:
        return kit.StageResult()
    out = ctx.path("features")
    final = ctx.array is not None and ctx.array.is_final
    frames = open_frames(ctx.input("frames"))
    source = feature_source(frames, p, device="cpu" if final else ctx.device, precision=ctx.precision,
                            channels_last=ctx.channels_last and not final, load_weights=not final)
    start = time.perf_counter()
    if ctx.array is not None and not final:
        r = write_split_task(source, out, ctx.array.index, ctx.array.count, max_shard_samples=p.max_shard_samples)
        ctx.printer(f"video.extract task {ctx.array.index}/{ctx.array.count}: shards {r.shards.start}.."
                    f"{r.shards.stop - 1}: {r.written} written, {r.skipped} already there")
        return kit.StageResult(metrics={"shards_written": float(r.written)})
    if final:
        manifest = finish_split(source, out, max_shard_samples=p.max_shard_samples)
    else:
        manifest = write_split(source, out, max_shard_samples=p.max_shard_samples, progress=False)
    seconds = time.perf_counter() - start
    metrics = {"videos": float(manifest.num_samples), "shards": float(len(manifest.shards)),
               "fine_dim": float(source.fine.dim), "fine_gflops": source.fine.gflops}
    if source.coarse is not None:
        metrics.update(coarse_dim=float(source.coarse.dim), coarse_gflops=source.coarse.gflops)
    if source.frames_extracted:
        metrics["frames_per_s"] = source.frames_extracted / max(seconds, 1e-9)
    ctx.printer(f"video.extract: {manifest.num_samples} videos in {len(manifest.shards)} shards, fine "
                f"{source.fine.dim}-d" + (f", coarse {source.coarse.dim}-d" if source.coarse else "") + f" -> {out}")
    return kit.StageResult(metrics=metrics, outputs={"features": out})
