"""Preemption: a signal only sets a flag; at the next step boundary all ranks agree, write
one checkpoint and stop with ``Preempted`` (``workflows.engine.control.ControlHook``);
``StageJob`` then lets submitit requeue it.

Slurm warns a job with SIGUSR2 (``--signal=USR2@N``, which submitit asks for) and stops it
with SIGTERM. submitit's own USR2 handler checkpoints and requeues *immediately*, in the
middle of a step; ``ControlHook`` replaces it while training and hands the signal to it
only after the step-boundary checkpoint (``hand_over``), so submitit still dumps the
resumable pickle (``StageJob.checkpoint``) and runs ``scontrol requeue``.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import submitit


class Preempted(Exception):  # noqa: N818  (a signal to the caller, not an error)
    """Training stopped at a step boundary after writing ``url``; requeue and resume from it."""

    def __init__(self, url: str, step: int, signum: int, previous_handler: Any = None):
        super().__init__(f"preempted by {signal.Signals(signum).name} at step {step}; checkpoint {url}")
        self.url, self.step, self.signum, self.previous_handler = url, step, signum, previous_handler


def _rank() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    # run_spec has destroyed the process group by the time StageJob sees Preempted
    return int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0")))


def _submitit_handler(handler: Any):
    owner = getattr(handler, "__self__", None)
    return owner if isinstance(owner, submitit.core.job_environment.SignalHandler) else None


def hand_over(p: Preempted) -> None:
    """Give the signal to whoever handled it before the hook (after the checkpoint is safe).

    Under submitit: USR2 -> checkpoint the job (``StageJob.checkpoint``), requeue and exit on
    rank 0; SIGTERM -> dump the resumable pickle and exit (Slurm decides about a requeue).
    Other ranks return. Any other Python handler is called; default/ignore do nothing.
    """
    owner = _submitit_handler(p.previous_handler)
    if owner is not None:
        if p.signum == owner.env._usr_sig():
            owner.checkpoint_and_try_requeue(p.signum)
        else:
            owner.checkpoint_and_exit(p.signum)
    elif callable(p.previous_handler):
        p.previous_handler(p.signum, None)


class StageJob(submitit.helpers.Checkpointable):
    """A submitit job that runs ``fn(resume_from, *args, **kwargs)`` and survives preemption.

    ``fn`` trains with a ``PreemptionHook`` and resumes from ``resume_from`` (a checkpoint URL
    or None). On ``Preempted`` the job records the URL and hands the signal to submitit,
    which calls ``checkpoint()``: the requeued job is this object, resuming from that URL.
    Without a recorded URL (an outside ``scontrol requeue`` replays the first pickle) it
    resumes from the newest checkpoint in ``checkpoint_dir``.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, checkpoint_dir: str | None = None, **kwargs: Any):
        self.fn, self.args, self.kwargs, self.checkpoint_dir = fn, args, kwargs, checkpoint_dir
        self.resume_from: str | None = None
        self.requeues = 0

    def __call__(self) -> Any:
        resume = self.resume_from
        if resume is None and self.checkpoint_dir is not None:
            from frugalcv.workflows.engine.checkpoint import latest_checkpoint

            resume = latest_checkpoint(self.checkpoint_dir)
        try:
            return self.fn(resume, *self.args, **self.kwargs)
        except Preempted as p:
            self.resume_from = p.url
            hand_over(p)  # rank 0 under submitit does not come back (requeued, exits)
            if _submitit_handler(p.previous_handler) is not None and _rank() != 0:
                sys.exit(-1)  # like submitit's own exit: no result pickle for a requeued task
            raise

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        self.requeues += 1
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
