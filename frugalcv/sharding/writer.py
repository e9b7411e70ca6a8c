"""Convert a dataset source into WebDataset shards plus a manifest, resumably.

Each split goes to ``DST/<split>/``: ``<split>-000000.tar, ...`` then ``manifest.json``.
After each shard is stored, a small record goes to ``_progress/``; a rerun after an
interruption verifies those records and continues after the last complete shard.
The manifest is written last, then the progress records are removed.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
from collections.abc import Iterable, Iterator

from tqdm import tqdm

from frugalcv import __version__
from frugalcv.errors import FrugalError, SourceLayoutError
from frugalcv.sharding import storage
from frugalcv.sharding.manifest import MANIFEST_NAME, Manifest, ShardInfo, load_manifest
from frugalcv.sharding.sources.base import EncodedSample, Source, get_source, source_class
from frugalcv.sharding.tario import TarBuilder, sample_bytes

log = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_BYTES = 256 << 20
PROGRESS_DIR = "_progress"
_END_PADDING = 10240  # worst-case end-of-archive blocks and record padding


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def write_shards(
    kind: str,
    src: str,
    dst: str,
    split: str | Iterable[str] | None = None,
    *,
    max_shard_bytes: int | None = None,
    max_shard_samples: int | None = None,
    workers: int = 0,
    progress: bool = True,
    options: dict | None = None,
) -> dict[str, Manifest]:
    """Shard the ``split``(s) of dataset ``kind`` at ``src`` into ``dst``; returns split -> Manifest.

    ``split=None`` converts every split of the kind that is present in ``src``; ``options`` are the
    kind's own settings, for the kinds that take some.
    """
    sources = _sources(kind, src, split, options)
    out = {}
    for source in sources:
        out[source.split] = write_split(
            source,
            storage.join(dst, source.split),
            max_shard_bytes=max_shard_bytes,
            max_shard_samples=max_shard_samples,
            workers=workers,
            progress=progress,
        )
    return out


def _sources(kind: str, src: str, split: str | Iterable[str] | None, options: dict | None = None) -> list[Source]:
    options = dict(options or {})
    if split is None:
        sources = []
        errors = []
        for s in source_class(kind).splits:
            try:
                sources.append(get_source(kind, src, s, **options))
            except SourceLayoutError as e:
                errors.append(e)
        if not sources:
            raise errors[0]
        for e in errors:
            log.warning("skipping split (pass --split to make this an error): %s", e)
    else:
        names = [split] if isinstance(split, str) else list(split)
        sources = [get_source(kind, src, s, **options) for s in names]
    return sources


def _check_limits(max_shard_bytes: int | None, max_shard_samples: int | None) -> int:
    """The byte limit to use; raises for limits that cannot work."""
    max_bytes = int(max_shard_bytes or DEFAULT_MAX_SHARD_BYTES)
    if max_bytes < 4096:
        raise FrugalError(f"--max-shard-bytes {max_bytes} is too small; use at least 4096")
    if max_shard_samples is not None and max_shard_samples < 1:
        raise FrugalError(f"--max-shard-samples must be >= 1, got {max_shard_samples}")
    return max_bytes


def existing_manifest(out: str, params: dict) -> Manifest | None:
    """The complete dataset at ``out`` when it was written with ``params``; None when there is none."""
    if not storage.exists(storage.join(out, MANIFEST_NAME)):
        return None
    m = load_manifest(out)
    if m.writer.get("params") != params:
        raise FrugalError(
            f"{storage.redact(out)}: a complete dataset with other settings is already there "
            f"({m.writer.get('params')}); choose another destination or delete it"
        )
    changed = m.changed_shards()
    if changed:
        _reopen(out, m, params, set(changed))
        return None
    log.info("%s: already complete (%d samples), nothing to do", storage.redact(out), m.num_samples)
    return m


def _reopen(out: str, m: Manifest, params: dict, changed: set[str]) -> None:
    """Turn a complete dataset with missing or changed shards back into an interrupted conversion:
    progress records for the shards still intact, then the manifest removed, so the next write
    redoes only what is gone."""
    shown = ", ".join(sorted(changed)[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    log.warning("%s: %d of %d shards are missing or changed size (%s); writing them again",
                storage.redact(out), len(changed), len(m.shards), shown)
    storage.write_bytes_atomic(storage.join(out, PROGRESS_DIR, "params.json"), json.dumps(params).encode())
    for info in m.shards:
        if info.url not in changed:
            record = {"shard": dict(info.__dict__)}
            storage.write_bytes_atomic(storage.join(out, PROGRESS_DIR, f"{info.url}.json"), json.dumps(record).encode())
    storage.remove(storage.join(out, MANIFEST_NAME))


def _params(source: Source, max_bytes: int, max_samples: int | None) -> dict:
    params = {
        "kind": source.kind,
        "split": source.split,
        "num_source_samples": len(source),
        "max_shard_bytes": max_bytes,
        "max_shard_samples": max_samples,
    }
    settings = source.writer_params()
    if settings:
        params["source"] = json.loads(json.dumps(settings))  # as the manifest and progress records hold it
    return params


def write_split(
    source: Source,
    out: str,
    *,
    max_shard_bytes: int | None = None,
    max_shard_samples: int | None = None,
    workers: int = 0,
    progress: bool = True,
) -> Manifest:
    max_bytes = _check_limits(max_shard_bytes, max_shard_samples)
    params = _params(source, max_bytes, max_shard_samples)
    m = existing_manifest(out, params)
    if m is not None:
        return m

    done = _completed_shards(out, params)
    first = done[-1].first + done[-1].samples if done else 0
    n = len(source)
    shards = list(done)
    if done:
        log.info("%s: resuming after %d complete shards (%d of %d samples)", storage.redact(out), len(done), first, n)
    bar = tqdm(total=n, initial=first, unit="samples", desc=f"{source.kind}/{source.split}", disable=not progress, dynamic_ncols=True)
    builder, shard_first = TarBuilder(), first
    try:
        for i, sample in enumerate(_encoded(source, first, n, workers), start=first):
            need = sample_bytes(sample.key, sample.fields)
            full = builder.samples > 0 and (
                (max_shard_samples is not None and builder.samples >= max_shard_samples)
                or builder.nbytes + need + _END_PADDING > max_bytes
            )
            if full:
                shards.append(_store(builder, out, source.split, len(shards), shard_first))
                builder, shard_first = TarBuilder(), i
            builder.add(sample.key, sample.fields)
            bar.update(1)
        if builder.samples:
            shards.append(_store(builder, out, source.split, len(shards), shard_first))
    finally:
        bar.close()
    return _finish(source, out, shards, params)


def _finish(source: Source, out: str, shards: list[ShardInfo], params: dict) -> Manifest:
    """Write the manifest (last), then drop the progress records."""
    manifest = Manifest(
        kind=source.kind,
        split=source.split,
        task=source.task,
        schema=source.schema(),
        classes=list(source.class_names()),
        shards=shards,
        extra=source.extra_manifest(),
        writer={"frugalcv_version": __version__, "params": params},
        location=out,
    )
    storage.write_bytes_atomic(storage.join(out, MANIFEST_NAME), manifest.to_json().encode())
    storage.remove(storage.join(out, PROGRESS_DIR), recursive=True)
    return manifest


def _store(builder: TarBuilder, out: str, split: str, index: int, first: int) -> ShardInfo:
    data, sha = builder.finish()
    name = shard_name(split, index)
    storage.write_bytes_atomic(storage.join(out, name), data)
    info = ShardInfo(url=name, samples=builder.samples, bytes=len(data), sha256=sha, first=first)
    record = {"shard": info.__dict__}
    storage.write_bytes_atomic(storage.join(out, PROGRESS_DIR, f"{name}.json"), json.dumps(record).encode())
    return info


def _completed_shards(out: str, params: dict) -> list[ShardInfo]:
    """Shards 0..k recorded as complete whose files are still there with the recorded size."""
    if not check_progress_params(out, params):
        return []
    done: list[ShardInfo] = []
    while (info := recorded_shard(out, shard_name(params["split"], len(done)))) is not None:
        done.append(info)
    return done


def check_progress_params(out: str, params: dict) -> bool:
    """True when ``out`` holds progress records made with ``params``; records ``params`` when there are none.

    Raises when an interrupted conversion with other settings is there."""
    pfile = storage.join(out, PROGRESS_DIR, "params.json")
    if storage.exists(pfile):
        old = json.loads(storage.read_bytes(pfile))
        if old != params:
            raise FrugalError(
                f"{storage.redact(out)}: an interrupted conversion with other settings is there ({old}); "
                f"rerun with the same settings, or delete {storage.redact(out)} to start over"
            )
        return True
    storage.write_bytes_atomic(pfile, json.dumps(params).encode())
    return False


def recorded_shard(out: str, name: str) -> ShardInfo | None:
    """The shard's progress record when its file is still there with the recorded size."""
    rec = storage.join(out, PROGRESS_DIR, f"{name}.json")
    if not storage.exists(rec):
        return None
    info = ShardInfo(**json.loads(storage.read_bytes(rec))["shard"])
    shard_url = storage.join(out, name)
    if not storage.exists(shard_url) or storage.size(shard_url) != info.bytes:
        return None
    return info


_WORKER_SOURCE: Source | None = None


def _init_worker(source: Source) -> None:
    import signal

    global _WORKER_SOURCE
    _WORKER_SOURCE = source
    # a forked worker inherits the parent's Python signal handlers (a stage's checkpoint-on-SIGTERM,
    # a program's cleanup); the pool ends its workers with SIGTERM, so they must simply die of it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _encode_in_worker(i: int) -> EncodedSample:
    assert _WORKER_SOURCE is not None
    return _WORKER_SOURCE.encode(i)


def _encoded(source: Source, first: int, n: int, workers: int) -> Iterator[EncodedSample]:
    """Encoded samples first..n-1 in order; in a process pool when workers > 1."""
    if workers <= 1 or n - first < 64:
        for i in range(first, n):
            yield source.encode(i)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(source,)) as pool:
        yield from pool.imap(_encode_in_worker, range(first, n), chunksize=16)
