"""The trainer drives a ShardLoader directly: epochs advance, a resumed epoch finishes."""

import torch
from synthetic import synthetic_image  # noqa: F401  (registers the synthetic-test kind)

from frugalcv.sharding import ShardLoader, write_shards
from frugalcv.workflows.engine.trainer import Trainer


class Task:
    def __init__(self):
        self.model = torch.nn.Linear(1, 1)
        self.keys = []

    def training_step(self, batch):
        self.keys += list(batch["key"])
        return {"loss": self.model(batch["label"].float()[:, None]).pow(2).mean()}


def test_trainer_with_shard_loader_epochs_and_resume(tmp_path):
    write_shards("synthetic-test", "22", str(tmp_path), split="train", max_shard_samples=5, progress=False)
    url = str(tmp_path / "train")

    def trainer(task, loader, **kw):
        return Trainer(task, torch.optim.SGD(task.model.parameters(), lr=0.01), loader, **kw)

    full = Task()
    trainer(full, ShardLoader(url, 4, seed=1), epochs=3).train()
    assert len(full.keys) == 3 * 22

    first = Task()
    lo = ShardLoader(url, 4, seed=1)
    t = trainer(first, lo, epochs=3, max_steps=8)  # stops mid-epoch 2 (6 batches per epoch)
    t.train()
    state, cursor = t.state_dict(), lo.state_dict()
    second = Task()
    lo2 = ShardLoader(url, 4, seed=1)
    lo2.load_state_dict(cursor)
    t2 = trainer(second, lo2, epochs=3)
    t2.load_state_dict(state)
    t2.train()
    assert first.keys + second.keys == full.keys
