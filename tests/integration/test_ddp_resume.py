"""DDP on 2 gloo processes: preempted twice (one rank signalled), resumed, byte-identical end."""

import hashlib
import json
import math
import os
import random
import signal
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from realparts import skip_or_fail
from synthetic import synthetic_image  # noqa: F401  (registers the synthetic-test kind)

from frugalcv.sharding import ShardLoader, write_shards
from frugalcv.slurm.distributed import cleanup, init_distributed
from frugalcv.slurm.preemption import Preempted
from frugalcv.workflows.engine.checkpoint import CheckpointHook, LoaderEpochs, load_checkpoint, restore
from frugalcv.workflows.engine.control import ControlHook
from frugalcv.workflows.engine.engines import wrap_ddp
from frugalcv.workflows.engine.trainer import HookBase, LRScheduleHook, Trainer

pytestmark = pytest.mark.integration
WORLD, EPOCHS = 2, 2  # 40 samples / 2 ranks / batch 4 -> 5 steps per epoch


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
        return {"loss": F.cross_entropy(self.model(batch["x"]), batch["y"])}


class SendSignal(HookBase):
    def __init__(self, at_step):
        self.at_step = at_step

    def before_step(self):
        if self.trainer.step == self.at_step:
            os.kill(os.getpid(), signal.SIGUSR2)


def warmup_cosine(opt, total, warmup=2):
    def factor(step):
        return (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def seed_all(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def worker(rank, port, dataset, ckdir, out, name, resume, signal_at):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    init_distributed("gloo", timeout_s=120)
    try:
        torch.manual_seed(0)
        model = TinyNet()
        opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
        sched = warmup_cosine(opt, EPOCHS * 5)
        loader = ShardLoader(dataset, 4, seed=5, transform=to_tensors)
        ckpt = CheckpointHook(ckdir, model, keep=3, scheduler=sched, loader=loader)
        # only rank 1 is signalled: the all_reduce must stop rank 0 at the same step
        hooks = [SendSignal(signal_at)] if (signal_at is not None and rank == 1) else []
        trainer = Trainer(Task(wrap_ddp(model)), opt, LoaderEpochs(loader),
                          [*hooks, LRScheduleHook(sched), ckpt, ControlHook(ckpt)], epochs=EPOCHS)
        seed_all(1000 + rank if resume is None else 77)  # per-rank dropout; a resumed run starts elsewhere
        if resume is not None:
            restore(resume, trainer, model, opt, sched, loader)
        result = {}
        try:
            trainer.train()
        except Preempted as p:
            result["preempted"] = {"url": p.url, "step": p.step}
        h = hashlib.sha256()
        for key, t in model.state_dict().items():
            h.update(key.encode() + t.numpy().tobytes())
        result.update(step=trainer.step, sha256=h.hexdigest())
        with open(os.path.join(out, f"{name}-{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        cleanup()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path, dataset, ckdir, name, resume=None, signal_at=None):
    mp.start_processes(worker, args=(free_port(), dataset, str(ckdir), str(tmp_path), name, resume, signal_at),
                       nprocs=WORLD, start_method="spawn")
    return [json.loads((tmp_path / f"{name}-{r}.json").read_text()) for r in range(WORLD)]


def test_ddp_preempt_resume_matches_uninterrupted(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        skip_or_fail("torch.distributed with gloo is not available")
    write_shards("synthetic-test", "40", str(tmp_path / "ds"), split="train", max_shard_samples=8, progress=False)
    dataset = str(tmp_path / "ds" / "train")

    ref = launch(tmp_path, dataset, tmp_path / "ref", "ref")
    assert ref[0]["step"] == EPOCHS * 5 and ref[0]["sha256"] == ref[1]["sha256"]

    ck = tmp_path / "ck"
    first = launch(tmp_path, dataset, ck, "a", signal_at=2)  # signal during step 3 -> mid-epoch
    assert [r["preempted"]["step"] for r in first] == [3, 3]
    second = launch(tmp_path, dataset, ck, "b", resume=first[0]["preempted"]["url"], signal_at=4)
    assert [r["preempted"]["step"] for r in second] == [5, 5]  # the epoch boundary
    state = load_checkpoint(second[0]["preempted"]["url"])
    assert state["world_size"] == WORLD and len(state["rng"]) == WORLD
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    last = launch(tmp_path, dataset, ck, "c", resume=second[0]["preempted"]["url"])
    assert [r["step"] for r in last] == [EPOCHS * 5] * WORLD
    assert last[0]["sha256"] == last[1]["sha256"] == ref[0]["sha256"]
