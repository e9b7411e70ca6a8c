"""``shard``: a dataset in its on-disk layout -> WebDataset shards + manifest per split.

With ``tasks: N`` (N > 1) the stage runs as N array tasks (a Slurm job array under the slurm
executor, one after another in-process under inline/local): task t writes a disjoint, contiguous
range of shard indices of every split (``frugalcv.sharding.tasks``), and the runner's final step
writes each manifest once every task has succeeded. The shards are byte-identical to a one-task
run; a rerun writes only the shards that are missing. N > 1 needs ``max_shard_samples`` (shard
boundaries must be known before encoding).
"""

from __future__ import annotations

from dataclasses import dataclass

from frugalcv.workflows.pipeline.schema import FieldError, unknown_key
from frugalcv.workflows.pipeline.stages import StageContext, StageResult, register_stage


@dataclass(kw_only=True)
class ShardParams:
    """Params of the ``shard`` stage (``frugalcv shard``'s options)."""

    #: the source format: a ``frugalcv shard`` kind (cifar10, imagefolder, cityscapes, ...)
    kind: str
    #: the dataset in its on-disk layout (a folder), or ``sklearn`` for digits, street-scenes and video-digits
    src: str
    #: where the splits go (default ``<output_dir>/data``); writes ``<dst>/<split>``
    dst: str | None = None
    #: the splits to convert (default: every split present)
    splits: list[str] | None = None
    split: str | None = None
    max_shard_samples: int | None = None
    max_shard_bytes: int | str | None = None
    workers: int = 0
    #: array tasks writing disjoint ranges of shards (a Slurm job array under the slurm executor)
    tasks: int = 1

    def __post_init__(self):
        if self.tasks < 1:
            raise FieldError("tasks", f"{self.tasks}: expected an int >= 1 (array tasks writing shards)")
        if self.tasks > 1 and self.max_shard_samples is None:
            raise FieldError("tasks", f"{self.tasks}: needs params.max_shard_samples, so that each task knows "
                             "its shard boundaries before encoding (e.g. max_shard_samples: 10000)")
        if self.workers < 0:
            raise FieldError("workers", f"{self.workers}: must be >= 0")
        from frugalcv.sharding.sources import SOURCES

        if self.kind not in SOURCES:
            raise FieldError("kind", unknown_key(self.kind, sorted(SOURCES)).replace("unknown key", "unknown kind").replace("Allowed keys", "Kinds"))


def shard_tasks(params: ShardParams) -> int:
    """How many array tasks the stage runs as (``params.tasks``, checked in ``ShardParams``)."""
    return params.tasks


def shard_outputs(params: ShardParams) -> list[str]:
    """One output per split: the ``splits`` asked for, else every split the kind may have."""
    from frugalcv.sharding.sources import SOURCES

    if params.splits or params.split:
        return list(params.splits or [params.split])
    return list(SOURCES[params.kind].splits)


@register_stage("shard", params=ShardParams, array_tasks=shard_tasks, outputs=shard_outputs)
def shard(ctx: StageContext) -> StageResult:
    """Outputs: one URL per split, ``<dst>/<split>``."""
    p: ShardParams = ctx.params
    return shard_splits(ctx, p.kind, p.src, p.dst or ctx.path("data"), p.splits or p.split,
                        max_shard_samples=p.max_shard_samples, max_shard_bytes=p.max_shard_bytes, workers=p.workers)


def shard_splits(ctx: StageContext, kind: str, src: str, dst: str, splits: str | list[str] | None, *,
                 options: dict | None = None, max_shard_samples: int | None = None,
                 max_shard_bytes: int | str | None = None, workers: int = 0, name: str = "shard") -> StageResult:
    """The body of a stage that writes the ``splits`` of ``kind`` (with the kind's ``options``) to
    ``<dst>/<split>``: this array task's shards, the final step's manifests, or all of it in one
    call; metrics and outputs as the ``shard`` stage's. ``name`` prefixes its printed lines."""
    from frugalcv.sharding import storage, write_shards
    from frugalcv.sharding.tasks import finish_shards, write_shards_task

    if not ctx.is_main:
        return StageResult()
    limits = {"max_shard_samples": max_shard_samples, "max_shard_bytes": max_shard_bytes}
    if ctx.array is not None and not ctx.array.is_final:
        reports = write_shards_task(kind, src, dst, splits, ctx.array.index, ctx.array.count,
                                    workers=workers, options=options, **limits)
        for split, r in reports.items():
            ctx.printer(f"{name} {split} task {ctx.array.index}/{ctx.array.count}: shards "
                        f"{r.shards.start}..{r.shards.stop - 1}: {r.written} written, {r.skipped} already there")
        return StageResult(metrics={f"{split}_shards_written": float(r.written) for split, r in reports.items()})
    if ctx.array is not None:
        manifests = finish_shards(kind, src, dst, splits, options=options, **limits)
    else:
        manifests = write_shards(kind, src, dst, split=splits, workers=workers,
                                 progress=False, options=options, **limits)
    metrics = {f"{split}_samples": float(m.num_samples) for split, m in manifests.items()}
    metrics.update({f"{split}_shards": float(len(m.shards)) for split, m in manifests.items()})
    for split, m in manifests.items():
        ctx.printer(f"{name} {split}: {m.num_samples} samples in {len(m.shards)} shards -> {m.location}")
    return StageResult(metrics=metrics, outputs={split: storage.join(dst, split) for split in manifests})
