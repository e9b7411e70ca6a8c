"""BlockDrop pretrain stage: streaming from shards against in-memory tensors, and peak RSS at 1x/10x data.

    .venv/bin/python benchmarks/stage_streaming.py [--images 2048] [--batch 64] [--rounds 5] [--workers 2]
                                                   [--rss-images 1000] [--rss-jpeg-size 128] [--skip-rss]

Both parts build small RGB JPEGs with PIL in the ``imagefolder`` layout (``SRC/{train,val}/<class>/*.jpg``,
random pixels, ``--jpeg-size`` / ``--rss-jpeg-size`` pixels square) and shard them with ``frugalcv.sharding.write_shards``.

1. Throughput (``streaming_over_memory``), in this process. Both variants train the same
   ``PretrainConfig`` model (``--model``, ``--image-size``, ``--batch``) with ``pretrain_optimizer``,
   ``lr_schedule`` and ``ClassificationTask``, composed as ``blockdrop.pretrain`` composes them:

   - streaming: ``kit.fit`` on a hand-built ``StageContext`` (``num_workers=--workers``, CPU,
     no checkpoints) over ``kit.stream(ctx, train, batch, *Preprocess(...).transforms(train=True,
     translate=2))``: the stage's loader (decoding and resizing in worker processes, augmenting
     each batch on the device) and its hooks;
   - memory: ``Trainer`` with the same task, update and LR-schedule hook over a list of the very
     same batches, decoded and transformed up front (the same stream read once without workers).

   The streaming side is one ``kit.fit`` over ``--rounds + 1`` epochs, as the stage runs its
   epochs (its loader's workers live across them); a round is one epoch (``--images // --batch``
   steps) of each side: the streaming epoch, timed from its ``before_epoch`` to its
   ``after_epoch``, then, from that hook (the loader's workers idle in between), one epoch of
   the memory side, timed from its call to its end. Round 0 warms up (it pays the workers'
   start-up, once a stage) and is not counted; each side keeps training its own model copy. Reported: the median images/s of each and the
   ratio of the medians, and ``worker_cpu_s_during_memory``, the most CPU seconds the idle
   workers used during one measured memory epoch (near 0: the memory side had the machine to
   itself). Torch's threads are set as the stage entry sets them: one per CPU this
   process may use (``--cpus N`` restricts the benchmark and its children to N of them). On a
   shared machine compare the ratio, not the absolute figures.

2. Memory (``rss_ratio_10x``): the real stage in a fresh child process per size,
   ``python -m frugalcv.cli run pipeline.yaml --no-track`` on a pipeline with one
   ``blockdrop.pretrain`` stage (inline executor, ``num_workers=--workers``, ``epochs: 1``, the
   debug model unless ``--no-rss-debug``) over shards of N = ``--rss-images`` training JPEGs of
   ``--rss-jpeg-size`` pixels, then of 10·N (val: a tenth of train each time). Each child runs
   one epoch, so the 10·N run takes ten times the steps; its memory should still not grow, as
   nothing is meant to hold a split. The shards are written here beforehand (the writer's default
   shard size unless ``--shard-samples``), so the figures are the pretrain stage's alone.

   ``rss_mb_*``: the peak, polled every 0.2 s, of the memory of the stage's process tree (the
   stage process and its loader workers): ``Pss_Anon + Pss_Shmem`` from ``/proc/PID/smaps_rollup``
   summed over the tree, so a page shared after fork counts once and the shared libraries (which
   other processes on the machine share too) not at all. ``rss_ratio_10x`` = peak at 10·N / peak
   at N; ``rss_mb_import`` is the same figure for a child that only imports the stage's modules
   (the floor). ``maxrss_*``: the child's ``ru_maxrss`` from ``os.wait4``, the peak RSS of the
   tree's largest process (libraries included; a worker's memory hides behind the stage process's).

The last line on stdout is one JSON object; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from frugalcv.models import build_model
from frugalcv.sharding import write_shards
from frugalcv.workflows import kit
from frugalcv.workflows.blockdrop.pretrain import (
    ClassificationTask,
    PretrainConfig,
    lr_schedule,
    pretrain_optimizer,
)
from frugalcv.workflows.blockdrop.transforms import KNOWN_STATS, Preprocess
from frugalcv.workflows.engine.device import configure_threads, rank_cpus
from frugalcv.workflows.engine.trainer import Trainer

#: the targets this benchmark checks (reported, never asserted)
TARGET_STREAMING_OVER_MEMORY = 0.95
TARGET_RSS_RATIO_10X = 1.2
CLASSES = 10
IMPORT_STAGE = "import frugalcv.cli, frugalcv.cli_workflows, frugalcv.workflows.blockdrop.stages"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_jpegs(root: Path, split: str, count: int, size: int, seed: int) -> None:
    """``count`` random RGB JPEGs in ``root/split/<class>/``, classes dealt round-robin."""
    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        (root / split / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=90)
        (root / split / f"class{i % CLASSES}" / f"{i:07d}.jpg").write_bytes(buf.getvalue())


def make_dataset(root: Path, train: int, val: int, args, size: int) -> dict[str, str]:
    """JPEG folders under ``root/src``, sharded into ``root/shards``; split -> shard URL."""
    src, dst = root / "src", root / "shards"
    write_jpegs(src, "train", train, size, seed=train)
    write_jpegs(src, "val", val, size, seed=train + 1)
    manifests = write_shards("imagefolder", str(src), str(dst), ("train", "val"), progress=False,
                             max_shard_samples=args.shard_samples or None)
    return {split: str(dst / split) for split in manifests}


def pretrain_config(args, epochs: int) -> PretrainConfig:
    return PretrainConfig(model=args.model, debug=args.debug, num_classes=CLASSES, image_size=args.image_size,
                          batch_size=args.batch, epochs=epochs, warmup_epochs=0, translate=2, seed=0)


def stage_context(directory: Path, params: PretrainConfig, inputs: dict[str, str], workers: int,
                  device: str = "cpu"):
    return kit.StageContext(pipeline="bench", run_id="bench", stage="pretrain", params=params, inputs=inputs,
                            output_dir=str(directory), checkpoint_dir=str(directory / "checkpoints"),
                            device=torch.device(device), num_workers=workers, cpus=rank_cpus(), checkpoint_every=0,
                            printer=log)


def throughput(args, root: Path) -> dict:
    """Images/s of the stage's streaming training and of the same training from memory."""
    urls = make_dataset(root / "data", args.images, CLASSES, args, args.jpeg_size)
    p = pretrain_config(args, epochs=args.rounds + 1)
    ctx = stage_context(root / "stage", p, urls, args.workers, args.device)
    prep = Preprocess(p.augment, p.image_size)
    prep.mean, prep.std = (list(v) for v in KNOWN_STATS["cifar10"])  # fixed: no statistics pass to time
    transform, batch_transform = prep.transforms(train=True, translate=p.translate, hflip=p.hflip)
    data = kit.stream(ctx, ctx.input("train"), p.batch_size, transform, batch_transform=batch_transform)
    # the same stream read once in this process: the same batches, decoded and augmented up front
    batches = list(kit.stream(stage_context(root / "stage", p, urls, 0), urls["train"], p.batch_size, transform,
                              batch_transform=batch_transform)(0))
    batches = [kit.to_device(b, ctx.device) for b in batches]
    steps = len(batches)

    kit.seed(ctx, per_rank=False)
    resnet = kit.place(ctx, build_model(p.model, num_classes=p.num_classes, debug=p.debug))
    sides = {}
    for name, net in (("streaming", resnet), ("memory", copy.deepcopy(resnet))):
        optimizer = pretrain_optimizer(net, p)
        model, update = kit.distribute(ctx, net, optimizer, batch_size=p.batch_size)
        task = ClassificationTask(model, p.label_smoothing, p.drop_path, p.drop_path_rule)
        sides[name] = (net, task, update, lr_schedule(optimizer, p, steps))

    rates: dict[str, list[float]] = {"streaming": [], "memory": []}
    idle_cpu: list[float] = []  # CPU seconds the loader's workers used during each memory epoch

    def memory_epoch() -> float:
        net, task, update, schedule = sides["memory"]
        trainer = Trainer(task, update, batches, [kit.LRScheduleHook(schedule)], epochs=1, device=ctx.device)
        start = time.perf_counter()
        trainer.train()
        return steps * p.batch_size / (time.perf_counter() - start)

    class Rounds(kit.HookBase):
        """Times each streaming epoch, then runs and times one memory epoch between epochs."""

        def before_epoch(self):
            self.start = time.perf_counter()

        def after_epoch(self):
            streaming = steps * p.batch_size / (time.perf_counter() - self.start)
            workers = data.loader.worker_pids
            before = sum(_cpu_s(pid) for pid in workers)
            measured = {"streaming": streaming, "memory": memory_epoch()}
            idle_cpu.append(sum(_cpu_s(pid) for pid in workers) - before)
            r = self.trainer.epoch - 1
            log(f"{'warm-up' if r == 0 else f'round {r}'}: " + ", ".join(f"{k} {v:.1f} img/s" for k, v in measured.items()))
            if r:
                for name, rate in measured.items():
                    rates[name].append(rate)

    log(f"throughput: {p.model}{' (debug)' if p.debug else ''} at {p.image_size}px, batch {p.batch_size}, "
        f"{steps} steps per epoch, {args.workers} workers, {torch.get_num_threads()} threads")
    net, task, update, schedule = sides["streaming"]
    kit.fit(ctx, task, update, data, epochs=args.rounds + 1, state=net, hooks=[kit.LRScheduleHook(schedule), Rounds()],
            log_every=p.log_every, log_prefix="streaming ")
    stream_rate, memory_rate = (statistics.median(rates[k]) for k in ("streaming", "memory"))
    per_round = [s / m for s, m in zip(rates["streaming"], rates["memory"], strict=True)]
    return {"streaming_over_memory": round(stream_rate / memory_rate, 4),
            "streaming_over_memory_per_round": [round(x, 4) for x in per_round],
            "streaming_images_per_s": round(stream_rate, 2), "memory_images_per_s": round(memory_rate, 2),
            "worker_cpu_s_during_memory": round(max(idle_cpu[1:], default=0.0), 3),
            "throughput_images": args.images, "throughput_steps": steps, "model": p.model, "debug": p.debug,
            "image_size": p.image_size, "batch": p.batch_size, "rounds": args.rounds,
            "threads": torch.get_num_threads(), "device": str(ctx.device)}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children() -> dict[int, list[int]]:
    """parent pid -> child pids, from /proc."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:
                continue
            kids.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    return kids


def _own_kb(pid: int) -> int:
    """The process's anonymous and shared memory (``Pss_Anon + Pss_Shmem``), each page split among the
    processes that map it: summed over a fork tree, every page counts once, whatever else runs."""
    try:
        rollup = Path("/proc", str(pid), "smaps_rollup").read_text().splitlines()
    except OSError:
        return 0  # the process has just ended
    fields = dict(line.split(":", 1) for line in rollup[1:] if ":" in line)
    return sum(int(fields.get(key, "0 kB").split()[0]) for key in ("Pss_Anon", "Pss_Shmem"))


def tree_kb(root: int) -> int:
    """``_own_kb`` summed over ``root`` and its descendants (the stage process and its loader workers)."""
    kids, todo, total = _children(), [root], 0
    while todo:
        pid = todo.pop()
        total += _own_kb(pid)
        todo += kids.get(pid, [])
    return total


def child_peak_mb(command: list[str], log_path: Path, cwd: Path, poll_s: float = 0.2) -> tuple[float, float]:
    """(peak ``tree_kb``, polled every ``poll_s``; ``ru_maxrss``: the peak RSS of the tree's largest
    process) of ``command`` run as a fresh child, in MB. Reading smaps_rollup costs ~15 ms a process."""
    peak = [0]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        done = threading.Event()

        def poll() -> None:
            while not done.wait(poll_s):
                peak[0] = max(peak[0], tree_kb(proc.pid))

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _, status, usage = os.wait4(proc.pid, 0)  # the rusage of this child's tree alone
        done.set()
        poller.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{tail}")
    return peak[0] / 1024, usage.ru_maxrss / 1024  # KiB on Linux


def stage_rss_mb(args, root: Path, n: int) -> tuple[float, float]:
    """``child_peak_mb`` of ``frugalcv run`` of one pretrain stage, one epoch over N training JPEGs."""
    urls = make_dataset(root / "data", n, max(CLASSES, n // 10), args, args.rss_jpeg_size)
    params = pretrain_config(args, epochs=1).__dict__ | {"debug": args.rss_debug}
    pipeline = {"name": "bench-rss", "storage": {"root": str(root / "runs")}, "executor": {"kind": "inline"},
                "stages": [{"name": "pretrain", "uses": "blockdrop.pretrain", "inputs": urls, "params": params,
                            "num_workers": args.workers, "checkpoint_every": 0}]}
    spec = root / "pipeline.yaml"
    spec.write_text(json.dumps(pipeline, indent=1))  # JSON is YAML
    command = [sys.executable, "-m", "frugalcv.cli", "run", str(spec), "--no-track"]
    return child_peak_mb(command, root / "run.log", root)


def memory(args, root: Path) -> dict:
    sizes = {"n": args.rss_images, "10n": 10 * args.rss_images}
    root.mkdir(parents=True)
    # what importing the stage costs before any data: the floor both figures sit on
    floor, _ = child_peak_mb([sys.executable, "-c", IMPORT_STAGE], root / "import.log", root)
    log(f"rss: importing the stage's modules: peak {floor:.1f} MB")
    pss, maxrss = {}, {}
    for key, n in sizes.items():
        start = time.perf_counter()
        pss[key], maxrss[key] = stage_rss_mb(args, root / key, n)
        log(f"rss: {n} training images, one epoch: peak {pss[key]:.1f} MB in the stage's processes, "
            f"largest process {maxrss[key]:.1f} MB ({time.perf_counter() - start:.0f} s)")
    return {"rss_ratio_10x": round(pss["10n"] / pss["n"], 4), "rss_mb_n": round(pss["n"], 1),
            "rss_mb_10n": round(pss["10n"], 1), "rss_mb_import": round(floor, 1),
            "maxrss_ratio_10x": round(maxrss["10n"] / maxrss["n"], 4), "maxrss_mb_n": round(maxrss["n"], 1),
            "maxrss_mb_10n": round(maxrss["10n"], 1), "n_images": args.rss_images,
            "rss_jpeg_size": args.rss_jpeg_size, "rss_debug": args.rss_debug}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="cifar_resnet32")
    p.add_argument("--debug", action="store_true", help="the model's tiny flavour in the throughput part")
    p.add_argument("--image-size", type=int, default=32, help="the stage's image_size (CIFAR's 32: no resize; 16: resized in the workers)")
    p.add_argument("--jpeg-size", type=int, default=32, help="pixels per side of the throughput part's JPEGs")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--images", type=int, default=2048, help="training images of the throughput part")
    p.add_argument("--rounds", type=int, default=5, help="measured rounds of each variant (after a warm-up)")
    p.add_argument("--workers", type=int, default=2, help="loader worker processes")
    p.add_argument("--cpus", type=int, default=0, help="run on this many of the CPUs, children too (0: all)")
    p.add_argument("--shard-samples", type=int, default=0, help="max samples per shard (0: the writer's default)")
    p.add_argument("--rss-images", type=int, default=1000, help="N of the memory part (it also runs 10 N)")
    p.add_argument("--rss-jpeg-size", type=int, default=128, help="pixels per side of the memory part's JPEGs")
    p.add_argument("--rss-debug", action=argparse.BooleanOptionalAction, default=True,
                   help="the model's tiny flavour in the memory part")
    p.add_argument("--device", default="cpu", help="cpu or cuda: the throughput part trains there (the in-memory "
                   "side's batches are put on the device beforehand: a bare loop on the same device and data)")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cpus])
    configure_threads(rank_cpus())  # as the stage entry does

    result: dict = {"benchmark": "stage_streaming", "workers": args.workers, "jpeg_size": args.jpeg_size,
                    "shard_samples": args.shard_samples or None}
    with tempfile.TemporaryDirectory(prefix="frugalcv-bench-") as tmp:
        if not args.skip_throughput:
            result |= throughput(args, Path(tmp) / "throughput")
        if not args.skip_rss:
            result |= memory(args, Path(tmp) / "rss")
    result["loadavg"] = round(os.getloadavg()[0], 2)
    for key, target, better in (("streaming_over_memory", TARGET_STREAMING_OVER_MEMORY, ">="),
                                ("rss_ratio_10x", TARGET_RSS_RATIO_10X, "<=")):
        if key in result:
            met = result[key] >= target if better == ">=" else result[key] <= target
            log(f"{key} {result[key]:.3f} (target {better} {target}: {'met' if met else 'MISSED'})")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
