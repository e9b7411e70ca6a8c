"""The per-stage progress bar: only on a terminal, over all of the run's steps, with loss and samples/s."""

import io

import torch

from frugalcv.workflows.engine import progress
from frugalcv.workflows.engine.progress import ProgressHook
from frugalcv.workflows.engine.trainer import OptimizerStep, Trainer


class _Task:
    def __init__(self, model):
        self.model = model

    def training_step(self, batch):
        x, y = batch
        return {"loss": torch.nn.functional.mse_loss(self.model(x), y)}


def test_the_bar_counts_every_step_and_shows_loss_and_throughput(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", err)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    batches = [(torch.randn(4, 3), torch.randn(4, 1)) for _ in range(5)]
    hook = ProgressHook(total=10, batch_size=4, desc="pretrain ", mininterval=0)
    trainer = Trainer(_Task(model), OptimizerStep(torch.optim.SGD(model.parameters(), lr=0.1)), batches, [hook],
                      epochs=2)
    trainer.train()
    text = err.getvalue()
    assert "pretrain" in text and "10/10" in text and "loss=" in text and "samples/s=" in text
    assert hook.bar is None  # closed at the end


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr(progress.sys, "stderr", io.StringIO())
    assert not progress.interactive()
