import math

import pytest
import torch

from frugalcv.errors import ConfigError
from frugalcv.workflows.blockdrop.pretrain import cosine_schedule
from frugalcv.workflows.engine.trainer import (
    EvalHook,
    HookBase,
    LoggingHook,
    LRScheduleHook,
    Trainer,
)


class LinearTask:
    """Least squares y = 3x; deterministic given the batches."""

    def __init__(self):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(1, 1)

    def training_step(self, batch):
        x, y = batch
        loss = ((self.model(x) - y) ** 2).mean()
        return {"loss": loss, "weight": self.model.weight, "note": "ignored", "flag": True}


def batches(n=4):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        x = torch.randn(8, 1, generator=g)
        out.append((x, 3 * x))
    return out


class Recorder(HookBase):
    def __init__(self):
        self.events = []

    def before_train(self):
        self.events.append("before_train")

    def after_train(self):
        self.events.append("after_train")

    def before_epoch(self):
        self.events.append(f"before_epoch{self.trainer.epoch}")

    def after_epoch(self):
        self.events.append(f"after_epoch{self.trainer.epoch}")

    def before_step(self):
        self.events.append(f"before_step{self.trainer.step}")

    def after_step(self):
        self.events.append(f"after_step{self.trainer.step}")


def make(hooks=(), **kw):
    task = LinearTask()
    opt = torch.optim.SGD(task.model.parameters(), lr=0.1)
    return task, Trainer(task, opt, batches(), hooks, **kw)


def test_hook_order_and_counters_with_epochs():
    rec = Recorder()
    _, trainer = make([rec], epochs=2)
    trainer.train()
    assert (trainer.step, trainer.epoch, trainer.step_in_epoch) == (8, 2, 0)
    assert rec.events[:4] == ["before_train", "before_epoch0", "before_step0", "after_step1"]
    assert rec.events[-3:] == ["after_step8", "after_epoch2", "after_train"]
    assert rec.events.count("before_epoch1") == 1


def test_max_steps_stops_mid_epoch_and_loss_decreases():
    logger = LoggingHook(period=1, printer=None)
    _, trainer = make([logger], max_steps=6, epochs=100)
    trainer.train()
    assert (trainer.step, trainer.epoch, trainer.step_in_epoch) == (6, 1, 2)
    losses = [row["loss"] for row in logger.history]
    assert len(losses) == 6 and losses[-1] < losses[0]
    # only numbers and one-element tensors are logged
    assert set(logger.history[0]) == {"step", "epoch", "loss", "weight"}


def test_callable_data_gets_the_epoch():
    seen = []

    def data(epoch):
        seen.append(epoch)
        return batches(2)

    task = LinearTask()
    Trainer(task, torch.optim.SGD(task.model.parameters(), lr=0.1), data, epochs=3).train()
    assert seen == [0, 1, 2]


def test_logging_hook_averages_over_period():
    printed = []
    logger = LoggingHook(period=2, printer=printed.append, prefix="t ")
    _, trainer = make([logger], max_steps=5)
    trainer.train()
    assert [row["step"] for row in logger.history] == [2, 4, 5]  # the last partial window is flushed
    assert printed[0].startswith("t step 2 epoch 0 loss=")


def test_eval_hook_periods_and_no_duplicate_final_eval():
    calls = []
    evaluator = EvalHook(lambda: calls.append(1) or {"acc": float(len(calls))}, period=1, printer=None)
    _, trainer = make([evaluator], epochs=2)
    trainer.train()
    assert len(calls) == 2  # after epoch 1, after epoch 2; after_train sees the same step
    assert evaluator.latest == {"acc": 2.0}
    assert [h["epoch"] for h in evaluator.history] == [1, 2]


def test_lr_schedule_is_logged_and_stepped():
    task = LinearTask()
    opt = torch.optim.SGD(task.model.parameters(), lr=1.0)
    logger = LoggingHook(period=1, printer=None)
    sched = cosine_schedule(opt, total_steps=4, warmup_steps=2)
    Trainer(task, opt, batches(), [LRScheduleHook(sched), logger], max_steps=4).train()
    lrs = [row["lr"] for row in logger.history]
    # warm-up 1/2, 2/2, then cosine over the remaining 2 steps: progress 0, 1/2
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi * 0.5))])


def test_resume_reproduces_an_uninterrupted_run():
    def run(steps, state=None):
        task = LinearTask()
        opt = torch.optim.Adam(task.model.parameters(), lr=0.05)
        sched = cosine_schedule(opt, total_steps=8)
        logger = LoggingHook(period=1, printer=None)
        trainer = Trainer(task, opt, batches(), [LRScheduleHook(sched), logger], max_steps=steps)
        if state is not None:
            task.model.load_state_dict(state["model"])
            trainer.load_state_dict(state["trainer"])
        trainer.train()
        return task, trainer, logger

    full_task, _, full_log = run(8)
    half_task, half_trainer, _ = run(3)
    state = {"model": half_task.model.state_dict(), "trainer": half_trainer.state_dict()}
    resumed_task, resumed, resumed_log = run(8, state)
    assert (resumed.step, resumed.epoch) == (8, 2)
    assert resumed_log.history == full_log.history  # hook state restored, same losses after resume
    for a, b in zip(resumed_task.model.parameters(), full_task.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_nonfinite_loss_raises_and_skips_final_eval():
    class Bad(LinearTask):
        def training_step(self, batch):
            return {"loss": torch.tensor(float("nan"), requires_grad=True)}

    calls = []
    task = Bad()
    trainer = Trainer(task, torch.optim.SGD(task.model.parameters(), lr=0.1), batches(),
                      [EvalHook(lambda: calls.append(1) or {}, printer=None)], max_steps=2)
    with pytest.raises(FloatingPointError, match="step 0"):
        trainer.train()
    assert trainer.failed and calls == []


def test_config_errors():
    task = LinearTask()
    opt = torch.optim.SGD(task.model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="max_steps or epochs"):
        Trainer(task, opt, batches())
    with pytest.raises(ConfigError, match="no batches"):
        Trainer(task, opt, [], epochs=1).train()
    with pytest.raises(ConfigError, match="'step' or 'epoch'"):
        EvalHook(dict, per="batch")
