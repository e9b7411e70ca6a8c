"""The one hook that decides, after every step and on every rank alike, whether to checkpoint or stop.

Inputs to the decision: a signal (Slurm's USR2 warning before preemption or the time limit,
SIGTERM), a stop request (``should_stop()``, e.g. a STOP file), and the checkpoint cadence
(every N steps and/or every S seconds of training). A signal handler only sets a flag; the flags
of all ranks are combined with one small ``all_reduce(MAX)`` per step on the backend's device,
so every rank takes the same branch at the same step boundary:

* a signal: checkpoint, then raise ``Preempted`` (``StageJob`` hands it to submitit: requeue);
* a stop request: checkpoint, then raise ``StageInterrupted`` (``frugalcv resume`` continues);
* the cadence is due: checkpoint and go on.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from frugalcv.slurm.preemption import Preempted
from frugalcv.workflows.engine.checkpoint import rank_world
from frugalcv.workflows.engine.device import collective_device
from frugalcv.workflows.engine.trainer import HookBase
from frugalcv.workflows.pipeline.stages import StageInterrupted

log = logging.getLogger(__name__)

DEFAULT_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


class ControlHook(HookBase):
    """Checkpoint cadence, stop requests and preemption signals, decided collectively each step.

    Register it after the checkpoint hook it uses (``checkpointer.save()`` is collective).
    ``every_steps`` / ``every_seconds``: 0 turns that cadence off.
    """

    runs_after_checkpoint = True

    def __init__(self, checkpointer, *, should_stop: Callable[[], bool] | None = None, every_steps: int = 0,
                 every_seconds: float = 0.0, signals: tuple[int, ...] = DEFAULT_SIGNALS):
        self.checkpointer, self.should_stop = checkpointer, should_stop
        self.every_steps, self.every_seconds = int(every_steps or 0), float(every_seconds or 0.0)
        self.signals = tuple(signals)
        self.received: int | None = None
        self.previous: dict[int, Any] = {}
        self._since = time.monotonic()

    def _on_signal(self, signum: int, frame) -> None:
        # only a flag: the step in progress finishes; the first signal is the one acted on
        if self.received is None:
            self.received = signum

    def before_train(self) -> None:
        self._since = time.monotonic()
        if threading.current_thread() is not threading.main_thread():
            log.warning("ControlHook: not in the main thread, signals cannot be caught here")
            return
        for sig in self.signals:
            self.previous[sig] = signal.signal(sig, self._on_signal)

    def after_train(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self.previous = {}

    def _flags(self) -> list[float]:
        """[one per signal..., stop requested, time cadence due], the maximum over all ranks."""
        stop = bool(self.should_stop()) if self.should_stop is not None else False
        due = self.every_seconds > 0 and time.monotonic() - self._since >= self.every_seconds
        local = [float(self.received == s) for s in self.signals] + [float(stop), float(due)]
        if rank_world()[1] == 1:
            return local
        flags = torch.tensor(local, device=collective_device())
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return flags.tolist()

    def agreed_signal(self) -> int | None:
        """The signal this job stops for, the same on every rank (USR2 wins: it asks to requeue)."""
        hit = [s for s, f in zip(self.signals, self._flags(), strict=False) if f > 0]
        return hit[0] if hit else None

    def _save(self) -> str:
        step = self.trainer.step
        if self.checkpointer.last_step == step and self.checkpointer.last_url:
            return self.checkpointer.last_url
        url = self.checkpointer.save()
        self._since = time.monotonic()
        return url

    def after_step(self) -> None:
        flags = self._flags()
        n = len(self.signals)
        hit = [s for s, f in zip(self.signals, flags[:n], strict=True) if f > 0]
        step = self.trainer.step
        if hit:
            url = self._save()
            log.warning("preempted by %s: checkpoint of step %d at %s", signal.Signals(hit[0]).name, step, url)
            raise Preempted(url, step, hit[0], self.previous.get(hit[0]))
        if flags[n] > 0:
            raise StageInterrupted(f"stopped on request at step {step}; checkpoint {self._save()}")
        if flags[n + 1] > 0 or (self.every_steps and step % self.every_steps == 0):
            self._save()
