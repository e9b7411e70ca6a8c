"""Loader throughput: the frugalcv ShardLoader against plain webdataset, an in-memory bound
and one file per sample, on local disk and (frugalcv, webdataset) against a local S3 endpoint.

    .venv/bin/python benchmarks/loader_throughput.py [--samples 16000] [--measure 4096] [--repeats 5] [--no-s3]
        [--no-sha256]

Data: a CIFAR-10 "python version" fixture (the real pickle batch layout) of random 32x32 crops
of scikit-learn's bundled sample images, sharded by ``write_shards("cifar10", ...)`` with 1000
samples per shard, all in a temporary folder (deleted at the end). Nothing is downloaded.

Every variant uses 2 DataLoader worker processes, batches of 64, prefetch_factor 4, decodes
PNG -> HxWx3 uint8 numpy (PIL) and the label -> int in the workers, and collates with torch's
``default_collate`` in the workers:

- frugalcv:        ShardLoader(url, 64, rank=0, world_size=1, num_workers=2, shuffle=True), which
                   checks every shard's sha256 as it reads it (``--no-sha256``: check_sha256=False)
- webdataset:      wds.WebDataset(urls, shardshuffle=100).shuffle(1000).decode("rgb8")
                   .to_tuple("png", "cls").batched(64, default_collate) in a DataLoader
                   (batch_size=None); shards split by worker (WebDataset's default)
- memory bound:    the same encoded samples held in memory (no I/O, no tar parsing), shuffled,
                   dealt to the 2 workers by batch, decoded with frugalcv's decode_sample
- file per sample: NNNNN.png + NNNNN.cls files read by a map-style Dataset (shuffle=True,
                   batch_size=64)
- S3 (moto_server on 127.0.0.1): frugalcv through s3fs (storage.py, AWS_ENDPOINT_URL);
                   webdataset through ``pipe:curl --aws-sigv4 ...`` URLs (one curl per shard)

Each measurement starts a fresh iterator, consumes ``--warmup`` samples (worker start-up and
queue fill), then times ``--measure`` samples. Variants are interleaved (the order rotates every
round) and repeated; the summary gives medians, and ratios are medians of the per-round ratios
(frugalcv over the baseline measured in the same round). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate, get_worker_info

from frugalcv.sharding import ShardLoader, load_manifest, write_shards
from frugalcv.sharding.decode import decode_sample
from frugalcv.sharding.tario import iter_samples_raw

BATCH = 64
WORKERS = 2
PREFETCH = 4
SHARD_SAMPLES = 1000
AWS_ENV = {
    "AWS_ENDPOINT_URL": "",  # set to the moto_server URL
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ----------------------------------------------------------------------------- data


def make_cifar10_fixture(root: Path, n: int, seed: int = 0) -> Path:
    """A cifar-10-batches-py folder: 5 train batches + batches.meta, random 32x32 crops."""
    from sklearn.datasets import load_sample_images

    images = load_sample_images().images  # two 427x640x3 uint8 photos
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(images), n)
    ys = rng.integers(0, images[0].shape[0] - 32, n)
    xs = rng.integers(0, images[0].shape[1] - 32, n)
    data = np.empty((n, 3072), dtype=np.uint8)
    for i in range(n):
        crop = images[which[i]][ys[i] : ys[i] + 32, xs[i] : xs[i] + 32]  # HWC
        data[i] = crop.transpose(2, 0, 1).reshape(-1)  # R, G, B planes, row-major
    labels = rng.integers(0, 10, n).tolist()
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    bounds = np.linspace(0, n, 6).astype(int)
    for b in range(5):
        lo, hi = bounds[b], bounds[b + 1]
        batch = {
            b"batch_label": f"training batch {b + 1} of 5".encode(),
            b"labels": labels[lo:hi],
            b"data": data[lo:hi],
        }
        (folder / f"data_batch_{b + 1}").write_bytes(pickle.dumps(batch, protocol=2))
    meta = {
        b"label_names": [c.encode() for c in CIFAR_CLASSES],
        b"num_cases_per_batch": int(bounds[1]),
        b"num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def read_encoded(url: str) -> list[tuple[str, dict[str, bytes]]]:
    """All (key, {ext: bytes}) of a local dataset, in manifest order."""
    m = load_manifest(url)
    out = []
    for i in range(len(m.shards)):
        with open(m.shard_url(i), "rb") as f:
            out += [(key, fields) for _, key, fields in iter_samples_raw(f, m.shard_url(i))]
    return out


def write_file_per_sample(samples: list[tuple[str, dict[str, bytes]]], folder: Path) -> list[str]:
    folder.mkdir(parents=True)
    stems = []
    for i, (_, fields) in enumerate(samples):
        stem = str(folder / f"{i:06d}")
        Path(stem + ".png").write_bytes(fields["png"])
        Path(stem + ".cls").write_bytes(fields["cls"])
        stems.append(stem)
    return stems


# ----------------------------------------------------------------------------- variants


class MemoryBatches(IterableDataset):
    """Upper bound: encoded samples already in memory; shuffled, dealt to workers by batch."""

    def __init__(self, samples: list[tuple[str, dict[str, bytes]]], seed: int):
        self.samples, self.seed = samples, seed

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        order = np.random.default_rng(self.seed).permutation(len(self.samples))
        for b in range(wid * BATCH, len(order), nw * BATCH):
            batch = [self.samples[i] for i in order[b : b + BATCH].tolist()]
            yield default_collate([decode_sample(key, fields) for key, fields in batch])


class FilePerSample(Dataset):
    """One PNG and one label file per sample, read by index."""

    def __init__(self, stems: list[str]):
        self.stems = stems

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, i: int) -> dict:
        stem = self.stems[i]
        with open(stem + ".png", "rb") as f:
            png = f.read()
        with open(stem + ".cls", "rb") as f:
            cls = f.read()
        return decode_sample(os.path.basename(stem), {"png": png, "cls": cls})


def frugalcv_iter(url: str, seed: int, check_sha256: bool = True) -> Callable[[], Iterator]:
    loader = ShardLoader(
        url,
        BATCH,
        rank=0,
        world_size=1,
        num_workers=WORKERS,
        seed=seed,
        shuffle=True,
        prefetch_factor=PREFETCH,
        check_sha256=check_sha256,
        persistent_workers=False,  # every reader here starts its workers for each pass
    )
    return lambda: iter(loader)


def webdataset_iter(urls: list[str], seed: int) -> Callable[[], Iterator]:
    import webdataset as wds

    ds = (
        wds.WebDataset(urls, shardshuffle=100, seed=seed)
        .shuffle(1000)
        .decode("rgb8")
        .to_tuple("png", "cls")
        .batched(BATCH, collation_fn=default_collate, partial=True)
    )
    return lambda: iter(DataLoader(ds, batch_size=None, num_workers=WORKERS, prefetch_factor=PREFETCH))


def memory_iter(samples, seed: int) -> Callable[[], Iterator]:
    ds = MemoryBatches(samples, seed)
    return lambda: iter(DataLoader(ds, batch_size=None, num_workers=WORKERS, prefetch_factor=PREFETCH))


def file_iter(stems: list[str], seed: int) -> Callable[[], Iterator]:
    ds = FilePerSample(stems)
    gen = torch.Generator().manual_seed(seed)
    return lambda: iter(
        DataLoader(
            ds, batch_size=BATCH, shuffle=True, generator=gen, num_workers=WORKERS, prefetch_factor=PREFETCH
        )
    )


def batch_len(batch) -> int:
    return len(batch["label"]) if isinstance(batch, dict) else len(batch[1])


_TICK = os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for k in map(int, kids):
            out += [k, *_descendants(k)]
    return out


def tree_cpu_s(exclude: frozenset[int] = frozenset()) -> float:
    """CPU seconds used so far by this process, its live descendants (DataLoader workers) and
    the children they reaped (curl), not counting ``exclude`` (the S3 server)."""
    total = 0
    for pid in [os.getpid(), *_descendants(os.getpid())]:
        if pid in exclude:
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited in between
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        total += utime + stime + cutime + cstime
    return total / _TICK


def measure(
    make: Callable[[], Iterator], warmup: int, n: int, exclude: frozenset[int]
) -> tuple[float, float]:
    """(samples/s, samples per CPU second) over ``n`` samples after ``warmup`` samples of a
    fresh iterator. The CPU figure sums the main process and the workers: on a machine shared
    with other jobs it moves much less than wall-clock throughput."""
    it = make()
    seen = 0
    try:
        while seen < warmup:
            seen += batch_len(next(it))
        c0, t0, seen = tree_cpu_s(exclude), time.perf_counter(), 0
        while seen < n:
            seen += batch_len(next(it))
        dt, cpu = time.perf_counter() - t0, tree_cpu_s(exclude) - c0
    finally:
        close = getattr(it, "close", None)  # a generator (ShardLoader): stops its DataLoader
        if close:
            close()
        shutdown = getattr(it, "_shutdown_workers", None)  # reap the workers now, not inside the next window
        if shutdown:
            shutdown()
        del it
        gc.collect()
    return seen / dt, seen / max(cpu, 1e-9)


# ----------------------------------------------------------------------------- S3 endpoint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(log_path: Path) -> tuple[subprocess.Popen, str, object]:
    exe = str(Path(sys.executable).parent / "moto_server")
    if not os.path.exists(exe):
        exe = shutil.which("moto_server") or "moto_server"
    port = free_port()
    log = open(log_path, "wb")  # noqa: SIM115  (closed by stop_moto)
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        if proc.poll() is not None:
            log.close()
            raise RuntimeError(f"moto_server exited with {proc.returncode}; see {log_path}")
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except urllib.error.HTTPError:
            break  # it answers
        except OSError:
            if time.time() > deadline:
                stop_moto(proc, log)
                raise TimeoutError(f"moto_server at {url} did not answer within 30 s") from None
            time.sleep(0.2)
    return proc, url, log


def stop_moto(proc: subprocess.Popen, log) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    log.close()


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def curl_pipe_urls(endpoint: str, bucket: str, keys: list[str]) -> list[str]:
    # Credentials come from the environment through the shell, so they are not in the URL.
    sig = f"aws:amz:{os.environ['AWS_DEFAULT_REGION']}:s3"
    return [
        f'pipe:curl -s -f --aws-sigv4 "{sig}" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" {endpoint}/{bucket}/{k}'
        for k in keys
    ]


# ----------------------------------------------------------------------------- main


def run_rounds(
    variants: dict, repeats: int, warmup: int, n: int, exclude: frozenset[int]
) -> tuple[dict, dict]:
    """Interleaved rounds (the order rotates each round): name -> [samples/s], [samples/CPU-s]."""
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            sps, per_cpu = measure(variants[name](r), warmup, n, exclude)
            wall[name].append(sps)
            cpu[name].append(per_cpu)
            print(
                f"  round {r + 1}/{repeats}  {name:<16} {sps:7.0f} samples/s  {per_cpu:7.0f} samples/CPU-s",
                flush=True,
            )
    return wall, cpu


def paired_ratio(results: dict, a: str, b: str) -> float:
    """Median over rounds of a/b, each pair measured back to back."""
    return statistics.median(x / y for x, y in zip(results[a], results[b], strict=True))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=16000, help="dataset size")
    p.add_argument("--warmup", type=int, default=1024, help="samples consumed before timing")
    p.add_argument("--measure", type=int, default=4096, help="samples timed per measurement")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-s3", action="store_true", help="skip the S3 (moto_server) variants")
    p.add_argument("--no-sha256", action="store_true", help="frugalcv without its sha256 check of each shard")
    args = p.parse_args(argv)
    if args.warmup + args.measure > args.samples:
        p.error("--warmup + --measure must not exceed --samples (one epoch per measurement)")
    warnings.filterwarnings("ignore", message=".*NumPy array is not writable.*")
    torch.set_num_threads(1)

    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="frugalcv-bench-"))
    moto = None
    saved_env = {k: os.environ.get(k) for k in AWS_ENV}
    old_term = signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so `finally` stops moto_server
    try:
        t = time.perf_counter()
        src = make_cifar10_fixture(tmp / "src", args.samples)
        local = str(tmp / "shards")
        m = write_shards(
            "cifar10",
            str(src),
            local,
            split="train",
            max_shard_samples=SHARD_SAMPLES,
            workers=2,
            progress=False,
        )["train"]
        url = f"{local}/train"
        samples = read_encoded(url)
        stems = write_file_per_sample(samples, tmp / "files")
        shard_paths = [m.shard_url(i) for i in range(len(m.shards))]
        mean_png = statistics.mean(len(f["png"]) for _, f in samples)
        print(
            f"data: {m.num_samples} CIFAR-10-format 32x32 samples (mean PNG {mean_png:.0f} B), "
            f"{len(m.shards)} shards of {SHARD_SAMPLES}; prepared in {time.perf_counter() - t:.1f}s",
            flush=True,
        )

        variants = {
            "frugalcv": lambda r: frugalcv_iter(url, seed=r, check_sha256=not args.no_sha256),
            "webdataset": lambda r: webdataset_iter(shard_paths, seed=r),
            "memory_bound": lambda r: memory_iter(samples, seed=r),
            "file_per_sample": lambda r: file_iter(stems, seed=r),
        }
        if not args.no_s3:
            t = time.perf_counter()
            moto = start_moto(tmp / "moto.log")
            endpoint = moto[1]
            os.environ.update(AWS_ENV, AWS_ENDPOINT_URL=endpoint)
            import boto3

            bucket = "bench"
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
            s3 = write_shards(
                "cifar10",
                str(src),
                f"s3://{bucket}/cifar10",
                split="train",
                max_shard_samples=SHARD_SAMPLES,
                workers=2,
                progress=False,
            )["train"]
            s3_url = f"s3://{bucket}/cifar10/train"
            s3_pipes = curl_pipe_urls(endpoint, bucket, [f"cifar10/train/{s.url}" for s in s3.shards])
            variants["s3_frugalcv"] = lambda r: frugalcv_iter(s3_url, seed=r, check_sha256=not args.no_sha256)
            variants["s3_webdataset"] = lambda r: webdataset_iter(s3_pipes, seed=r)
            print(
                f"S3: moto_server at {endpoint}, shards written in {time.perf_counter() - t:.1f}s", flush=True
            )

        print(
            f"measuring {args.measure} samples after {args.warmup} warm-up, {args.repeats} interleaved rounds, "
            f"batch {BATCH}, {WORKERS} workers ({os.cpu_count()} CPUs)",
            flush=True,
        )
        exclude = frozenset([moto[0].pid]) if moto else frozenset()
        load_before = os.getloadavg()[0]
        wall, cpu = run_rounds(variants, args.repeats, args.warmup, args.measure, exclude)
        load_after = os.getloadavg()[0]
    finally:
        if moto is not None:
            stop_moto(moto[0], moto[2])
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, old_term)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    med = {k: statistics.median(v) for k, v in wall.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    out = {
        "samples_per_s": round(med["frugalcv"]),
        "sha256_checked": not args.no_sha256,
        "ratio_vs_webdataset": round(paired_ratio(wall, "frugalcv", "webdataset"), 3),
        "ratio_vs_memory_bound": round(paired_ratio(wall, "frugalcv", "memory_bound"), 3),
        "ratio_vs_file_per_sample": round(paired_ratio(wall, "frugalcv", "file_per_sample"), 3),
        "webdataset_samples_per_s": round(med["webdataset"]),
        "memory_bound_samples_per_s": round(med["memory_bound"]),
        "file_per_sample_samples_per_s": round(med["file_per_sample"]),
    }
    if "s3_frugalcv" in med:
        out.update(
            s3_samples_per_s=round(med["s3_frugalcv"]),
            s3_webdataset_samples_per_s=round(med["s3_webdataset"]),
            s3_ratio_vs_webdataset=round(paired_ratio(wall, "s3_frugalcv", "s3_webdataset"), 3),
            s3_endpoint="moto_server on 127.0.0.1 (same machine)",
            s3_webdataset_reader="pipe:curl --aws-sigv4 (one curl per shard)",
            s3_frugalcv_reader="s3fs via frugalcv.sharding.storage (AWS_ENDPOINT_URL)",
        )
    out.update(
        cpu_ratio_vs_webdataset=round(paired_ratio(cpu, "frugalcv", "webdataset"), 3),
        cpu_ratio_vs_memory_bound=round(paired_ratio(cpu, "frugalcv", "memory_bound"), 3),
        samples_per_cpu_s={k: round(v) for k, v in cmed.items()},
    )
    if "s3_frugalcv" in cpu:
        out["s3_cpu_ratio_vs_webdataset"] = round(paired_ratio(cpu, "s3_frugalcv", "s3_webdataset"), 3)
    out.update(
        batch_size=BATCH,
        num_workers=WORKERS,
        measured_samples=args.measure,
        warmup_samples=args.warmup,
        repeats=args.repeats,
        dataset_samples=args.samples,
        cpus=os.cpu_count(),
        load_avg_before_after=[round(load_before, 2), round(load_after, 2)],
        runs={k: [round(x) for x in v] for k, v in wall.items()},
        wall_s=round(time.perf_counter() - t_start, 1),
    )

    print(f"\nsummary: medians of {args.repeats} rounds; ratios = median of the same-round ratios")
    print(f"  {'variant':<16} {'samples/s':>9} {'samples/CPU-s':>14}")
    for name in med:
        print(f"  {name:<16} {med[name]:9.0f} {cmed[name]:14.0f}")
    print(
        f"  frugalcv / webdataset    {out['ratio_vs_webdataset']:.3f} (CPU {out['cpu_ratio_vs_webdataset']:.3f})  target >= 0.9\n"
        f"  frugalcv / memory bound  {out['ratio_vs_memory_bound']:.3f} (CPU {out['cpu_ratio_vs_memory_bound']:.3f})  target >= 0.8\n"
        f"  frugalcv / file/sample   {out['ratio_vs_file_per_sample']:.3f}"
    )
    if "s3_ratio_vs_webdataset" in out:
        print(
            f"  S3 frugalcv / webdataset {out['s3_ratio_vs_webdataset']:.3f} (CPU {out['s3_cpu_ratio_vs_webdataset']:.3f})"
        )
    print(
        f"  load average {load_before:.2f} before, {load_after:.2f} after the measurements ({os.cpu_count()} CPUs)"
    )
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
