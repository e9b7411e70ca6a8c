"""The stage kit: checkpoint cadence, precision, device moves, streaming data and one resume path."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from synthetic import synthetic_image  # noqa: F401  (registers the synthetic-test kind)

from frugalcv.errors import ConfigError
from frugalcv.sharding import write_shards
from frugalcv.workflows import kit
from frugalcv.workflows.engine import control
from frugalcv.workflows.engine.checkpoint import CheckpointHook, list_checkpoints
from frugalcv.workflows.engine.device import to_device
from frugalcv.workflows.engine.trainer import OptimizerStep
from frugalcv.workflows.pipeline.config import parse_checkpoint_every, pipeline_from_dict
from frugalcv.workflows.pipeline.stages import StageContext


@pytest.mark.parametrize("value,expected", [(500, (500, 0.0)), ("10min", (0, 600.0)), ("90s", (0, 90.0)),
                                            ("1h", (0, 3600.0)), ("10min,500", (500, 600.0)), (0, (0, 0.0))])
def test_checkpoint_every_takes_steps_durations_or_both(value, expected):
    assert parse_checkpoint_every(value) == expected


def test_a_bad_checkpoint_every_names_the_key():
    stage = {"name": "s", "uses": "shard", "params": {"kind": "digits", "src": "sklearn"}, "checkpoint_every": "10 parsecs"}
    with pytest.raises(ConfigError, match=r"stages\[0\]|stages.s.*checkpoint_every.*10 parsecs.*10min"):
        pipeline_from_dict({"name": "p", "stages": [stage]})


def test_to_device_moves_nested_batches_and_makes_images_nhwc():
    batch = {"x": torch.zeros(2, 3, 4, 4), "y": [torch.tensor([1, 2]), 7]}
    moved = to_device(batch, "cpu", channels_last=True)
    assert moved["x"].is_contiguous(memory_format=torch.channels_last)
    assert moved["y"][0].tolist() == [1, 2] and moved["y"][1] == 7


class _Linear:
    def __init__(self, model):
        self.model = model

    def training_step(self, batch):
        x, y = batch
        return {"loss": F.mse_loss(self.model(x), y)}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains_on_cpu(precision):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x = torch.randn(32, 4)
    data = [(x[i:i + 8], x[i:i + 8].sum(1, keepdim=True)) for i in range(0, 32, 8)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu") if precision == "fp16" else None
    trainer = kit.Trainer(_Linear(model), OptimizerStep(optimizer, scaler=scaler), data, epochs=5, device="cpu",
                          precision=precision)
    first = F.mse_loss(model(x), x.sum(1, keepdim=True)).item()
    trainer.train()
    assert F.mse_loss(model(x), x.sum(1, keepdim=True)).item() < first
    assert ("scaler" in trainer.state_dict()) == (precision == "fp16")


def test_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="precision='fp8'"):
        kit.Trainer(_Linear(torch.nn.Linear(1, 1)), torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1),
                    [], epochs=1, precision="fp8")


def test_control_hook_checkpoints_by_wall_time(tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(control.time, "monotonic", lambda: clock[0])

    class Tick(kit.HookBase):
        def after_step(self):
            clock[0] += 25.0  # every step "takes" 25 s

    model = torch.nn.Linear(2, 1)
    data = [(torch.randn(4, 2), torch.randn(4, 1)) for _ in range(8)]
    saver = CheckpointHook(str(tmp_path), model, save_at_end=False)
    hook = control.ControlHook(saver, every_seconds=60)
    kit.Trainer(_Linear(model), torch.optim.SGD(model.parameters(), lr=0.01), data,
                [Tick(), saver, hook], epochs=1).train()
    # due after 75 s (step 3), then 75 s after that save (step 6)
    assert [step for step, _ in list_checkpoints(str(tmp_path))] == [3, 6]


# ---------------------------------------------------------------------------------------- streaming


def _ctx(tmp_path, **kw) -> StageContext:
    defaults = dict(pipeline="p", run_id="r", stage="train", params={"seed": 3}, inputs={},
                    output_dir=str(tmp_path / "out"), checkpoint_dir=str(tmp_path / "out" / "checkpoints"),
                    num_workers=2, printer=lambda _: None)
    return StageContext(**{**defaults, **kw})


def _to_tensors(sample):
    image = torch.from_numpy(sample["image"].astype(np.float32) / 255).permute(2, 0, 1)
    return image + 0.01 * torch.randn(()), sample["label"]  # a random "augmentation": worker RNG matters


class _Conv:
    def __init__(self, model):
        self.model = model

    def training_step(self, batch):
        images, labels = batch
        return {"loss": F.cross_entropy(self.model(images), labels)}


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Dropout(0.2), torch.nn.Linear(4 * 6 * 6, 7))


def _batch_noise(batch, generator):
    """A random per-batch "augmentation" drawn from the stream's generator."""
    images, labels = batch
    return images + 0.01 * torch.randn(images.shape, generator=generator), labels


