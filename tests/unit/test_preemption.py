"""Preemption: a real signal mid-training -> checkpoint at a step boundary -> resume, same bytes."""

import os
import signal

import pytest
import submitit
import test_checkpoint
import torch
from test_checkpoint import EPOCHS, build, seed_all, weights_sha256

from frugalcv.slurm.preemption import Preempted, StageJob
from frugalcv.workflows.engine.checkpoint import latest_checkpoint, load_checkpoint, restore
from frugalcv.workflows.engine.control import ControlHook
from frugalcv.workflows.engine.trainer import HookBase

dataset, reference = test_checkpoint.dataset, test_checkpoint.reference  # shared module fixtures


class SendSignal(HookBase):
    """Sends ``signum`` to this process while step ``at_step + 1`` is in flight."""

    def __init__(self, at_step, signum=signal.SIGUSR2):
        self.at_step, self.signum = at_step, signum

    def before_step(self):
        if self.trainer.step == self.at_step:
            os.kill(os.getpid(), self.signum)


def train_preemptible(resume_from, dataset, ckdir, signal_at=None, signum=signal.SIGUSR2):
    """A stage function as StageJob runs it; returns the final weights' sha256."""
    seed_all(123)
    model, opt, sched, loader, trainer = build(dataset, ckdir, None, [SendSignal(signal_at, signum)] if signal_at else [])
    trainer.register_hooks([ControlHook(trainer.hooks[-1])])
    if resume_from is not None:
        restore(resume_from, trainer, model, opt, sched, loader)
    trainer.train()
    return weights_sha256(model)


@pytest.fixture
def restore_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


@pytest.mark.parametrize(("signal_at", "signum"), [(6, signal.SIGUSR2), (9, signal.SIGTERM)])
def test_signal_mid_step_checkpoints_at_boundary_and_resumes(dataset, tmp_path, reference, restore_handlers,
                                                             signal_at, signum):
    before = signal.getsignal(signum)
    with pytest.raises(Preempted) as info:
        train_preemptible(None, dataset, str(tmp_path), signal_at, signum)
    p = info.value
    # the step in flight finished, then training stopped: one checkpoint, of that boundary
    assert (p.step, p.signum) == (signal_at + 1, signum)
    assert p.url == latest_checkpoint(str(tmp_path))
    assert load_checkpoint(p.url)["trainer"]["step"] == signal_at + 1
    assert signal.getsignal(signum) is before  # handlers given back
    assert train_preemptible(p.url, dataset, str(tmp_path)) == reference


def test_stage_job_hands_signal_over_and_requeued_pickle_resumes(dataset, tmp_path, reference, restore_handlers):
    calls = []

    def previous_handler(signum, frame):  # stands in for submitit's USR2 handler
        calls.append((signum, latest_checkpoint(str(tmp_path / "ck"))))

    signal.signal(signal.SIGUSR2, previous_handler)
    job = StageJob(train_preemptible, dataset, str(tmp_path / "ck"), 3, checkpoint_dir=str(tmp_path / "ck"))
    with pytest.raises(Preempted):
        job()
    # chained only after the step-boundary checkpoint existed
    assert calls == [(signal.SIGUSR2, job.resume_from)] and job.resume_from.endswith("step-00000004.pt")

    delayed = job.checkpoint()  # what submitit dumps for the requeued job
    delayed.dump(tmp_path / "requeued.pkl")
    requeued = submitit.helpers.DelayedSubmission.load(tmp_path / "requeued.pkl")
    requeued.function.args = (dataset, str(tmp_path / "ck"))  # the requeued run is not signalled again
    assert requeued.result() == reference


def test_without_recorded_url_resumes_from_newest_checkpoint(dataset, tmp_path, reference, restore_handlers):
    ck = str(tmp_path / "ck")
    with pytest.raises(Preempted):
        train_preemptible(None, dataset, ck, 11)
    # an outside `scontrol requeue` replays the original pickle: resume_from is None
    assert StageJob(train_preemptible, dataset, ck, checkpoint_dir=ck)() == reference
    assert torch.load(latest_checkpoint(ck), weights_only=True)["trainer"]["step"] == EPOCHS * 5
