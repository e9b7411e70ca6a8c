"""Params of ``scn.mine``: the ``voc-pairs`` mining options plus where the VOC folder is and how to write."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from frugalcv.sharding.sources.voc_pairs import VOC_SPLITS, VocPairOptions
from frugalcv.workflows import kit


@dataclass(kw_only=True)
class MineParams(VocPairOptions):
    """Params of ``scn.mine``: the options of the ``voc-pairs`` kind (``pairs`` .. ``seed``), then the VOC
    folder and how the shards are written."""

    #: the VOC year folder holding JPEGImages/, Annotations/, ImageSets/ (VOCdevkit/VOC2012; a path or fsspec URL)
    src: str
    #: where the splits go (default ``<output_dir>/pairs``); writes ``<dst>/<split>``
    dst: str | None = None
    #: the image lists (ImageSets/Main/<split>.txt) to mine
    splits: list[str] = field(default_factory=lambda: ["trainval"])
    #: pairs per output shard (needed with tasks > 1; else shards are cut at 256 MB)
    max_shard_samples: int | None = None
    #: array tasks writing disjoint ranges of shards (a Slurm job array under the slurm executor)
    tasks: int = 1
    #: encoding processes per task (0 or 1: in the stage's own process)
    workers: int = 0

    def __post_init__(self):
        bad = self.problem()
        if bad:
            raise kit.FieldError(*bad)
        if not self.splits:
            raise kit.FieldError("splits", "empty: name at least one image list, e.g. [trainval]")
        for split in self.splits:
            if split not in VOC_SPLITS:
                raise kit.FieldError("splits", f"unknown split {split!r}; use {', '.join(VOC_SPLITS)}")
        if len(set(self.splits)) != len(self.splits):
            raise kit.FieldError("splits", f"{self.splits}: a split is named twice")
        if self.max_shard_samples is not None and self.max_shard_samples < 1:
            raise kit.FieldError("max_shard_samples", f"{self.max_shard_samples}: must be >= 1")
        if self.tasks < 1:
            raise kit.FieldError("tasks", f"{self.tasks}: expected an int >= 1 (array tasks writing shards)")
        if self.tasks > 1 and self.max_shard_samples is None:
            raise kit.FieldError("tasks", f"{self.tasks}: needs params.max_shard_samples, so that each task "
                                 "knows its shard boundaries before mining (e.g. max_shard_samples: 5000)")
        if self.workers < 0:
            raise kit.FieldError("workers", f"{self.workers}: must be >= 0")

    def options(self) -> dict:
        """The ``voc-pairs`` options of these params, as the source takes them."""
        return {f.name: getattr(self, f.name) for f in fields(VocPairOptions)}