def _train(ctx, url, batch_transform=None) -> str:
    net = kit.place(ctx, _net())
    model, update = kit.distribute(ctx, net, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9))
    data = kit.stream(ctx, url, 6, _to_tensors, batch_transform=batch_transform)
    kit.fit(ctx, _Conv(model), update, data, epochs=2, state=net)
    return hashlib.sha256(b"".join(t.numpy().tobytes() for t in net.state_dict().values())).hexdigest()


@pytest.mark.parametrize("batch_transform", [None, _batch_noise], ids=["per-sample", "per-batch"])
def test_stream_stop_mid_epoch_and_resume_gives_the_same_weights(tmp_path, batch_transform):
    url = str(tmp_path / "data" / "train")
    write_shards("synthetic-test", "40", str(tmp_path / "data"), split="train", max_shard_samples=7, progress=False)
    plain = _train(_ctx(tmp_path / "a"), url, batch_transform)

    stops = iter([False] * 4 + [True])  # a stop request after step 5, mid-epoch (6 steps an epoch)
    ctx = _ctx(tmp_path / "b", should_stop=lambda: next(stops, False))
    with pytest.raises(kit.StageInterrupted, match="step 5"):
        _train(ctx, url, batch_transform)
    assert [s for s, _ in list_checkpoints(ctx.checkpoint_dir)] == [5]
    resumed = _train(_ctx(tmp_path / "b"), url, batch_transform)
    assert resumed == plain
    if batch_transform is not None:  # the draws matter: another seed trains other weights
        assert _train(_ctx(tmp_path / "c", params={"seed": 4}), url, batch_transform) != plain


def test_batch_transforms_get_a_generator_per_batch_position_and_rank(tmp_path):
    write_shards("synthetic-test", "40", str(tmp_path / "data"), split="train", progress=False)
    url = str(tmp_path / "data" / "train")

    def first_draws(rank):
        seen = []
        data = kit.stream(_ctx(tmp_path, rank=rank, world_size=2, num_workers=0), url, 8,
                          _to_tensors, batch_transform=lambda b, g: seen.append(torch.rand(1, generator=g).item()) or b)
        for _ in data(0):
            pass
        return seen

    rank0 = first_draws(0)
    assert len(set(rank0)) == len(rank0) == 5 and rank0 == first_draws(0)
    assert not set(rank0) & set(first_draws(1))


def test_stream_gives_each_rank_its_share_of_the_global_batch(tmp_path):
    write_shards("synthetic-test", "40", str(tmp_path / "data"), split="train", max_shard_samples=7, progress=False)
    url = str(tmp_path / "data" / "train")
    ranks = [kit.stream(_ctx(tmp_path, rank=r, world_size=2, num_workers=0), url, 8, _to_tensors) for r in (0, 1)]
    assert [r.steps_per_epoch for r in ranks] == [5, 5]  # 20 samples a rank, 4 per step
    assert all(len(images) == 4 for images, _ in ranks[0](0))
    evaluation = kit.stream(_ctx(tmp_path, rank=1, world_size=2, num_workers=0), url, 16, _to_tensors, train=False)
    assert sum(len(labels) for _, labels in evaluation) == 40  # evaluation reads every sample once
    with pytest.raises(ConfigError, match="batch_size=1 is smaller than the world size 2"):
        kit.stream(_ctx(tmp_path, rank=0, world_size=2), url, 1, _to_tensors)


def test_smoke_runs_cap_steps_and_batches(tmp_path):
    write_shards("synthetic-test", "40", str(tmp_path / "data"), split="train", progress=False)
    url = str(tmp_path / "data" / "train")
    ctx = _ctx(tmp_path, smoke_steps=2, num_workers=0)
    net = kit.place(ctx, _net())
    model, update = kit.distribute(ctx, net, torch.optim.SGD(net.parameters(), lr=0.05))
    data = kit.stream(ctx, url, 32, _to_tensors)
    trainer = kit.fit(ctx, _Conv(model), update, data, epochs=10, state=net)
    assert trainer.step == 2
    assert all(len(labels) <= kit.SMOKE_BATCH for _, labels in data(0))
    assert len(kit.stream(ctx, url, 4, _to_tensors, train=False)) == 2


def _children(pid: int) -> list[int]:
    import os

    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


def test_loader_workers_leave_sigterm_to_the_training_process(tmp_path):
    """Slurm signals every process of a step; the workers must not die of it mid-epoch."""
    import os
    import signal

    write_shards("synthetic-test", "40", str(tmp_path / "data"), split="train", max_shard_samples=5, progress=False)
    ctx = _ctx(tmp_path, num_workers=2)
    data = kit.stream(ctx, str(tmp_path / "data" / "train"), 4, _to_tensors)
    received = []
    previous = signal.signal(signal.SIGTERM, lambda *_: received.append(1))
    try:
        batches = 0
        for _ in data(0):
            if batches == 1:
                pids = data.loader.worker_pids
                assert len(pids) == 2 and set(pids) <= set(_children(os.getpid()))
                for pid in pids:  # only this loader's: other tests' workers may still be alive
                    os.kill(pid, signal.SIGTERM)
            batches += 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        data.close()  # as fit does: the workers, told to leave, end with the training
    assert batches == 10
