import itertools

import numpy as np
import pytest
from synthetic import synthetic_image  # noqa: F401  (registers the synthetic-test kind)

from frugalcv.errors import FrugalError, ShardError
from frugalcv.sharding import ShardLoader, write_shards
from frugalcv.sharding.order import epoch_order

N = 61  # prime: every world size leaves a remainder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    write_shards("synthetic-test", str(N), str(root), split="train", max_shard_samples=7, progress=False)
    return str(root / "train")


def _keys(batch):
    return list(batch["key"])


def run_epoch(url, world, workers, seed=3, epoch=0, batch_size=4, state=None):
    per_rank = []
    for r in range(world):
        loader = ShardLoader(url, batch_size, rank=r, world_size=world, num_workers=workers, seed=seed, epoch=epoch)
        if state:
            loader.load_state_dict(state)
        per_rank.append([k for b in loader for k in _keys(b)])
    return per_rank


def interleave(per_rank):
    return [k for step in zip(*per_rank, strict=True) for k in step]


@pytest.mark.parametrize("world,workers", list(itertools.product([1, 2, 3], [0, 2])))
def test_equal_counts_and_same_global_order(dataset, world, workers):
    reference = run_epoch(dataset, 1, 0)[0]
    assert sorted(reference) == sorted(f"s{i:05d}" for i in range(N))
    per_rank = run_epoch(dataset, world, workers)
    assert len({len(p) for p in per_rank}) == 1 and len(per_rank[0]) == N // world
    assert interleave(per_rank) == reference[: world * (N // world)]


def test_order_depends_on_seed_and_epoch_only(dataset):
    a = run_epoch(dataset, 1, 0, seed=3, epoch=0)[0]
    assert run_epoch(dataset, 1, 2, seed=3, epoch=0)[0] == a
    assert run_epoch(dataset, 1, 0, seed=3, epoch=1)[0] != a
    assert run_epoch(dataset, 1, 0, seed=4, epoch=0)[0] != a
    # shards are mixed, not read one after another
    assert epoch_order([7] * 9, 3, 0, 8)[:7].tolist() != list(range(7))


@pytest.mark.parametrize("old_world,new_world,new_workers", [(2, 2, 0), (2, 3, 2), (3, 1, 2), (1, 2, 0)])
def test_resume_mid_epoch_yields_exactly_the_rest(dataset, old_world, new_world, new_workers):
    full = run_epoch(dataset, 1, 0)[0]
    loaders = [ShardLoader(dataset, 4, rank=r, world_size=old_world, num_workers=2, seed=3) for r in range(old_world)]
    its = [iter(lo) for lo in loaders]
    seen = []
    for _ in range(3):  # three steps in lockstep, then "preempted"
        seen.append([_keys(next(it)) for it in its])
    state = loaders[0].state_dict()
    assert all(lo.state_dict() == state for lo in loaders)
    assert state["position"] == 3 * 4 * old_world
    consumed = [k for step in seen for k in interleave(step)]
    rest = interleave(run_epoch(dataset, new_world, new_workers, state=state))
    assert not set(rest) & set(consumed)
    remaining = N - state["position"]
    assert rest == full[state["position"] : state["position"] + new_world * (remaining // new_world)]
    assert consumed == full[: state["position"]]


def test_state_after_a_full_epoch_points_at_the_next(dataset):
    loader = ShardLoader(dataset, 8, seed=3)
    n = sum(len(b["key"]) for b in loader)
    assert n == N and loader.state_dict()["epoch"] == 1 and loader.state_dict()["position"] == 0
    loader.set_epoch(1)  # same epoch: a no-op, keeps position
    assert len(loader) == (N + 7) // 8


def test_len_and_drop_last(dataset):
    lo = ShardLoader(dataset, 8, rank=0, world_size=2, drop_last=True)
    assert len(lo) == (N // 2) // 8
    assert all(len(b["key"]) == 8 for b in lo)


def test_transform_runs_in_workers(dataset):
    def to_float(s):
        return {"x": s["image"].astype(np.float32) / 255, "y": s["label"]}

    batch = next(iter(ShardLoader(dataset, 5, num_workers=2, transform=to_float)))
    assert batch["x"].shape == (5, 8, 8, 3) and str(batch["x"].dtype) == "torch.float32"


def _with_pid(s):
    import os

    return {"key": s["key"], "pid": os.getpid()}


def test_persistent_workers_serve_every_epoch_in_the_order_of_fresh_ones(dataset):
    kept = ShardLoader(dataset, 4, num_workers=2, seed=3, transform=_with_pid)
    fresh = ShardLoader(dataset, 4, num_workers=2, seed=3, transform=_with_pid, persistent_workers=False)
    pids = []
    for epoch in range(3):
        batches = list(kept)
        assert [k for b in batches for k in _keys(b)] == [k for b in fresh for k in _keys(b)]
        assert kept.state_dict()["epoch"] == fresh.state_dict()["epoch"] == epoch + 1
        pids.append({int(p) for b in batches for p in b["pid"]})
    assert len(pids[0]) == 2 and pids[0] == pids[1] == pids[2]  # the same two processes every epoch
    assert set(kept.worker_pids) == pids[0]
    kept.close()
    assert kept.worker_pids == []


def test_persistent_workers_after_a_break_and_a_resume_give_the_rest(dataset):
    full = run_epoch(dataset, 1, 0)[0]
    loader = ShardLoader(dataset, 4, num_workers=2, seed=3)
    it = iter(loader)
    seen = [k for _ in range(3) for k in _keys(next(it))]  # stopped after three steps
    state = loader.state_dict()
    loader.load_state_dict(state)
    rest = [k for b in loader for k in _keys(b)]
    assert seen + rest == full
    assert [k for b in loader for k in _keys(b)] == run_epoch(dataset, 1, 0, epoch=1)[0]
    loader.seed = 4  # another order: new workers, planned for it
    loader.set_epoch(0)
    assert [k for b in loader for k in _keys(b)] == run_epoch(dataset, 1, 0, seed=4)[0]


def restamp_manifest(folder):
    """Record the shards' current sha256 in the manifest."""
    import hashlib
    import json

    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    for shard in manifest["shards"]:
        shard["sha256"] = hashlib.sha256((folder / shard["url"]).read_bytes()).hexdigest()
    path.write_text(json.dumps(manifest))


def test_skip_policy_counts_and_fails_past_threshold(tmp_path):
    write_shards("synthetic-test", "10", str(tmp_path), split="train", progress=False)
    shard = tmp_path / "train" / "train-000000.tar"
    data = bytearray(shard.read_bytes())
    data[3 * 512 + 16 : 3 * 512 + 24] = b"\xff" * 8  # break s00000.png
    shard.write_bytes(bytes(data))
    restamp_manifest(tmp_path / "train")  # as if the source image was broken when the shard was written
    url = str(tmp_path / "train")
    with pytest.raises(ShardError, match="s00000.png failed to decode"):
        list(ShardLoader(url, 4, shuffle=False))
    batches = list(ShardLoader(url, 4, shuffle=False, on_error="skip", max_skipped=1))
    assert [len(b["key"]) for b in batches] == [3, 4, 2]
    with pytest.raises(ShardError, match="max_skipped=0"):
        list(ShardLoader(url, 4, shuffle=False, on_error="skip", max_skipped=0))


def test_truncated_shard_in_loader_names_it(tmp_path):
    write_shards("synthetic-test", "10", str(tmp_path), split="train", max_shard_samples=5, progress=False)
    shard = tmp_path / "train" / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:1800])
    with pytest.raises(ShardError, match=r"train-000001\.tar"):
        list(ShardLoader(str(tmp_path / "train"), 4, num_workers=2))


def test_state_for_another_dataset_is_refused(dataset, tmp_path):
    write_shards("synthetic-test", "8", str(tmp_path), split="train", progress=False)
    with pytest.raises(FrugalError, match="dataset of 61 samples"):
        ShardLoader(str(tmp_path / "train"), 2).load_state_dict(ShardLoader(dataset, 2).state_dict())


def test_random_transforms_resume_exactly(dataset):
    import torch

    def jitter(s):
        return {"key": s["key"], "noise": torch.rand(()).item() + float(np.random.rand())}

    def run(state=None, steps=None, workers=2):
        lo = ShardLoader(dataset, 4, num_workers=workers, seed=5, transform=jitter)
        if state:
            lo.load_state_dict(state)
        out = []
        for i, b in enumerate(lo):
            out += list(zip(b["key"], b["noise"].tolist(), strict=True))
            if steps is not None and i + 1 == steps:
                return out, lo.state_dict()
        return out, lo.state_dict()

    full, _ = run()
    torch.manual_seed(123)  # the global RNG must not matter
    head, state = run(steps=3, workers=1)
    tail, _ = run(state=state, workers=2)
    assert head + tail == full


@pytest.mark.parametrize("workers", [0, 2])
def test_a_small_cache_reads_the_window_in_passes_with_the_same_batches(dataset, workers, monkeypatch):
    """Members held ahead of use stay within cache_mb: the window is read in several passes."""
    from frugalcv.sharding import loader as loader_module

    opened = []
    real_open = loader_module.storage.open_read
    monkeypatch.setattr(loader_module.storage, "open_read", lambda url: opened.append(url) or real_open(url))
    big = [_keys(b) for b in ShardLoader(dataset, 4, num_workers=0, seed=3)]
    opens_big = len(opened)
    tiny = ShardLoader(dataset, 4, num_workers=workers, seed=3, cache_mb=1e-6)  # one sample a pass
    assert [_keys(b) for b in tiny] == big
    if workers == 0:
        assert opens_big == 9 and len(opened) - opens_big == N  # every shard once, then every sample alone
    with pytest.raises(FrugalError, match="cache_mb must be > 0"):
        ShardLoader(dataset, 4, cache_mb=0)


def test_a_process_exits_with_a_worker_loader_left_open(tmp_path):
    """Workers ignore SIGTERM (Slurm's is for the training process); at exit the loader shuts them
    down itself, so multiprocessing's exit handler does not wait for them for ever."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "left_open.py"
    script.write_text(
        f"import sys; sys.path.insert(0, {str(Path(__file__).parents[1])!r})\n"
        "from synthetic import synthetic_image  # noqa\n"
        "from frugalcv.sharding import ShardLoader, write_shards\n"
        f"write_shards('synthetic-test', '20', {str(tmp_path)!r}, split='train', max_shard_samples=5, progress=False)\n"
        f"it = iter(ShardLoader({str(tmp_path / 'train')!r}, 4, num_workers=2))\n"
        "next(it)\n")
    done = subprocess.run([sys.executable, str(script)], timeout=60, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
