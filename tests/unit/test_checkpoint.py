"""Checkpoint/resume: an interrupted run resumed in a fresh Trainer ends byte-identical."""

import hashlib
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from synthetic import synthetic_image  # noqa: F401  (registers the synthetic-test kind)

from frugalcv.errors import ConfigError
from frugalcv.sharding import ShardLoader, write_shards
from frugalcv.workflows.engine.checkpoint import (
    CheckpointHook,
    LoaderEpochs,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from frugalcv.workflows.engine.trainer import HookBase, LoggingHook, LRScheduleHook, Trainer

EPOCHS, BATCH = 3, 8  # 40 samples -> 5 steps per epoch, 15 in all


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    write_shards("synthetic-test", "40", str(root), split="train", max_shard_samples=8, progress=False)
    return str(root / "train")


def to_tensors(sample):
    return {"x": torch.from_numpy(sample["image"].astype(np.float32) / 255).permute(2, 0, 1), "y": sample["label"]}


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.drop = torch.nn.Dropout(0.3)
        self.fc = torch.nn.Linear(4 * 8 * 8, 7)

    def forward(self, x):
        return self.fc(self.drop(F.relu(self.conv(x)).flatten(1)))


class Task:
    def __init__(self, model):
        self.model = model

    def training_step(self, batch):
        self.model.train()
        # numpy and python RNGs take part too, so their restore matters
        noise = float(np.random.rand()) * 1e-3 + random.random() * 1e-3
        return {"loss": F.cross_entropy(self.model(batch["x"]), batch["y"]) + noise}


class Crash(HookBase):
    def __init__(self, at_step):
        self.at_step = at_step

    def after_step(self):
        if self.trainer.step == self.at_step:
            raise KeyboardInterrupt(f"simulated interruption at step {self.at_step}")


def build(dataset, ckdir, every, hooks=(), *, epochs=EPOCHS, init_seed=0):
    torch.manual_seed(init_seed)
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=1e-4)
    sched = warmup_cosine(opt, epochs * 5)
    loader = ShardLoader(dataset, BATCH, seed=5, transform=to_tensors)
    ckpt = CheckpointHook(str(ckdir), model, every=every, keep=2, scheduler=sched, loader=loader)
    trainer = Trainer(Task(model), opt, LoaderEpochs(loader), [*hooks, LRScheduleHook(sched),
                                                               LoggingHook(3, printer=None), ckpt], epochs=epochs)
    return model, opt, sched, loader, trainer


def warmup_cosine(opt, total, warmup=2):
    def factor(step):
        return (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def seed_all(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def weights_sha256(model):
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    seed_all(123)
    model, *_, trainer = build(dataset, tmp_path_factory.mktemp("ref"), every=None)
    trainer.train()
    assert trainer.step == 15 and trainer.epoch == 3
    return weights_sha256(model)


@pytest.mark.parametrize(
    ("every", "crash_at", "resume_step"),
    [(2, 7, 6), (5, 8, 5), (1, 14, 13), (5, 15, 10)],
    ids=["mid-epoch-2", "epoch-boundary", "mid-epoch-3", "last-step"],
)
def test_interrupted_run_resumes_byte_identical(dataset, tmp_path, reference, every, crash_at, resume_step):
    seed_all(123)
    _, *_, trainer = build(dataset, tmp_path, every, [Crash(crash_at)])
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert trainer.failed and trainer.step == crash_at
    url = latest_checkpoint(str(tmp_path))
    assert url.endswith(f"step-{resume_step:08d}.pt")
    assert len(list_checkpoints(str(tmp_path))) <= 2  # keep=2

    seed_all(999)  # a fresh process would start from other RNG states
    model, opt, sched, loader, trainer = build(dataset, tmp_path, every, init_seed=7)
    restore(url, trainer, model, opt, sched, loader)
    assert trainer.step == resume_step
    trainer.train()
    assert (trainer.step, trainer.epoch) == (15, 3)
    assert weights_sha256(model) == reference


def test_resume_twice_and_final_checkpoint(dataset, tmp_path, reference):
    seed_all(123)
    *_, trainer = build(dataset, tmp_path, 3, [Crash(4)])
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    for crash_at in (11, None):
        seed_all(999)
        model, opt, sched, loader, trainer = build(dataset, tmp_path, 3, [Crash(crash_at)] if crash_at else [])
        restore(latest_checkpoint(str(tmp_path)), trainer, model, opt, sched, loader)
        if crash_at:
            with pytest.raises(KeyboardInterrupt):
                trainer.train()
        else:
            trainer.train()
    assert weights_sha256(model) == reference
    final = load_checkpoint(latest_checkpoint(str(tmp_path)))
    # saved in after_step of the last step: the epoch counter moves on in after_epoch
    assert final["trainer"]["step"] == 15 and final["loader"] == {**final["loader"], "epoch": 2, "position": 40}
    assert [s for s, _ in list_checkpoints(str(tmp_path))] == [12, 15]


def test_rng_states_round_trip_under_weights_only(tmp_path):
    seed_all(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    saved = rng_state()
    sha = save_checkpoint(str(tmp_path / "c.pt"), {"format": 1, "rng": [saved]})
    expected = (random.random(), np.random.randn(), torch.rand(3))
    seed_all(4)
    loaded = load_checkpoint(str(tmp_path / "c.pt"), sha256=sha)  # weights_only=True inside
    set_rng_state(loaded["rng"][0])
    got = (random.random(), np.random.randn(), torch.rand(3))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])
    assert sha == hashlib.sha256((tmp_path / "c.pt").read_bytes()).hexdigest()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_memory_url_and_digest_check():
    url = "memory://frugalcv-ckpt-test/run/step-00000001.pt"
    sha = save_checkpoint(url, {"format": 1, "w": torch.arange(4)})
    assert torch.equal(load_checkpoint(url)["w"], torch.arange(4))
    assert latest_checkpoint("memory://frugalcv-ckpt-test/run") == url
    with pytest.raises(Exception, match="sha256"):
        load_checkpoint(url, sha256="0" * 64 if sha != "0" * 64 else "1" * 64)


def test_checkpoint_hook_must_come_after_state_changing_hooks(dataset, tmp_path):
    model, opt, sched, loader, _ = build(dataset, tmp_path, 1)
    ckpt = CheckpointHook(str(tmp_path), model, every=1)
    trainer = Trainer(Task(model), opt, LoaderEpochs(loader), [ckpt, LRScheduleHook(sched)], max_steps=1)
    with pytest.raises(ConfigError, match="LRScheduleHook"):
        trainer.train()
