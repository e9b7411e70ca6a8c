"""The global sample order of an epoch and how it is dealt to ranks and workers.

Global order. Shards are permuted with a generator seeded by (seed, epoch); the
permuted list is cut into windows of ``window_shards`` consecutive shards and the
samples of each window are permuted together. The result is one sequence of global
sample ids that depends only on (seed, epoch, manifest, window_shards) — never on the
world size or the number of workers.

Dealing. A loader resuming at position P (samples already consumed this epoch by
all ranks together) deals positions P, P+1, ... round-robin: rank r takes
P + r, P + r + W, ... . Each rank gets floor((N - P) / W) samples, so every rank sees
exactly the same count; the remainder (fewer than W samples at the end of the
epoch's order, which differs every epoch) is dropped. Reading the ranks' batches
in lockstep (rank 0's k-th sample, rank 1's k-th sample, ...) gives back the
global sequence, whatever W is. Within a rank, batch b goes to worker b mod
num_workers, which is the order torch's DataLoader collects them in.
"""

from __future__ import annotations

import numpy as np


def epoch_order(shard_sizes: list[int], seed: int, epoch: int, window_shards: int, shuffle: bool = True) -> np.ndarray:
    """Global sample ids (int64) in the epoch's order."""
    sizes = np.asarray(shard_sizes, dtype=np.int64)
    firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(sizes) else sizes
    if not shuffle:
        return np.arange(int(sizes.sum()), dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(epoch), 0x5EED])
    perm = rng.permutation(len(sizes))
    parts = []
    for w in range(0, len(perm), max(1, window_shards)):
        ids = np.concatenate([np.arange(firsts[s], firsts[s] + sizes[s]) for s in perm[w : w + window_shards]])
        parts.append(ids[rng.permutation(len(ids))])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def rank_positions(total: int, start: int, rank: int, world_size: int) -> np.ndarray:
    """Positions of the epoch's order that ``rank`` reads, resuming at ``start``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    per_rank = max(0, (total - start) // world_size)
    return start + rank + world_size * np.arange(per_rank, dtype=np.int64)


def batch_slices(n: int, batch_size: int, drop_last: bool) -> list[tuple[int, int]]:
    stop = n - n % batch_size if drop_last else n
    return [(b, min(b + batch_size, n)) for b in range(0, stop, batch_size)]
