"""Trainer overhead: frugalcv's Trainer with its real hooks against a bare PyTorch loop.

    .venv/bin/python benchmarks/trainer_overhead.py [--steps 50] [--rounds 5] [--batch 8] [--checkpoint-every 50]

Both sides train a CIFAR ResNet-32 (``--debug``: the tiny flavour) with SGD + momentum on the
same in-memory synthetic batches from the same initial weights:

- bare:    ``zero_grad``, forward, cross-entropy, backward, ``step`` per batch;
- trainer: ``Trainer(task, optimizer, data, hooks, epochs=1)`` with the task doing the same
           forward and loss, and the hooks a stage uses: ``LoggingHook`` (every ``--log-every``
           steps, lines kept in memory), ``CheckpointHook`` (every ``--checkpoint-every`` steps,
           atomic write + fsync to a temporary folder, keep 2) and ``ControlHook`` (signal
           handlers, a per-step flag check).

The two sides alternate step by step: the Trainer's data source runs one bare step on the other
model copy before it hands over each batch, so a busy neighbour slows both sides alike. The
bare steps are timed directly; the trainer's time is the whole ``train()`` call (hooks, loop,
start and end included) less the bare steps. A round is ``--steps`` steps of each side, each
continuing from its previous round; one warm-up round comes first. ``max_weight_diff`` compares
the two models at the end: 0.0 when the trainer changes nothing in the arithmetic.

``overhead_ratio`` is the median over rounds of trainer/bare time, checkpoint writes included;
``overhead_ratio_no_checkpoint`` subtracts the time spent in ``CheckpointHook.save`` (capture
state, serialize, atomic write), whose median is ``checkpoint_s``. On a shared machine compare
the ratios rather than the absolute times. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from frugalcv.models import build_model
from frugalcv.workflows.engine.checkpoint import CheckpointHook
from frugalcv.workflows.engine.control import ControlHook
from frugalcv.workflows.engine.trainer import LoggingHook, Trainer


class CrossEntropyTask:
    """The bare loop's forward and loss as a Trainer task."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def training_step(self, batch) -> dict:
        images, labels = batch
        return {"loss": F.cross_entropy(self.model(images), labels)}


def make_batches(count: int, batch: int, seed: int, device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, 32, 32, generator=gen).to(device),
             torch.randint(0, 10, (batch,), generator=gen).to(device)) for _ in range(count)]


def bare_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images, labels) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()


class Round:
    """One round: the Trainer's data source runs a bare step on the other copy before handing
    over each batch, so both sides alternate step by step and share the machine's load alike."""

    def __init__(self, bare: tuple, batches: list, sync: Callable[[], None]):
        self.bare, self.batches, self.sync = bare, batches, sync
        self.bare_wall = self.bare_cpu = 0.0

    def __call__(self, epoch: int) -> Iterator:
        model, optimizer = self.bare
        model.train()
        for images, labels in self.batches:
            self.sync()  # the trainer's queued work counts on its side
            start, start_cpu = time.perf_counter(), time.process_time()
            bare_step(model, optimizer, images, labels)
            self.sync()
            self.bare_wall += time.perf_counter() - start
            self.bare_cpu += time.process_time() - start_cpu
            yield images, labels


def timed(fn: Callable, times: list[float]) -> Callable:
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            times.append(time.perf_counter() - start)
    return wrapper


