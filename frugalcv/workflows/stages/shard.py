"""``shard``: a dataset in its on-disk layout -> WebDataset shards + manifest per split."""

from __future__ import annotations

from frugalcv.errors import ConfigError
from frugalcv.workflows.stages import StageContext, StageResult, register_stage

PARAMS = ("kind", "src", "dst", "splits", "split", "max_shard_samples", "max_shard_bytes", "workers")


@register_stage("shard")
def shard(ctx: StageContext) -> StageResult:
    """Params: kind, src, dst (default ``<output_dir>/data``), splits (default: all present),
    max_shard_samples, max_shard_bytes, workers. Outputs: one URL per split, ``<dst>/<split>``."""
    from frugalcv.sharding import storage, write_shards

    unknown = sorted(set(ctx.params) - set(PARAMS))
    if unknown:
        raise ConfigError(f"stages.{ctx.stage}.params: unknown key(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(PARAMS)}")
    dst = ctx.param("dst", None) or ctx.path("data")
    splits = ctx.param("splits", None) or ctx.param("split", None)
    if not ctx.is_main:
        return StageResult()
    manifests = write_shards(ctx.param("kind"), str(ctx.param("src")), dst, split=splits,
                             max_shard_samples=ctx.param("max_shard_samples", None),
                             max_shard_bytes=ctx.param("max_shard_bytes", None),
                             workers=int(ctx.param("workers", 0)), progress=False)
    metrics = {f"{split}_samples": float(m.num_samples) for split, m in manifests.items()}
    metrics.update({f"{split}_shards": float(len(m.shards)) for split, m in manifests.items()})
    for split, m in manifests.items():
        ctx.printer(f"shard {split}: {m.num_samples} samples in {len(m.shards)} shards -> {m.location}")
    return StageResult(metrics=metrics, outputs={split: storage.join(dst, split) for split in manifests})
