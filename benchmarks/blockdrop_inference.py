"""BlockDrop inference on CPU: does skipping blocks save time in proportion to FLOPs?

CIFAR ResNet-110, eval mode, ``torch.inference_mode``, default thread count, NHWC, BN folded.
Three ways to run a batch: (1) the full network; (2) dynamic execution (``forward_dynamic``:
each block's residual runs only on the rows that keep it) under per-image keep masks, timed
together with the policy network's forward on the same batch; (3) masking (every block
computed, the kept rows selected afterwards, as in training). Full and dynamic calls alternate
after a warm-up (masking is timed on its own afterwards) and medians are reported. The machine
must be otherwise idle: with 2 OpenMP threads a busy neighbour stalls every parallel region,
which costs the dynamic path (more, smaller ops) relatively more.

Execution options, each applied to every variant alike:

* ``--threads N``: intra-op threads (default: PyTorch's choice, one per core).
* ``--workers N``: ``frugalcv.models.RowShards``: the batch split into N row slices, each run
  on its own single-threaded worker (no per-op fork/join).
* ``--malloc keep`` (default): glibc keeps freed memory, so no call pays minor page faults
  (see ``keep_freed_memory``). Their cost varies with the host from run to run and has nothing
  to do with skipping blocks; every variant gets faster. ``--malloc default`` leaves glibc as
  it is (then ``page_faults`` shows what each call paid).
* ``--channels-last`` and ``--fuse-bn`` (BN folded into the convs), both on by default: every
  network runs the way it runs fastest here. Measured interleaved on this 2-core VM, the full
  ResNet-110 takes 767 ms NCHW with BN modules, 637 ms NHWC, 721 ms fused and 599 ms NHWC and
  fused; a baseline slowed down by its layout would flatter the dynamic path. ``--no-channels-last``
  and ``--no-fuse-bn`` turn them off.

The keep masks (default) are those of a trained policy: ``benchmarks/data/
blockdrop_resnet110_digits_masks.json``, the greedy decisions of a BlockDrop policy for
ResNet-110 trained by the pipeline on the digits (curriculum + joint finetuning), on 128 test
images; ``blockdrop_policy_masks.py`` writes such a file from any BlockDrop checkpoint
(``--masks``). Timings depend on the masks, not on the weights, so the ResNet here keeps its
random initialisation. Like the dissertation's CIFAR policies (469 distinct policies over 10k
test images), trained policies repeat: rows share policies, and ``forward_dynamic`` groups
them so that most blocks run on a contiguous slice of the batch.

``--probs`` samples the masks instead, Bernoulli per image and block with per-block
probabilities whose sum is ``--blocks`` (default 17, the dissertation's 16.9 for R110 at
gamma=10): ``spread`` draws the probabilities U-shaped (most blocks near 0 or 1), ``uniform``
gives every block the same one (every block then runs on about 40 of the 128 rows). Sampled
masks share nothing between rows (128 distinct policies in 128 rows), which trained policies
do not do; under ``spread`` about 20 blocks run on 1-12 scattered rows, and a convolution over
so few rows costs 0.1-0.4 ms whatever their number (per-call overhead), several times its share
of the FLOPs.

FLOPs (conv + linear, 2 per MAC, per image) come from ``frugalcv.models.flops``: the dynamic
side is the mean over the batch of the per-image cost under its mask plus the policy network.
The last line printed is JSON; ``speedup_over_flops_ratio`` = (``full_ms`` / ``dynamic_ms``)
divided by (``flops_full`` / ``flops_dynamic``), all four from the same line (times are medians
over the rounds): 1.0 means time saved exactly in proportion to FLOPs saved. ``_paired`` (the
median of per-round ratios: a full call and the dynamic call next to it share the machine's
state), ``_min`` (fastest calls) and ``_cpu`` (process CPU time) are the same ratio estimated
other ways, and ``_blocks`` leaves the policy network out of both sides.
``page_faults`` is the median number of minor page faults per call.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import resource
import statistics
import time
from pathlib import Path

import torch
from blockdrop_policy_masks import load_masks

from frugalcv.models import RowShards, block_flops, build_model, count_flops, fuse_batchnorm, policy_flops

#: greedy masks of a ResNet-110 policy trained with BlockDrop on the digits (see README)
LEARNED_MASKS = Path(__file__).resolve().parent / "data" / "blockdrop_resnet110_digits_masks.json"


def keep_probabilities(num_blocks: int, mean_kept: float, mode: str, gen: torch.Generator) -> torch.Tensor:
    """Per-block keep probabilities [K] summing to ``mean_kept``."""
    if mode == "uniform":
        return torch.full((num_blocks,), mean_kept / num_blocks, dtype=torch.float64)
    z = 3.0 * torch.randn(num_blocks, generator=gen, dtype=torch.float64)
    lo, hi = -30.0, 30.0
    for _ in range(100):  # bisection on the shift so that sum(sigmoid(z + shift)) = mean_kept
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if torch.sigmoid(z + mid).sum() < mean_kept else (lo, mid)
    return torch.sigmoid(z + (lo + hi) / 2)


def time_interleaved(fns: dict, warmup: int, repeats: int) -> tuple[dict, dict, dict]:
    """Wall and process-CPU milliseconds and minor page faults per call, per variant.

    The order rotates each round so drift hits all variants equally. CPU time is the steadier
    measure on a busy machine when running one thread (with several, idle OpenMP threads spin).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    faults: dict[str, list[int]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start, start_cpu = time.perf_counter(), time.process_time()
            fns[name]()
            wall[name].append((time.perf_counter() - start) * 1e3)
            cpu[name].append((time.process_time() - start_cpu) * 1e3)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start_faults)
    return wall, cpu, faults


