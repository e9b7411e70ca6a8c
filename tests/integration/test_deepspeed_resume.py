"""DeepSpeed ZeRO-2 on 2 CPU processes: preempted, resumed from engine.save_checkpoint, the loss
continues and the final weights equal the uninterrupted run's.

The first DeepSpeed init on a machine compiles its shm comm op (g++ + ninja, ~35 s; cached in
$TORCH_EXTENSIONS_DIR or ~/.cache/torch_extensions).
"""

import hashlib
import importlib.util
import json
import os
import random
import shutil
import signal
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from realparts import skip_or_fail
from synthetic import synthetic_image  # noqa: F401  (registers the synthetic-test kind)

from frugalcv.sharding import ShardLoader, write_shards
from frugalcv.workflows.engine.checkpoint import LoaderEpochs
from frugalcv.workflows.engine.trainer import HookBase, LoggingHook

pytestmark = pytest.mark.integration
WORLD, EPOCHS, ZERO_STAGE = 2, 2, 2  # 40 samples / 2 ranks / batch 4 -> 5 steps per epoch


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
    def __init__(self, engine):
        self.engine = engine

    def training_step(self, batch):
        return {"loss": F.cross_entropy(self.engine(batch["x"]), batch["y"])}


class SendSignal(HookBase):
    def __init__(self, at_step):
        self.at_step = at_step

    def before_step(self):
        if self.trainer.step == self.at_step:
            os.kill(os.getpid(), signal.SIGUSR2)


def worker(rank, port, dataset, ckdir, out, name, resume_tag, signal_at):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD), DS_ACCELERATOR="cpu")
    torch.set_num_threads(1)
    from frugalcv.slurm.distributed import cleanup, init_distributed
    from frugalcv.slurm.preemption import Preempted
    from frugalcv.workflows.engine.checkpoint import CheckpointHook
    from frugalcv.workflows.engine.control import ControlHook
    from frugalcv.workflows.engine.engines import DeepSpeedStep, build_deepspeed, load_deepspeed
    from frugalcv.workflows.engine.trainer import Trainer

    init_distributed("gloo", timeout_s=300)
    try:
        torch.manual_seed(0)
        engine = build_deepspeed(TinyNet(), {"type": "Adam", "params": {"lr": 1e-2, "weight_decay": 1e-4}},
                                 ZERO_STAGE, micro_batch_size=4)
        loader = ShardLoader(dataset, 4, seed=5, transform=to_tensors)
        ckpt = CheckpointHook(ckdir, engine.module, loader=loader, engine=engine)
        logger = LoggingHook(1, printer=None)
        hooks = [SendSignal(signal_at)] if (signal_at is not None and rank == 1) else []
        trainer = Trainer(Task(engine), DeepSpeedStep(engine), LoaderEpochs(loader),
                          [*hooks, logger, ckpt, ControlHook(ckpt)], epochs=EPOCHS)
        seed = 1000 + rank if resume_tag is None else 77  # per-rank dropout; a resumed run starts elsewhere
        torch.manual_seed(seed), np.random.seed(seed), random.seed(seed)
        if resume_tag is not None:
            load_deepspeed(engine, ckdir, resume_tag, trainer=trainer, loader=loader)
        result = {}
        try:
            trainer.train()
        except Preempted as p:
            result["preempted"] = {"url": p.url, "step": p.step}
        h = hashlib.sha256()
        for key, t in engine.module.state_dict().items():
            h.update(key.encode() + t.detach().float().numpy().tobytes())
        result.update(step=trainer.step, sha256=h.hexdigest(), losses={int(r["step"]): r["loss"] for r in logger.history})
        with open(os.path.join(out, f"{name}-{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        cleanup()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path, dataset, ckdir, name, resume_tag=None, signal_at=None):
    mp.start_processes(worker, args=(free_port(), dataset, str(ckdir), str(tmp_path), name, resume_tag, signal_at),
                       nprocs=WORLD, start_method="spawn")
    return [json.loads((tmp_path / f"{name}-{r}.json").read_text()) for r in range(WORLD)]


def test_deepspeed_zero2_preempt_resume_matches_uninterrupted(tmp_path):
    if importlib.util.find_spec("deepspeed") is None:
        skip_or_fail("deepspeed not installed (DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed)")
    if shutil.which("ninja") is None or shutil.which("g++") is None:
        skip_or_fail("ninja and g++ must be on PATH: DeepSpeed compiles its CPU shm comm op (apt-get install ninja-build g++)")
    write_shards("synthetic-test", "40", str(tmp_path / "ds"), split="train", max_shard_samples=8, progress=False)
    dataset = str(tmp_path / "ds" / "train")

    ref = launch(tmp_path, dataset, tmp_path / "ref", "ref")
    assert ref[0]["step"] == EPOCHS * 5 and ref[0]["sha256"] == ref[1]["sha256"]

    ck = tmp_path / "ck"
    first = launch(tmp_path, dataset, ck, "a", signal_at=3)  # signal during step 4 -> mid-epoch
    assert [r["preempted"]["step"] for r in first] == [4, 4]
    tag = os.path.basename(first[0]["preempted"]["url"])
    assert tag == "step-00000004" and (ck / tag).is_dir()
    # the first run's losses are the reference run's (same data, RNG, weights)
    assert first[0]["losses"] == {k: v for k, v in ref[0]["losses"].items() if int(k) <= 4}

    last = launch(tmp_path, dataset, ck, "b", resume_tag=tag)
    assert [r["step"] for r in last] == [EPOCHS * 5] * WORLD
    # the loss continues where it stopped: steps 5.. (after the logger's restored history of
    # steps 1-4) equal the uninterrupted run's, bit for bit
    assert last[0]["losses"] == ref[0]["losses"]
    assert last[0]["sha256"] == last[1]["sha256"] == ref[0]["sha256"]
