"""Preemption: a signal only sets a flag; at the next step boundary all ranks agree, write
one checkpoint and stop with ``Preempted``; ``StageJob`` then lets submitit requeue it.

Slurm warns a job with SIGUSR2 (``--signal=USR2@N``, which submitit asks for) and stops it
with SIGTERM. submitit's own USR2 handler checkpoints and requeues *immediately*, in the
middle of a step; ``PreemptionHook`` replaces it while training and hands the signal to it
only after the step-boundary checkpoint (``hand_over``), so submitit still dumps the
resumable pickle (``StageJob.checkpoint``) and runs ``scontrol requeue``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import submitit
import torch
import torch.distributed as dist

from frugalcv.workflows.engine.checkpoint import CheckpointHook, latest_checkpoint, rank_world
from frugalcv.workflows.engine.trainer import HookBase

log = logging.getLogger(__name__)

DEFAULT_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


class Preempted(Exception):  # noqa: N818  (a signal to the caller, not an error)
    """Training stopped at a step boundary after writing ``url``; requeue and resume from it."""

    def __init__(self, url: str, step: int, signum: int, previous_handler: Any = None):
        super().__init__(f"preempted by {signal.Signals(signum).name} at step {step}; checkpoint {url}")
        self.url, self.step, self.signum, self.previous_handler = url, step, signum, previous_handler


class PreemptionHook(HookBase):
    """Stops training at a step boundary after a signal, with one checkpoint of all ranks.

    Register it after the ``CheckpointHook`` it uses. A rank that got no signal still
    stops: the flag is ``all_reduce(MAX)``-ed every step (one tiny collective per step).
    """

    runs_after_checkpoint = True

    def __init__(self, checkpointer: CheckpointHook, signals: tuple[int, ...] = DEFAULT_SIGNALS):
        self.checkpointer, self.signals = checkpointer, tuple(signals)
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def _on_signal(self, signum: int, frame) -> None:
        # only a flag: the step in progress finishes; the first signal is the one acted on
        if self.received is None:
            self.received = signum

    def before_train(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("PreemptionHook: not in the main thread, signals cannot be caught here")
            return
        for sig in self.signals:
            self.previous[sig] = signal.signal(sig, self._on_signal)

    def after_train(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self.previous = {}

    def agreed_signal(self) -> int | None:
        """The signal this job stops for, the same on every rank (USR2 wins: it asks to requeue)."""
        flags = torch.tensor([float(self.received == s) for s in self.signals])
        if rank_world()[1] > 1:
            if dist.get_backend() == "nccl":
                flags = flags.cuda()
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        hit = [s for s, f in zip(self.signals, flags.tolist(), strict=True) if f > 0]
        return hit[0] if hit else None

    def after_step(self) -> None:
        signum = self.agreed_signal()
        if signum is None:
            return
        step = self.trainer.step
        url = self.checkpointer.last_url if self.checkpointer.last_step == step else self.checkpointer.save()
        log.warning("preempted by %s: checkpoint of step %d at %s", signal.Signals(signum).name, step, url)
        raise Preempted(url, step, signum, self.previous.get(signum))


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
            resume = latest_checkpoint(self.checkpoint_dir)
        try:
            return self.fn(resume, *self.args, **self.kwargs)
        except Preempted as p:
            self.resume_from = p.url
            hand_over(p)  # rank 0 under submitit does not come back (requeued, exits)
            if _submitit_handler(p.previous_handler) is not None and rank_world()[0] != 0:
                sys.exit(-1)  # like submitit's own exit: no result pickle for a requeued task
            raise

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        self.requeues += 1
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
