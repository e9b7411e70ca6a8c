"""Datasets as WebDataset tar shards plus a manifest, on any fsspec URL.

models and sharding do not import each other's internals, MLflow, submitit or
torch.distributed (the loader takes its rank and world size as arguments or from $RANK/$WORLD_SIZE).
The loader (which imports torch) loads lazily, so `frugalcv shards info` stays quick.
"""

from frugalcv.sharding.manifest import Manifest, load_manifest
from frugalcv.sharding.reader import iter_samples, summary, verify
from frugalcv.sharding.writer import write_shards

__all__ = ["Manifest", "ShardLoader", "iter_samples", "load_manifest", "summary", "verify", "write_shards"]


def __getattr__(name):
    if name == "ShardLoader":
        from frugalcv.sharding.loader import ShardLoader

        return ShardLoader
    raise AttributeError(name)
