"""The training loader: equal per-rank counts, a world-size-free order, exact resume.

See ``order.py`` for how the epoch's order is built and dealt. Each worker reads
only the shards that hold its samples, keeps only its own members (others are
seeked past, not read), decodes, applies ``transform`` and collates.

Skip policy: with ``on_error="skip"`` a sample that fails to decode is logged and
left out of its batch (the batch count is unchanged, so DDP ranks stay in step);
past ``max_skipped`` skipped samples in one loader process the loader raises.
Structural damage (a truncated shard, a bad header) always raises, and so does a shard whose
bytes do not match the manifest's sha256: each worker hashes a shard on its last pass over it
in the epoch (that pass reads the shard from byte 0 to its end; ``stream.py`` says what is
verified when). A dropped connection is resumed at the byte it reached (``FRUGALCV_IO_ATTEMPTS``).
An error in a worker reaches the training process as the same one-line error, without the
worker's traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import weakref
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

from frugalcv.errors import FrugalError, ShardError
from frugalcv.sharding import storage
from frugalcv.sharding.decode import decode_sample
from frugalcv.sharding.manifest import load_manifest
from frugalcv.sharding.order import batch_slices, epoch_order, rank_positions
from frugalcv.sharding.stream import ShardStream
from frugalcv.sharding.tario import iter_samples_raw

log = logging.getLogger(__name__)


def _env_rank_world() -> tuple[int, int]:
    """$RANK / $WORLD_SIZE as torchrun, submitit and frugalcv's executors export them (else 0 / 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _seed_batch(seed_base: tuple, lo: int) -> None:
    """Reseed python/numpy/torch RNGs from the batch's first global position.

    Random augmentations then depend only on (seed, epoch, position), so a run resumed
    mid-epoch (same world size and batch size) transforms every sample exactly as the
    uninterrupted run did, whatever the worker count.
    """
    import random

    seed, epoch, start, rank, world = seed_base
    position = start + lo * world + rank
    s = int(np.random.SeedSequence([int(seed), int(epoch), int(position), 0xA06]).generate_state(1)[0])
    random.seed(s)
    np.random.seed(s)
    torch.default_generator.manual_seed(s)  # the CPU generator: torch.manual_seed also visits every device backend


#: the worker-backed iterators still open; shut down before multiprocessing's own exit handler,
#: which would otherwise SIGTERM the workers (which ignore it, see below) and wait for them
_LIVE_ITERATORS: weakref.WeakSet = weakref.WeakSet()


def _shutdown_live_workers() -> None:
    for it in list(_LIVE_ITERATORS):
        with contextlib.suppress(Exception):
            it._shutdown_workers()


atexit.register(_shutdown_live_workers)  # after multiprocessing's, so it runs before it


