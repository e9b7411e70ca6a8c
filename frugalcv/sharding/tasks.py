"""One dataset written by N independent tasks (a Slurm job array), then finished by one final step.

With ``max_shard_samples`` S, shard k holds samples ``[k*S, min((k+1)*S, n))``: the boundaries are
known without encoding anything, so task t of N writes the shards ``task_shards(num_shards, t, N)``
and the shards are byte-identical to a single-process :func:`~frugalcv.sharding.writer.write_split`
with the same settings. A shard that would pass ``max_shard_bytes`` (where a single process would
have cut it early) is an error: lower ``max_shard_samples``. Each stored shard gets its
``_progress/`` record, as in ``write_split``, so a rerun writes only the missing shards; the
manifest is written by :func:`finish_shards`, once every shard is there, never by a task.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from frugalcv.errors import FrugalError
from frugalcv.sharding import storage
from frugalcv.sharding.manifest import Manifest, ShardInfo
from frugalcv.sharding.sources.base import Source
from frugalcv.sharding.tario import TarBuilder, sample_bytes
from frugalcv.sharding.writer import (
    _END_PADDING,
    _check_limits,
    _encoded,
    _finish,
    _params,
    _sources,
    _store,
    check_progress_params,
    existing_manifest,
    recorded_shard,
    shard_name,
)

log = logging.getLogger(__name__)


def shard_bounds(num_samples: int, max_shard_samples: int) -> list[tuple[int, int]]:
    """``[(first, end), ...]`` of every shard: ``max_shard_samples`` each, the last one shorter."""
    if max_shard_samples < 1:
        raise FrugalError(f"max_shard_samples must be >= 1, got {max_shard_samples}")
    return [(first, min(first + max_shard_samples, num_samples))
            for first in range(0, num_samples, max_shard_samples)]


def task_shards(num_shards: int, task: int, tasks: int) -> range:
    """The shard indices task ``task`` of ``tasks`` writes: contiguous, disjoint, together all of them.

    Sizes differ by at most one; with more tasks than shards some tasks get an empty range."""
    if tasks < 1 or not 0 <= task < tasks:
        raise FrugalError(f"task {task} of {tasks}: expected 0 <= task < tasks")
    return range(task * num_shards // tasks, (task + 1) * num_shards // tasks)


@dataclass(frozen=True)
class TaskReport:
    """What one task did for one split."""

    shards: range
    written: int
    skipped: int  # already complete from an earlier attempt


def _require_samples(max_shard_samples: int | None) -> int:
    if max_shard_samples is None:
        raise FrugalError("sharding as several tasks needs max_shard_samples (shard boundaries must be "
                          "known before encoding); set it, or use one task")
    return int(max_shard_samples)


def write_split_task(source: Source, out: str, task: int, tasks: int, *, max_shard_bytes: int | None = None,
                     max_shard_samples: int | None = None, workers: int = 0) -> TaskReport:
    """Write the shards of task ``task`` of ``tasks`` that are not already complete; no manifest."""
    max_bytes = _check_limits(max_shard_bytes, max_shard_samples)
    size = _require_samples(max_shard_samples)
    params = _params(source, max_bytes, max_shard_samples)
    bounds = shard_bounds(len(source), size)
    mine = task_shards(len(bounds), task, tasks)
    if existing_manifest(out, params) is not None:
        return TaskReport(mine, 0, len(mine))
    check_progress_params(out, params)
    written = skipped = 0
    for index in mine:
        first, end = bounds[index]
        done = recorded_shard(out, shard_name(source.split, index))
        if done is not None and (done.first, done.samples) == (first, end - first):
            skipped += 1
            continue
        builder = TarBuilder()
        for i, sample in enumerate(_encoded(source, first, end, workers), start=first):
            need = sample_bytes(sample.key, sample.fields)
            if builder.samples and builder.nbytes + need + _END_PADDING > max_bytes:
                raise FrugalError(f"{storage.redact(out)}: shard {index} would pass max_shard_bytes={max_bytes} "
                                  f"at sample {i}; lower max_shard_samples (now {size}) so that "
                                  f"{size} samples fit, or use one task")
            builder.add(sample.key, sample.fields)
        _store(builder, out, source.split, index, first)
        written += 1
    log.info("%s: task %d/%d wrote %d shard(s), %d already there", storage.redact(out), task, tasks,
             written, skipped)
    return TaskReport(mine, written, skipped)


def finish_split(source: Source, out: str, *, max_shard_bytes: int | None = None,
                 max_shard_samples: int | None = None) -> Manifest:
    """Write the manifest once every shard of every task is there; raise naming the missing ones."""
    max_bytes = _check_limits(max_shard_bytes, max_shard_samples)
    params = _params(source, max_bytes, max_shard_samples)
    m = existing_manifest(out, params)
    if m is not None:
        return m
    bounds = shard_bounds(len(source), _require_samples(max_shard_samples))
    check_progress_params(out, params)
    shards: list[ShardInfo] = []
    missing: list[int] = []
    for index, (first, end) in enumerate(bounds):
        info = recorded_shard(out, shard_name(source.split, index))
        if info is None or (info.first, info.samples) != (first, end - first):
            missing.append(index)
        else:
            shards.append(info)
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise FrugalError(f"{storage.redact(out)}: {len(missing)} of {len(bounds)} shard(s) missing "
                          f"(indices {shown}); rerun the stage to write them, no manifest written")
    return _finish(source, out, shards, params)


def write_shards_task(kind: str, src: str, dst: str, split: str | Iterable[str] | None, task: int, tasks: int,
                      *, options: dict | None = None, **kwargs) -> dict[str, TaskReport]:
    """:func:`write_split_task` for each split (as in ``write_shards``); split -> TaskReport."""
    return {s.split: write_split_task(s, storage.join(dst, s.split), task, tasks, **kwargs)
            for s in _sources(kind, src, split, options)}


def finish_shards(kind: str, src: str, dst: str, split: str | Iterable[str] | None = None, *,
                  max_shard_bytes: int | None = None, max_shard_samples: int | None = None,
                  options: dict | None = None) -> dict[str, Manifest]:
    """:func:`finish_split` for each split; split -> Manifest."""
    return {s.split: finish_split(s, storage.join(dst, s.split), max_shard_bytes=max_shard_bytes,
                                  max_shard_samples=max_shard_samples)
            for s in _sources(kind, src, split, options)}
