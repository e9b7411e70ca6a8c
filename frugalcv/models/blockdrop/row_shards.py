"""CPU inference over row shards: each core runs its own slice of the batch on one thread.

PyTorch's default CPU parallelism splits every op across all cores (intra-op OpenMP) and pays a
fork/join per op. Here each core gets a contiguous slice of the batch and runs single-threaded
ops, so a call joins once. Per-image policies stay per image, so the result equals one call on
the whole batch (up to float rounding of the convolutions). Measured on a 2-core VM
(benchmarks/blockdrop_inference.py): with glibc's default allocator about 20 % faster than
intra-op threads for the full and the dynamic ResNet-110 alike (fewer page faults); with freed
memory kept (``--malloc keep``) both ways take the same time.

    with RowShards(workers=2) as shards:
        logits = shards(lambda x, keep: model.forward_dynamic(x, keep), images, keep)

The workers' grad mode and inference mode follow the caller's. Worker threads run ops on one
intra-op thread each; the caller's own thread count is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch


def _one_intra_op_thread() -> None:
    torch.set_num_threads(1)


class RowShards:
    """Calls ``fn`` on ``workers`` contiguous row slices of its tensor arguments in parallel."""

    def __init__(self, workers: int | None = None):
        threads = torch.get_num_threads()  # also settles the caller's own count before workers start
        self.workers = int(workers or threads)
        if self.workers < 1:
            raise ValueError(f"RowShards needs workers >= 1, got {workers}")
        self._pool = ThreadPoolExecutor(self.workers, "frugalcv-rows", initializer=_one_intra_op_thread)
        # a worker's set_num_threads(1) also becomes the default for threads started later; keep ours
        torch.set_num_threads(threads)

    def __call__(self, fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
        """``fn(*tensors)`` computed as ``cat(fn(*slice_i) for each slice)`` along dim 0."""
        batch = tensors[0].shape[0]
        if any(t.shape[0] != batch for t in tensors):
            raise ValueError(f"RowShards: every tensor needs the same batch size, got {[t.shape[0] for t in tensors]}")
        parts = min(self.workers, batch)
        if parts <= 1:
            return fn(*tensors)
        slices = zip(*(t.tensor_split(parts) for t in tensors), strict=True)
        grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
        futures = [self._pool.submit(_call_in_mode, fn, grad, inference, s) for s in slices]
        return torch.cat([f.result() for f in futures])

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> RowShards:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _call_in_mode(fn, grad: bool, inference: bool, args: tuple[torch.Tensor, ...]) -> torch.Tensor:
    # grad mode and inference mode are thread-local in PyTorch: carry the caller's over
    if inference:
        with torch.inference_mode():
            return fn(*args)
    with torch.set_grad_enabled(grad):
        return fn(*args)
