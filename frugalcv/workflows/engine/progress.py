"""A progress bar per training stage on an interactive terminal: steps, loss, samples/s, ETA."""

from __future__ import annotations

import sys
import time

from frugalcv.workflows.engine.trainer import HookBase


def interactive() -> bool:
    """Whether stderr is a terminal a person watches (not a log file, a pipe or a Slurm job)."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class ProgressHook(HookBase):
    """tqdm over the run's optimizer steps (``total``: all of them, when known), showing the last
    loss and samples per second; ``batch_size`` is the global batch."""

    def __init__(self, total: int | None, batch_size: int | None, desc: str = "train", mininterval: float = 0.5):
        self.total, self.batch_size, self.desc, self.mininterval = total, batch_size, desc, mininterval
        self.bar = None
        self._start = 0.0
        self._first = 0

    def before_train(self) -> None:
        from tqdm import tqdm

        self._first = self.trainer.step  # a resumed run starts part way
        self.bar = tqdm(total=self.total, initial=self._first, desc=self.desc.strip() or "train", unit="step",
                        dynamic_ncols=True, leave=False, file=sys.stderr, mininterval=self.mininterval)
        self._start = time.perf_counter()

    def after_step(self) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        postfix = {}
        loss = self.trainer.last_output.get("loss")
        if loss is not None:
            postfix["loss"] = f"{loss:.4g}"
        elapsed = time.perf_counter() - self._start
        if self.batch_size and elapsed > 0:
            postfix["samples/s"] = f"{(self.trainer.step - self._first) * self.batch_size / elapsed:.0f}"
        self.bar.set_postfix(postfix, refresh=self.mininterval == 0)

    def after_train(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
