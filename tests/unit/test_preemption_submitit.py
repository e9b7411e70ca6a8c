"""StageJob under submitit's real signal handling (LocalExecutor): USR2 mid-training ->
step-boundary checkpoint -> submitit's checkpoint()+requeue -> resumed job, same final bytes."""

import os
import signal
import time
from pathlib import Path

import pytest
import submitit
import test_checkpoint
from test_checkpoint import build, seed_all, weights_sha256

from frugalcv.slurm.preemption import StageJob
from frugalcv.workflows.engine.checkpoint import restore
from frugalcv.workflows.engine.control import ControlHook
from frugalcv.workflows.engine.trainer import HookBase

pytestmark = pytest.mark.integration
dataset, reference = test_checkpoint.dataset, test_checkpoint.reference  # shared module fixtures


class Pace(HookBase):
    """Marks that training is under way (step 2) and slows steps so a signal lands mid-run."""

    def __init__(self, marker):
        self.marker = marker

    def after_step(self):
        if self.trainer.step == 2:
            Path(self.marker).write_text(str(os.getpid()))
        time.sleep(0.3)


def stage(resume_from, dataset, ckdir, marker):
    seed_all(123)
    model, opt, sched, loader, trainer = build(dataset, ckdir, None, [Pace(marker)])
    trainer.register_hooks([ControlHook(trainer.hooks[-1])])
    if resume_from is not None:
        restore(resume_from, trainer, model, opt, sched, loader)
    trainer.train()
    return {"sha256": weights_sha256(model), "resumed_from": resume_from}


def test_usr2_under_submitit_requeues_and_resumes(dataset, reference, tmp_path, monkeypatch):
    here = Path(__file__).parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")]))
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=60)  # a long limit: the USR2 counts as a preemption
    marker, ckdir = tmp_path / "started", str(tmp_path / "ck")
    job = executor.submit(StageJob(stage, dataset, ckdir, str(marker), checkpoint_dir=ckdir))
    deadline = time.time() + 300
    while not marker.exists():
        assert time.time() < deadline and not job.done(), job.stderr()
        time.sleep(0.1)
    time.sleep(0.2)  # the file is written
    # as Slurm's --signal=USR2 does, signal the task itself (job._interrupt() signals only the
    # local controller, which does not forward USR2)
    os.kill(int(marker.read_text()), signal.SIGUSR2)
    result = job.result()
    assert result["resumed_from"] is not None, "the job was not requeued from its checkpoint"
    assert int(Path(result["resumed_from"]).stem.split("-")[1]) >= 2
    assert result["sha256"] == reference
