"""kit.pair: each batch of one stream with the next batch of another that cycles its own epochs, resumably."""

import pytest
import torch
from synthetic import synthetic_image  # noqa: F401  (registers the synthetic-test kind)

from frugalcv.errors import ConfigError
from frugalcv.sharding import ShardLoader, write_shards
from frugalcv.workflows import kit
from frugalcv.workflows.engine.trainer import Trainer


class Task:
    def __init__(self):
        self.model = torch.nn.Linear(1, 1)
        self.pairs = []

    def training_step(self, batch):
        main, other = batch
        self.pairs.append((tuple(main["key"]), tuple(other["key"])))
        return {"loss": self.model(main["label"].float()[:, None]).pow(2).mean()}


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("paired")
    write_shards("synthetic-test", "12", str(root / "a"), split="train", max_shard_samples=5, progress=False)
    write_shards("synthetic-test", "7", str(root / "b"), split="train", max_shard_samples=3, progress=False)
    return str(root / "a" / "train"), str(root / "b" / "train")


def paired(splits, other_batch=2):
    a, b = splits
    main = ShardLoader(a, 4, seed=1, shuffle=True)
    main.drop_last = True
    other = ShardLoader(b, other_batch, seed=2, shuffle=True)
    other.drop_last = True
    return kit.pair(kit.TrainStream(main), kit.TrainStream(other))


def train(task, data, **kw):
    return Trainer(task, torch.optim.SGD(task.model.parameters(), lr=0.01), data, **kw)


def test_other_cycles_through_its_epochs_while_main_sets_them(splits):
    task = Task()
    train(task, paired(splits), epochs=4).train()
    assert len(task.pairs) == 4 * 3  # 12 samples, batches of 4
    others = [k for _, o in task.pairs for k in o]
    assert all(len(o) == 2 for _, o in task.pairs)
    # 7 samples in batches of 2 (drop_last): 3 batches an epoch, each epoch a new permutation of 6 of them
    epochs = [others[i:i + 6] for i in range(0, 24, 6)]
    assert all(len(set(e)) == 6 for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1


def test_resumed_mid_epoch_draws_what_the_uninterrupted_run_drew(splits):
    full = Task()
    train(full, paired(splits), epochs=3).train()
    first, data = Task(), paired(splits)
    t = train(first, data, epochs=3, max_steps=5)
    t.train()
    state, cursor = t.state_dict(), data.state_dict()
    second, data2 = Task(), paired(splits)
    data2.load_state_dict(cursor)
    t2 = train(second, data2, epochs=3)
    t2.load_state_dict(state)
    t2.train()
    assert first.pairs + second.pairs == full.pairs


def test_other_smaller_than_one_batch_is_refused(splits):
    data = paired(splits, other_batch=8)  # 7 samples: no full batch of 8
    with pytest.raises(ConfigError, match="yields no batch of 8 samples"):
        train(Task(), data, epochs=1).train()
