"""A stage's data: shard splits streamed through ``ShardLoader``, never held whole in memory.

Training streams give this rank its share of every global batch (``batch_size`` is global), in
an order that depends on (seed, epoch) only, decoded and transformed per sample in worker
processes; the loader's cursor goes into every checkpoint. Evaluation streams read a split
once, in order, on the calling rank. A smoke run caps batches at ``SMOKE_BATCH`` samples.

With a ``batch_transform``, a stream yields its batches on the stage's device, each passed
through ``batch_transform(batch, generator)``: whole-batch work (augmentation, normalisation)
that is cheap on the device and would cost the workers per sample. ``generator`` is a CPU
``torch.Generator`` seeded from (seed, epoch, the batch's position in the epoch, rank), so a
resumed stream draws what the uninterrupted one drew.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np
import torch

from frugalcv.errors import ConfigError
from frugalcv.sharding import ShardLoader, storage
from frugalcv.workflows.engine.checkpoint import LoaderEpochs
from frugalcv.workflows.engine.device import to_device

#: ``(batch, generator) -> batch``, run on the stage's device
BatchTransform = Callable[[object, torch.Generator], object]

#: per-rank batch size cap in a smoke run
SMOKE_BATCH = 8


def batch_generator(loader: ShardLoader, position: int) -> torch.Generator:
    """A CPU generator for the batch at global ``position`` of ``loader``'s epoch on its rank."""
    words = [int(loader.seed), int(loader.epoch), int(position), int(loader.rank), 0xBA7]
    return torch.Generator().manual_seed(int(np.random.SeedSequence(words).generate_state(1)[0]))


def on_device(loader: ShardLoader, batches: Iterator, transform: BatchTransform, device) -> Iterator:
    """``batches`` moved to ``device`` and passed through ``transform`` with each batch's generator."""
    while True:
        position = loader.position  # the cursor before the batch: where the batch starts
        try:
            batch = next(batches)
        except StopIteration:
            return
        yield transform(to_device(batch, device), batch_generator(loader, position))


class TrainStream(LoaderEpochs):
    """Trainer data over a ``ShardLoader``: ``epoch -> batches``, resumable from the cursor."""

    def __init__(self, loader: ShardLoader, batch_transform: BatchTransform | None = None, device="cpu"):
        super().__init__(loader)
        self.batch_transform, self.device = batch_transform, device

    def __call__(self, epoch: int) -> Iterator:
        batches = super().__call__(epoch)
        if self.batch_transform is None:
            return batches
        return on_device(self.loader, batches, self.batch_transform, self.device)

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in a full epoch (for schedules), whatever the cursor."""
        position, epoch = self.loader.position, self.loader.epoch
        self.loader.position = 0
        try:
            return len(self.loader)
        finally:
            self.loader.position, self.loader.epoch = position, epoch


class EvalStream:
    """One in-order pass over a split each time it is iterated (``limit`` batches at most)."""

    def __init__(self, loader: ShardLoader, limit: int | None = None, batch_transform: BatchTransform | None = None,
                 device="cpu"):
        self.loader, self.limit = loader, limit
        self.batch_transform, self.device = batch_transform, device

    def __iter__(self) -> Iterator:
        self.loader.set_epoch(0)
        self.loader.position = 0
        batches = iter(self.loader)
        if self.limit:
            batches = itertools.islice(batches, self.limit)
        if self.batch_transform is not None:
            batches = on_device(self.loader, batches, self.batch_transform, self.device)
        return batches

    def __len__(self) -> int:
        n = len(self.loader)
        return min(n, self.limit) if self.limit else n


def stream(ctx, url: str, batch_size: int, transform: Callable[[dict], object] | None, *,
           batch_transform: BatchTransform | None = None, train: bool = True,
           seed_offset: int = 0) -> TrainStream | EvalStream:
    """This rank's stream of ``url`` (a shard split): training (shuffled, this rank's share of each
    global batch of ``batch_size``) or evaluation (in order, every sample, on this rank).
    ``transform`` runs per sample in the workers, ``batch_transform`` per batch on ``ctx.device``."""
    if batch_size < 1:
        raise ConfigError(f"stages.{ctx.stage}.params.batch_size={batch_size}: must be >= 1")
    world = ctx.world_size if train else 1
    if train and batch_size < world:
        raise ConfigError(f"stages.{ctx.stage}.params.batch_size={batch_size} is smaller than the world size "
                          f"{world}: every rank needs at least one sample per step")
    per_rank = batch_size // world
    if ctx.smoke_steps:
        per_rank = min(per_rank, SMOKE_BATCH)
    loader = ShardLoader(url, per_rank, rank=ctx.rank if train else 0, world_size=world,
                         num_workers=ctx.num_workers, seed=int(ctx.param("seed", 0)) + seed_offset, shuffle=train,
                         transform=transform, pin_memory=str(ctx.device).startswith("cuda"),
                         persistent_workers=train)  # evaluation's workers would idle between its passes
    if not train:
        return EvalStream(loader, ctx.smoke_steps, batch_transform, ctx.device)
    # full batches only (BatchNorm and equal steps), unless a rank's share is smaller than one
    loader.drop_last = loader.samples_per_rank() >= per_rank
    return TrainStream(loader, batch_transform, ctx.device)


class PairedStream:
    """Trainer data pairing each batch of ``main`` with the next batch of ``other``: ``(main_batch, other_batch)``.

    ``main`` sets the epochs; ``other`` is drawn at random and cycles through its own epochs
    independently (a second domain, unlabelled images, ...). Both cursors are in its
    ``state_dict``, so a resumed run draws exactly the ``other`` batches the uninterrupted one drew.
    """

    def __init__(self, main: TrainStream, other: TrainStream):
        self.main, self.other = main, other

    @property
    def loader(self) -> ShardLoader:
        return self.main.loader

    @property
    def steps_per_epoch(self) -> int:
        return self.main.steps_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.main.loader.set_epoch(epoch)

    def _others(self) -> Iterator:
        while True:
            yielded, fresh = False, self.other.loader.position == 0
            for batch in self.other(self.other.loader.epoch):
                yielded = True
                yield batch
            if not yielded and fresh:  # a whole epoch without one batch
                raise ConfigError(f"{storage.redact(self.other.loader.manifest.location)}: yields no batch of "
                                  f"{self.other.loader.batch_size} samples; give more samples or a smaller batch")

    def __call__(self, epoch: int) -> Iterator:
        others = self._others()
        batches = self.main(epoch)
        try:
            for batch in batches:
                yield batch, next(others)
        finally:
            for it in (batches, others):
                close = getattr(it, "close", None)
                if close is not None:
                    close()

    def state_dict(self) -> dict:
        return {"main": self.main.state_dict(), "other": self.other.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.main.load_state_dict(state["main"])
        self.other.load_state_dict(state["other"])

    def close(self) -> None:
        self.main.close()
        self.other.close()


def pair(main: TrainStream, other: TrainStream) -> PairedStream:
    """Trainer data of ``(main batch, other batch)``; see ``PairedStream``."""
    if not isinstance(main, TrainStream) or not isinstance(other, TrainStream):
        raise ConfigError("kit.pair takes two training streams (kit.stream(..., train=True))")
    return PairedStream(main, other)