def run_round(trainer_side: tuple, data: Round, directory: str, args: argparse.Namespace,
              save_times: list[float], log_lines: list[str]) -> CheckpointHook:
    """The Trainer as a stage wires it: logging, periodic checkpoints, preemption; one epoch of ``data``."""
    model, optimizer = trainer_side
    model.train()
    saver = CheckpointHook(directory, model, every=args.checkpoint_every, keep=2, save_at_end=False)
    saver.save = timed(saver.save, save_times)  # the real save, timed
    hooks = [LoggingHook(args.log_every, prefix="bench ", printer=log_lines.append), saver, ControlHook(saver)]
    Trainer(CrossEntropyTask(model), optimizer, data, hooks, epochs=1).train()
    return saver


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="cifar_resnet32")
    p.add_argument("--debug", action="store_true", help="the model's tiny debug flavour")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=50, help="steps per side per round")
    p.add_argument("--rounds", type=int, default=5, help="measured rounds (after one warm-up round)")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--pool", type=int, default=16, help="distinct synthetic batches, cycled")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (0: leave as is)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    torch.manual_seed(args.seed)
    bare_model = build_model(args.model, debug=args.debug).to(args.device)
    trainer_model = copy.deepcopy(bare_model)

    def sgd(model):
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)

    bare_opt, trainer_opt = sgd(bare_model), sgd(trainer_model)
    pool = make_batches(args.pool, args.batch, args.seed, args.device)
    batches = [pool[i % len(pool)] for i in range(args.steps)]
    params = sum(p.numel() for p in bare_model.parameters())
    print(f"{args.model}{' (debug)' if args.debug else ''}: {params} parameters, batch {args.batch}, "
          f"{torch.get_num_threads()} threads on {args.device}; {args.steps} steps per round, "
          f"checkpoint every {args.checkpoint_every}, log every {args.log_every}", flush=True)

    wall: dict[str, list[float]] = {"bare": [], "trainer": []}
    cpu: dict[str, list[float]] = {"bare": [], "trainer": []}
    ckpt_per_round: list[float] = []
    save_times: list[float] = []
    log_lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="frugalcv-bench-") as directory:
        for r in range(args.rounds + 1):  # round 0 warms up
            data = Round((bare_model, bare_opt), batches, sync)
            saves_before = len(save_times)
            sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            saver = run_round((trainer_model, trainer_opt), data, directory, args, save_times, log_lines)
            sync()
            total, total_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            if not r:
                del save_times[:]  # the first save pays one-off costs
                print(f"warm-up round: {1e3 * total / args.steps:.1f} ms per pair of steps", flush=True)
                continue
            wall["bare"].append(data.bare_wall)
            wall["trainer"].append(total - data.bare_wall)
            cpu["bare"].append(data.bare_cpu)
            cpu["trainer"].append(total_cpu - data.bare_cpu)
            ckpt_per_round.append(sum(save_times[saves_before:]))
            print(f"round {r}: bare {1e3 * wall['bare'][-1] / args.steps:.1f} ms/step, "
                  f"trainer {1e3 * wall['trainer'][-1] / args.steps:.1f} ms/step "
                  f"(checkpoints {1e3 * ckpt_per_round[-1]:.0f} ms)", flush=True)
        checkpoint_bytes = os.path.getsize(saver.last_url) if saver.last_url else 0
    max_diff = max((a - b).abs().max().item()
                   for a, b in zip(bare_model.state_dict().values(), trainer_model.state_dict().values(), strict=True)
                   if a.is_floating_point())

    ratios = [t / b for t, b in zip(wall["trainer"], wall["bare"], strict=True)]
    ratios_no_ckpt = [(t - c) / b for t, c, b in zip(wall["trainer"], ckpt_per_round, wall["bare"], strict=True)]
    ratios_cpu = [t / b for t, b in zip(cpu["trainer"], cpu["bare"], strict=True)]
    bare_ms = 1e3 * statistics.median(wall["bare"]) / args.steps
    trainer_ms = 1e3 * statistics.median(wall["trainer"]) / args.steps
    checkpoint_s = statistics.median(save_times) if save_times else 0.0
    ratio = statistics.median(ratios)
    print(f"bare    {bare_ms:8.2f} ms/step (median of {args.rounds} rounds)")
    print(f"trainer {trainer_ms:8.2f} ms/step, {len(save_times)} checkpoints of {checkpoint_bytes / 1e6:.2f} MB, "
          f"{1e3 * checkpoint_s:.1f} ms each")
    print(f"overhead ratio {ratio:.3f} (without checkpoints {statistics.median(ratios_no_ckpt):.3f}, "
          f"CPU time {statistics.median(ratios_cpu):.3f}); per round: " + " ".join(f"{x:.3f}" for x in ratios))
    print(f"weights after training: max |bare - trainer| = {max_diff:.1e}; last log line: {log_lines[-1]!r}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (others' work inflates timings)")
    result = {
        "benchmark": "trainer_overhead",
        "overhead_ratio": round(ratio, 4),
        "overhead_ratio_no_checkpoint": round(statistics.median(ratios_no_ckpt), 4),
        "overhead_ratio_cpu": round(statistics.median(ratios_cpu), 4),
        "checkpoint_s": round(checkpoint_s, 4),
        "checkpoint_bytes": checkpoint_bytes,
        "steps": args.steps * args.rounds,
        "bare_step_ms": round(bare_ms, 2),
        "trainer_step_ms": round(trainer_ms, 2),
        "max_weight_diff": max_diff,
        "model": args.model,
        "debug": args.debug,
        "batch": args.batch,
        "checkpoint_every": args.checkpoint_every,
        "log_every": args.log_every,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "loadavg": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
