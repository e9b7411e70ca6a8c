"""``shard``: a dataset in its on-disk layout -> WebDataset shards + manifest per split.

With ``tasks: N`` (N > 1) the stage runs as N array tasks (a Slurm job array under the slurm
executor, one after another in-process under inline/local): task t writes a disjoint, contiguous
range of shard indices of every split (``frugalcv.sharding.tasks``), and the runner's final step
writes each manifest once every task has succeeded. The shards are byte-identical to a one-task
run; a rerun writes only the shards that are missing. N > 1 needs ``max_shard_samples`` (shard
boundaries must be known before encoding).
"""

from __future__ import annotations

from typing import Any

from frugalcv.errors import ConfigError
from frugalcv.workflows.pipeline.stages import StageContext, StageResult, register_stage

PARAMS = ("kind", "src", "dst", "splits", "split", "max_shard_samples", "max_shard_bytes", "workers", "tasks")


def shard_tasks(params: dict[str, Any]) -> int:
    """``params.tasks`` (default 1), checked: an int >= 1; > 1 needs ``max_shard_samples``."""
    tasks = params.get("tasks", 1)
    if not isinstance(tasks, int) or isinstance(tasks, bool) or tasks < 1:
        raise ConfigError(f"shard params.tasks={tasks!r}: expected an int >= 1 (array tasks writing shards)")
    if tasks > 1 and params.get("max_shard_samples") is None:
        raise ConfigError(f"shard params.tasks={tasks}: needs params.max_shard_samples, so that each task "
                          "knows its shard boundaries before encoding (e.g. max_shard_samples: 10000)")
    return tasks


@register_stage("shard", array_tasks=shard_tasks)
def shard(ctx: StageContext) -> StageResult:
    """Params: kind, src, dst (default ``<output_dir>/data``), splits (default: all present),
    max_shard_samples, max_shard_bytes, workers, tasks (array tasks, default 1).
    Outputs: one URL per split, ``<dst>/<split>``."""
    from frugalcv.sharding import storage, write_shards
    from frugalcv.sharding.tasks import finish_shards, write_shards_task

    unknown = sorted(set(ctx.params) - set(PARAMS))
    if unknown:
        raise ConfigError(f"stages.{ctx.stage}.params: unknown key(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(PARAMS)}")
    shard_tasks(ctx.params)
    dst = ctx.param("dst", None) or ctx.path("data")
    splits = ctx.param("splits", None) or ctx.param("split", None)
    if not ctx.is_main:
        return StageResult()
    kind, src = ctx.param("kind"), str(ctx.param("src"))
    limits = {"max_shard_samples": ctx.param("max_shard_samples", None),
              "max_shard_bytes": ctx.param("max_shard_bytes", None)}
    if ctx.array is not None and not ctx.array.is_final:
        reports = write_shards_task(kind, src, dst, splits, ctx.array.index, ctx.array.count,
                                    workers=int(ctx.param("workers", 0)), **limits)
        for split, r in reports.items():
            ctx.printer(f"shard {split} task {ctx.array.index}/{ctx.array.count}: shards "
                        f"{r.shards.start}..{r.shards.stop - 1}: {r.written} written, {r.skipped} already there")
        return StageResult(metrics={f"{split}_shards_written": float(r.written) for split, r in reports.items()})
    if ctx.array is not None:
        manifests = finish_shards(kind, src, dst, splits, **limits)
    else:
        manifests = write_shards(kind, src, dst, split=splits, workers=int(ctx.param("workers", 0)),
                                 progress=False, **limits)
    metrics = {f"{split}_samples": float(m.num_samples) for split, m in manifests.items()}
    metrics.update({f"{split}_shards": float(len(m.shards)) for split, m in manifests.items()})
    for split, m in manifests.items():
        ctx.printer(f"shard {split}: {m.num_samples} samples in {len(m.shards)} shards -> {m.location}")
    return StageResult(metrics=metrics, outputs={split: storage.join(dst, split) for split in manifests})