def _synchronised(fn):
    out = fn()
    torch.cuda.synchronize()
    return out


def keep_freed_memory() -> None:
    """Stop glibc from handing freed memory back to the kernel (and faulting it in again).

    By default glibc returns large freed blocks (munmap, heap trimming), so a call that
    allocates big activations pays minor page faults each time: 30k-130k per full ResNet-110
    call on this VM and 13k-60k per dynamic call, at a cost per fault that varies with the host
    from one run to the next. With this, neither side pays them; it has the effect of running
    under jemalloc or tcmalloc, which PyTorch's CPU performance guide advises.
    """
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # glibc's mallopt parameters
    for option, value in ((m_mmap_threshold, 1 << 30), (m_trim_threshold, 1 << 30), (m_top_pad, 256 << 20)):
        if libc.mallopt(option, value) != 1:
            raise RuntimeError(f"mallopt({option}, {value}) failed: --malloc keep needs glibc; use --malloc default")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--blocks", type=float, default=17.0, help="mean number of blocks kept")
    parser.add_argument(
        "--masks",
        default=str(LEARNED_MASKS),
        help="keep masks of a trained policy, a file from blockdrop_policy_masks.py (default: the "
        "shipped ResNet-110 policy's, %(default)s)",
    )
    parser.add_argument(
        "--probs",
        choices=["spread", "uniform"],
        help="sample the masks instead (--blocks kept on average): per-block probabilities U-shaped or equal",
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="NHWC for every network and variant (default; the full ResNet-110 runs ~17%% faster than NCHW here)",
    )
    parser.add_argument(
        "--fuse-bn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fold BN into the convs of every network (default; as deployed for inference)",
    )
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N (calls are synchronised before timing ends)")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="run every variant as this many row shards, one single-threaded worker each (0: intra-op threads)",
    )
    parser.add_argument(
        "--malloc",
        choices=["keep", "default"],
        default="keep",
        help="keep: glibc keeps freed memory, so no call pays page faults (see keep_freed_memory); "
        "default: glibc's own behaviour",
    )
    args = parser.parse_args(argv)
    if args.malloc == "keep":
        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    shards = RowShards(args.workers) if args.workers else None

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = build_model("cifar_resnet110").eval()
    policy = build_model("policy_resnet8_cifar", num_blocks=model.num_blocks).eval()
    x = torch.randn(args.batch, 3, 32, 32, generator=gen)
    if args.fuse_bn:
        model, policy = fuse_batchnorm(model), fuse_batchnorm(policy)
    if args.channels_last:
        model, policy = (m.to(memory_format=torch.channels_last) for m in (model, policy))
        x = x.contiguous(memory_format=torch.channels_last)
    if args.probs is None:
        keep = load_masks(args.masks)
        if keep.shape[1] != model.num_blocks or keep.shape[0] < args.batch:
            raise SystemExit(
                f"--masks {args.masks}: {list(keep.shape)} masks; need at least --batch {args.batch} "
                f"rows of {model.num_blocks} blocks (cifar_resnet110)"
            )
        keep = keep[: args.batch]
    else:
        probs_K = keep_probabilities(model.num_blocks, args.blocks, args.probs, gen)
        keep = torch.bernoulli(probs_K.expand(args.batch, -1), generator=gen).float()

    device = torch.device(args.device)
    if device.type == "cuda" and shards is not None:
        raise SystemExit("--workers (CPU row shards) and --device cuda do not go together")
    model, policy, x, keep = model.to(device), policy.to(device), x.to(device), keep.to(device)
    base, per_block = block_flops(model)
    flops_full = base + sum(per_block)
    policy_cost = count_flops(policy)
    flops_dynamic = policy_flops(keep, base, per_block, policy_cost).mean().item()

    with torch.inference_mode():
        max_diff = (model.forward_dynamic(x, keep) - model(x, keep)).abs().max().item()

        def dynamic(x, keep):
            policy(x)  # the decision is part of the dynamic cost; keep is pre-sampled
            return model.forward_dynamic(x, keep)

        variants = {"full": lambda x, keep: model(x), "dynamic": dynamic, "masked": model, "policy": lambda x, keep: policy(x)}
        if shards is not None:
            variants = {name: functools.partial(shards, fn) for name, fn in variants.items()}
        calls = {name: functools.partial(fn, x, keep) for name, fn in variants.items()}
        if device.type == "cuda":  # kernels run asynchronously: a call ends when the GPU is done
            calls = {name: functools.partial(_synchronised, fn) for name, fn in calls.items()}
        policy_call, masked_call = calls.pop("policy"), calls.pop("masked")
        # full and dynamic alternate (full-dynamic, dynamic-full, ...) so that each pair of calls
        # is as close in time as possible; masking, far slower, is timed on its own afterwards
        samples, cpu_samples, fault_samples = time_interleaved(calls, args.warmup, args.repeats)
        masked = time_interleaved({"masked": masked_call}, 1, args.repeats)
        for timed, masked_timed in zip((samples, cpu_samples, fault_samples), masked, strict=True):
            timed.update(masked_timed)
        policy_ms = statistics.median(time_interleaved({"policy": policy_call}, 1, args.repeats)[0]["policy"])
    ms = {name: statistics.median(v) for name, v in samples.items()}
    best = {name: min(v) for name, v in samples.items()}  # least disturbed by other processes
    cpu_ms = {name: statistics.median(v) for name, v in cpu_samples.items()}

    kept = keep.sum(1)
    blocks_any = int((keep.sum(0) > 0).sum())
    blocks_all = int((keep.sum(0) == args.batch).sum())
    flops_ratio = flops_full / flops_dynamic
    ratio = (ms["full"] / ms["dynamic"]) / flops_ratio  # time speedup over FLOPs ratio
    # the machine's speed drifts between phases lasting seconds; a full call and the dynamic call
    # right next to it share a phase: the median of per-round ratios, another estimate
    paired = statistics.median(f / d for f, d in zip(samples["full"], samples["dynamic"], strict=True))
    ratio_paired = paired / flops_ratio
    ratio_best = (best["full"] / best["dynamic"]) / flops_ratio
    ratio_cpu = (cpu_ms["full"] / cpu_ms["dynamic"]) / flops_ratio
    # the residual blocks alone: the policy net's time (timed on its own) and FLOPs left out
    ratio_blocks = (ms["full"] / (ms["dynamic"] - policy_ms)) / (flops_full / (flops_dynamic - policy_cost))
    faults = {name: round(statistics.median(v)) for name, v in fault_samples.items()}
    if shards is not None:
        shards.close()
    how = f"{args.workers} row-shard workers" if args.workers else f"{torch.get_num_threads()} intra-op threads"
    policy_source = f"masks={args.masks}" if args.probs is None else f"probs={args.probs}"
    print(f"CIFAR ResNet-110, batch {args.batch}, {how}, {policy_source}")
    print(f"  blocks kept per image: {kept.mean():.1f} +- {kept.std():.1f} of {model.num_blocks}")
    print(f"  blocks run by some row: {blocks_any}, by every row: {blocks_all}")
    print(f"  full     {ms['full']:8.1f} ms   {flops_full:.3e} FLOPs/image")
    print(
        f"  dynamic  {ms['dynamic']:8.1f} ms   {flops_dynamic:.3e} FLOPs/image (policy net {policy_ms:.1f} ms)"
    )
    print(f"  masked   {ms['masked']:8.1f} ms")
    print(f"  time speedup {ms['full'] / ms['dynamic']:.2f}x, FLOPs ratio {flops_ratio:.2f}x")
    print(
        f"  speedup / FLOPs ratio: {ratio:.3f} from median times, {ratio_paired:.3f} from per-round ratios, {ratio_best:.3f} from fastest runs, "
        f"{ratio_cpu:.3f} from CPU time (full {cpu_ms['full']:.0f}, dynamic {cpu_ms['dynamic']:.0f} ms)"
    )
    print(f"  blocks alone (policy net left out): {ratio_blocks:.3f}; minor page faults per call {faults}")
    print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (others' work inflates timings)")
    print(f"  dynamic vs masked max |diff| {max_diff:.2e}")
    result = {
        "full_ms": round(ms["full"], 2),
        "dynamic_ms": round(ms["dynamic"], 2),
        "masked_ms": round(ms["masked"], 2),
        "policy_ms": round(policy_ms, 2),
        "flops_full": flops_full,
        "flops_dynamic": round(flops_dynamic),
        "blocks_kept_mean": round(kept.mean().item(), 2),
        "speedup_over_flops_ratio": round(ratio, 3),
        "speedup_over_flops_ratio_paired": round(ratio_paired, 3),
        "speedup_over_flops_ratio_min": round(ratio_best, 3),
        "speedup_over_flops_ratio_cpu": round(ratio_cpu, 3),
        "speedup_over_flops_ratio_blocks": round(ratio_blocks, 3),
        "page_faults": faults,
        "malloc": args.malloc,
        "cpu_ms": {name: round(v, 1) for name, v in cpu_ms.items()},
        "repeats": args.repeats,
        "loadavg": round(os.getloadavg()[0], 2),
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "workers": args.workers,
        "probs": args.probs,
        "masks": args.masks if args.probs is None else None,
        "unique_policies": len({tuple(row) for row in keep.bool().tolist()}),
        "channels_last": args.channels_last,
        "fuse_bn": args.fuse_bn,
        "device": str(device),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