def _ignore_stop_signals(_worker_id: int) -> None:
    """Workers leave SIGTERM / SIGUSR2 / SIGINT to the training process.

    Slurm signals every process of a job step at preemption; a worker that died of it would make
    the training process fail ("DataLoader worker killed") instead of checkpointing at the next
    step boundary. The training process stops and its loader shuts the workers down.
    """
    import signal

    for sig in (signal.SIGUSR2, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    # a SIGTERM: keep serving while the training process reaches its step boundary, but leave
    # within a grace period (SIGALRM ends the worker), so no one waits for a worker for ever
    signal.signal(signal.SIGTERM, lambda *_: signal.alarm(30))


class _WorkerFailure:
    """A frugalcv error raised in a worker, sent to the training process as a batch would be."""

    def __init__(self, error: FrugalError):
        self.shard_error = isinstance(error, ShardError)
        self.message = str(error)

    def raise_it(self):
        raise (ShardError if self.shard_error else FrugalError)(self.message) from None


class _EpochStream(IterableDataset):
    """One rank's batches of one epoch; split across DataLoader workers by batch index."""

    def __init__(self, urls, firsts, ids, batches, transform, collate, on_error, max_skipped, *, seed_base=None,
                 sample_bytes=None, cache_bytes: int = 32 << 20, window_shards: int = 8,
                 digests=None, shard_bytes=None):
        self.urls, self.firsts, self.ids, self.batches = urls, firsts, ids, batches
        #: (seed, epoch, start, rank, world): random transforms are reseeded per batch from these
        self.seed_base = seed_base
        self.transform, self.collate = transform, collate
        self.on_error, self.max_skipped = on_error, max_skipped
        #: mean bytes of a sample in each shard, and the raw bytes a worker may hold ahead of use
        self.sample_bytes = sample_bytes
        self.cache_bytes, self.window_shards = cache_bytes, window_shards
        #: each shard's sha256 and size from the manifest (digests None: not checked)
        self.digests, self.shard_bytes = digests, shard_bytes

    def _chunk(self, s: int) -> int:
        """How many of its next samples of shard ``s`` a worker reads in one pass over the shard:
        its share of the cache budget (the window's shards are read interleaved)."""
        if self.sample_bytes is None:
            return 1 << 62
        per_shard = self.cache_bytes // max(1, min(self.window_shards, len(self.urls)))
        return max(1, int(per_shard // max(1.0, self.sample_bytes[s])))

    def __iter__(self):
        if get_worker_info() is None:
            yield from self._batches()
            return
        try:
            yield from self._batches()
        except FrugalError as e:  # torch would re-raise it with the worker's traceback in its message
            yield -1, _WorkerFailure(e)

    def _batches(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        mine = list(range(wid, len(self.batches), nw))
        if not mine:
            return
        needed_ids = np.concatenate([self.ids[slice(*self.batches[b])] for b in mine])
        shard_of = np.searchsorted(self.firsts, needed_ids, side="right") - 1
        # each shard's samples in the order this worker consumes them; read a chunk at a time, so
        # the members held ahead of use stay within the cache budget however large the window
        need: dict[int, list[int]] = {}
        for s, gid in zip(shard_of.tolist(), needed_ids.tolist(), strict=True):
            need.setdefault(s, []).append(gid)
        taken = dict.fromkeys(need, 0)
        cache: dict[int, tuple[str, dict]] = {}
        skipped = 0
        for b in mine:
            lo, hi = self.batches[b]
            if self.transform is not None and self.seed_base is not None:
                _seed_batch(self.seed_base, lo)
            samples = []
            for gid in self.ids[lo:hi].tolist():
                if gid not in cache:
                    s = int(np.searchsorted(self.firsts, gid, side="right") - 1)
                    chunk = need[s][taken[s]:taken[s] + self._chunk(s)]
                    taken[s] += len(chunk)
                    self._load(s, {g - int(self.firsts[s]) for g in chunk}, cache, last_pass=taken[s] == len(need[s]))
                    if gid not in cache:
                        raise ShardError(f"{self.urls[s]}: sample {gid - int(self.firsts[s])} is missing from the shard")
                key, fields, url = cache.pop(gid)
                try:
                    sample = decode_sample(key, fields, url)
                except ShardError as e:
                    if self.on_error != "skip":
                        raise
                    skipped += 1
                    log.warning("skipping sample (%d skipped so far): %s", skipped, e)
                    if skipped > self.max_skipped:
                        raise ShardError(f"more than max_skipped={self.max_skipped} samples failed to decode; last: {e}") from e
                    continue
                samples.append(self.transform(sample) if self.transform else sample)
            yield hi, (self.collate(samples) if samples else None)

    def _load(self, s: int, wanted: set[int], cache: dict, last_pass: bool = False) -> None:
        """Read the ``wanted`` samples (indices within the shard) of shard ``s`` into ``cache``.

        A pass stops at the last one, seeking past the members of other samples; the last pass
        over a shard reads (and hashes) it to its end instead and checks its sha256.
        """
        verify = last_pass and self.digests is not None
        sha256 = self.digests[s] if verify else None
        size = self.shard_bytes[s] if verify else None
        first, last = int(self.firsts[s]), max(wanted)
        with ShardStream(self.urls[s], sha256=sha256, size=size) as f:
            for idx, key, fields in iter_samples_raw(f, f.shown, wanted):
                if fields is not None:
                    cache[first + idx] = (key, fields, f.shown)
                if idx >= last:
                    break
            f.finish()


def _epoch_plan(sizes, seed: int, epoch: int, window_shards: int, shuffle: bool, position: int, rank: int,
                world_size: int, batch_size: int, drop_last: bool):
    """(sample ids, batch slices) of one rank for the rest of an epoch from ``position``."""
    order = epoch_order(sizes, seed, epoch, window_shards, shuffle)
    pos = rank_positions(len(order), position, rank, world_size)
    return order[pos], batch_slices(len(pos), batch_size, drop_last)


def _workers_alive(dl: DataLoader) -> bool:
    """Every worker process of a persistent DataLoader is still running."""
    it = getattr(dl, "_iterator", None)
    return it is not None and all(w.is_alive() for w in getattr(it, "_workers", ()))


class _PersistentStream(_EpochStream):
    """The stream of persistent workers: each epoch it reads (epoch, position) from shared memory,
    which the training process sets before it starts the epoch, and plans that epoch itself."""

    def __init__(self, sizes, plan_args: dict, cursor: torch.Tensor, **kwargs):
        super().__init__(ids=None, batches=None, **kwargs)
        self.sizes, self.plan_args, self.cursor = sizes, plan_args, cursor

    def __iter__(self):
        epoch, start = (int(v) for v in self.cursor.tolist())
        a = self.plan_args
        self.ids, self.batches = _epoch_plan(self.sizes, a["seed"], epoch, a["window_shards"], a["shuffle"], start,
                                             a["rank"], a["world_size"], a["batch_size"], a["drop_last"])
        self.seed_base = (a["seed"], epoch, start, a["rank"], a["world_size"])
        yield from super().__iter__()


class ShardLoader:
    """Batches of one rank for training; iterate once per epoch.

    Args:
        url: dataset folder (or its manifest.json), any fsspec URL.
        batch_size: per-rank batch size.
        rank, world_size: default to $RANK/$WORLD_SIZE (torchrun, submitit), else 0/1.
        num_workers: DataLoader worker processes (0 = in this process).
        seed, epoch: the order depends only on these (and the dataset).
        transform: sample dict -> sample dict (runs in the workers).
        window_shards: shards shuffled together (more = better mixing).
        cache_mb: raw sample bytes a worker reads ahead of use (per worker): a window larger than
            this is read in several passes over its shards, so memory does not grow with the
            dataset; raise it on object stores, where each pass is another ranged read.
        check_sha256: hash each shard as it is read and raise ShardError naming it when it does
            not match the manifest (each worker checks a shard on its last pass over it).
        persistent_workers: keep the worker processes from one epoch to the next (they plan each
            epoch themselves from the cursor), instead of starting them again every epoch.
    """

    def __init__(
        self,
        url: str,
        batch_size: int,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        transform: Callable[[dict], dict] | None = None,
        collate: Callable[[list], object] = default_collate,
        drop_last: bool = False,
        window_shards: int = 8,
        cache_mb: float = 16,
        on_error: str = "raise",
        max_skipped: int = 100,
        prefetch_factor: int = 4,
        pin_memory: bool = False,
        check_sha256: bool = True,
        persistent_workers: bool = True,
    ):
        if on_error not in ("raise", "skip"):
            raise FrugalError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if batch_size < 1:
            raise FrugalError(f"batch_size must be >= 1, got {batch_size}")
        self.manifest = load_manifest(url)
        r, w = _env_rank_world()
        self.rank = r if rank is None else rank
        self.world_size = w if world_size is None else world_size
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.shuffle, self.transform, self.collate, self.drop_last = shuffle, transform, collate, drop_last
        self.window_shards, self.on_error, self.max_skipped = window_shards, on_error, max_skipped
        if cache_mb <= 0:
            raise FrugalError(f"cache_mb must be > 0, got {cache_mb}")
        self.cache_bytes = int(cache_mb * (1 << 20))
        self.prefetch_factor, self.pin_memory = prefetch_factor, pin_memory
        self._urls = [self.manifest.shard_url(i) for i in range(len(self.manifest.shards))]
        self._sizes = [s.samples for s in self.manifest.shards]
        self._firsts = np.asarray([s.first for s in self.manifest.shards], dtype=np.int64)
        self._sample_bytes = [s.bytes / max(1, s.samples) for s in self.manifest.shards]
        self._digests = [s.sha256 for s in self.manifest.shards] if check_sha256 else None
        self._shard_bytes = [s.bytes for s in self.manifest.shards]
        self.epoch, self.position = epoch, 0
        self.persistent_workers = persistent_workers
        #: the persistent workers' DataLoader, the settings it was made for, and the shared cursor
        self._workers: tuple[DataLoader, tuple, torch.Tensor] | None = None

    @property
    def num_samples(self) -> int:
        return self.manifest.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; moving to another epoch starts it from the beginning."""
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def _plan_args(self) -> dict:
        return {"seed": self.seed, "window_shards": self.window_shards, "shuffle": self.shuffle, "rank": self.rank,
                "world_size": self.world_size, "batch_size": self.batch_size, "drop_last": self.drop_last}

    def _plan(self):
        return _epoch_plan(self._sizes, epoch=self.epoch, position=self.position, **self._plan_args())

    def _stream_args(self) -> dict:
        return dict(urls=self._urls, firsts=self._firsts, transform=self.transform, collate=self.collate,
                    on_error=self.on_error, max_skipped=self.max_skipped, sample_bytes=self._sample_bytes,
                    cache_bytes=self.cache_bytes, window_shards=self.window_shards, digests=self._digests,
                    shard_bytes=self._shard_bytes)

    def _data_loader(self, stream: IterableDataset, persistent: bool) -> DataLoader:
        return DataLoader(
            stream,
            batch_size=None,
            num_workers=self.num_workers,
            prefetch_factor=self.prefetch_factor,
            pin_memory=self.pin_memory,
            persistent_workers=persistent,
            # worker seeds from (seed, epoch, rank), not from the global torch RNG
            generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 1009 + self.rank),
            worker_init_fn=_ignore_stop_signals,
        )

    def _persistent_iter(self, start: int):
        """This epoch's iterator over the persistent workers, started (again) when the settings changed."""
        settings = (tuple(sorted(self._plan_args().items())), self.transform, self.collate, self.num_workers,
                    self.pin_memory, self.prefetch_factor, self.on_error, self.max_skipped, self.cache_bytes)
        if self._workers is not None and (self._workers[1] != settings or not _workers_alive(self._workers[0])):
            self.close()
        if self._workers is None:
            cursor = torch.zeros(2, dtype=torch.int64).share_memory_()
            stream = _PersistentStream(self._sizes, self._plan_args(), cursor, **self._stream_args())
            self._workers = (self._data_loader(stream, persistent=True), settings, cursor)
        dl, _, cursor = self._workers
        cursor[0], cursor[1] = self.epoch, start  # read by the workers when the epoch starts
        return iter(dl)

    @property
    def worker_pids(self) -> list[int]:
        """The process ids of the persistent workers now running (empty before the first epoch)."""
        it = getattr(self._workers[0], "_iterator", None) if self._workers is not None else None
        return [w.pid for w in getattr(it, "_workers", ()) if w.is_alive()]

    def close(self) -> None:
        """Stop the persistent workers (the next epoch starts new ones)."""
        if self._workers is not None:
            it = getattr(self._workers[0], "_iterator", None)
            if it is not None:
                with contextlib.suppress(Exception):
                    it._shutdown_workers()
            self._workers = None

    def __len__(self) -> int:
        return len(self._plan()[1])

    def samples_per_rank(self) -> int:
        return len(self._plan()[0])

    def __iter__(self) -> Iterator:
        start = self.position
        if self.num_workers > 0 and self.persistent_workers:
            it = self._persistent_iter(start)
            _LIVE_ITERATORS.add(it)
        else:
            ids, batches = self._plan()
            stream = _EpochStream(ids=ids, batches=batches, seed_base=(self.seed, self.epoch, start, self.rank,
                                                                       self.world_size), **self._stream_args())
            if self.num_workers > 0:
                it = iter(self._data_loader(stream, persistent=False))
                _LIVE_ITERATORS.add(it)
            else:
                it = iter(stream)
        for consumed, batch in it:
            if isinstance(batch, _WorkerFailure):
                it._shutdown_workers()  # now: the raised error's traceback keeps the iterator alive
                self._workers = None
                batch.raise_it()
            self.position = start + int(consumed) * self.world_size
            if batch is not None:
                yield batch
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict:
        """Cursor shared by all ranks: (epoch, global samples consumed this epoch)."""
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "num_samples": self.num_samples,
            "window_shards": self.window_shards,
            "shuffle": self.shuffle,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["num_samples"] != self.num_samples:
            raise FrugalError(
                f"loader state is for a dataset of {state['num_samples']} samples, but "
                f"{storage.redact(self.manifest.location)} has {self.num_samples}"
            )
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
        self.window_shards, self.shuffle = state["window_shards"], state["shuffle"]
