"""One training loop for every stage; side concerns are hooks with state (detectron2 style).

A task's ``training_step(batch)`` returns ``{"loss": ..., **scalars}`` (timm style); the trainer
owns the counters, moves each batch to its device, runs the step under the precision's autocast
and hands the loss to its update (``OptimizerStep``: backward + optimizer, scaled for fp16; or a
DeepSpeed engine's backward/step, ``engine.engines.DeepSpeedStep``). Hooks (LR schedule,
logging, evaluation, checkpoints, preemption, MLflow) are restored with
``Trainer.load_state_dict`` on resume.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch

from frugalcv.errors import ConfigError


class Task(Protocol):
    def training_step(self, batch: Any) -> dict[str, Any]: ...


class OptimizerStep:
    """The update of a plain (or DDP) module: zero the gradients, backward, optional clip, step.

    With a ``GradScaler`` (fp16) the loss is scaled and the step skipped on overflow."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, scaler=None, grad_clip: float | None = None):
        self.optimizer, self.scaler, self.grad_clip = optimizer, scaler, grad_clip

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def __call__(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                self._clip()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return
        loss.backward()
        if self.grad_clip is not None:
            self._clip()
        self.optimizer.step()

    def _clip(self) -> None:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, self.grad_clip)

    def state_dict(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict()}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


class HookBase:
    """Override any callback; ``self.trainer`` is set on registration. ``before_epoch`` also
    runs when a run resumes mid-epoch, so hooks that derive state from the epoch stay right."""

    trainer: Trainer

    def before_train(self) -> None: ...
    def after_train(self) -> None: ...
    def before_epoch(self) -> None: ...
    def after_epoch(self) -> None: ...
    def before_step(self) -> None: ...
    def after_step(self) -> None: ...
    def state_dict(self) -> dict:
        return {}
    def load_state_dict(self, state: dict) -> None: ...


def _scalars(output: dict[str, Any]) -> dict[str, float]:
    """The loggable scalars of a step output: numbers (not bools) and one-element tensors."""
    out = {}
    for name, value in output.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[name] = float(value.detach())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


class Trainer:
    """Runs ``task.training_step`` over ``data`` for ``max_steps`` and/or ``epochs`` (first reached).

    ``data`` is an iterable of batches re-iterated every epoch, or a callable ``epoch ->
    iterable`` (so a reader can reshuffle per epoch). ``step`` counts finished optimizer steps,
    ``epoch`` finished epochs. Resumed mid-epoch, the trainer skips the consumed batches of plain
    data; data with its own ``state_dict`` (a sharded reader's cursor) resumes itself.
    """

    def __init__(self, task: Task, optimizer: torch.optim.Optimizer | OptimizerStep | Any,
                 data: Iterable | Callable[[int], Iterable], hooks: Iterable[HookBase] = (), *,
                 max_steps: int | None = None, epochs: int | None = None, device: torch.device | str | None = None,
                 precision: str = "fp32", channels_last: bool = False):
        if max_steps is None and epochs is None:
            raise ConfigError("Trainer needs max_steps or epochs (or both; it stops at the first reached)")
        for name, value in (("max_steps", max_steps), ("epochs", epochs)):
            if value is not None and value < 0:
                raise ConfigError(f"Trainer {name}={value}: must be >= 0")
        from frugalcv.workflows.engine.device import check_precision

        check_precision(precision)
        #: the update: anything callable on the loss with param_groups and a state_dict
        self.update = OptimizerStep(optimizer) if isinstance(optimizer, torch.optim.Optimizer) else optimizer
        self.optimizer = getattr(self.update, "optimizer", self.update)
        self.task, self.data = task, data
        self.device = None if device is None else torch.device(device)
        self.precision, self.channels_last = precision, channels_last
        self.max_steps, self.epochs = max_steps, epochs
        self.step = self.epoch = self.step_in_epoch = 0
        self.last_output: dict[str, float] = {}  # the last step's scalars; hooks may add to it
        self.failed = False  # the loop raised; after_train hooks may skip work
        self.hooks: list[HookBase] = []
        self.register_hooks(hooks)

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        for hook in hooks:
            hook.trainer = self
            self.hooks.append(hook)

    def done(self) -> bool:
        return (self.max_steps is not None and self.step >= self.max_steps) or (
            self.epochs is not None and self.epoch >= self.epochs)

    def train(self) -> Trainer:
        self._call("before_train")
        try:
            while not self.done():
                self._run_epoch()
        except BaseException:
            self.failed = True
            raise
        finally:
            self._call("after_train")
        return self

    def _run_epoch(self) -> None:
        self._call("before_epoch")
        if hasattr(self.data, "set_epoch"):
            self.data.set_epoch(self.epoch)  # a sharded loader keeps its cursor within the same epoch
        batches = self.data(self.epoch) if callable(self.data) else self.data
        if self.step_in_epoch and not hasattr(self.data, "state_dict"):
            batches = itertools.islice(batches, self.step_in_epoch, None)  # resumed mid-epoch
        # with a len(), the epoch ends on its last batch even where max_steps stops the loop;
        # a resumed loader's len() counts only the batches left, so count this call's batches
        length = len(self.data) if hasattr(self.data, "__len__") else None
        if length is not None and not hasattr(self.data, "state_dict"):
            length -= self.step_in_epoch
        finished = True
        try:
            for taken, batch in enumerate(batches, start=1):
                self._call("before_step")
                self.run_step(batch)
                self.step += 1
                self.step_in_epoch += 1
                self._call("after_step")
                if length is not None and taken >= length:
                    break
                if self.max_steps is not None and self.step >= self.max_steps:
                    finished = False
                    break
        finally:
            # an epoch's generator left early (an exception, Preempted, max_steps) ends now, and its
            # loader workers with it, rather than whenever a traceback that holds it lets go
            close = getattr(batches, "close", None) if batches is not self.data else None
            if close is not None:
                close()
        if finished:
            if self.step_in_epoch == 0:
                raise ConfigError("Trainer: data yielded no batches for an epoch")
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
            self._call("after_epoch")

    def run_step(self, batch: Any) -> None:
        from frugalcv.workflows.engine.device import autocast, to_device

        if self.device is not None:
            batch = to_device(batch, self.device, channels_last=self.channels_last)
        with autocast(self.device or "cpu", self.precision):
            output = self.task.training_step(batch)
        loss = output["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss.detach())} at step {self.step}, epoch {self.epoch}")
        self.update(loss.float())
        self.last_output = _scalars(output)

    def _call(self, event: str) -> None:
        for hook in self.hooks:
            getattr(hook, event)()

    def state_dict(self) -> dict:
        """Counters, optimizer and hook states; the task's modules are checkpointed by their owner."""
        return {"step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                **self._update_state(),
                "hooks": {f"{i}:{type(h).__name__}": h.state_dict() for i, h in enumerate(self.hooks)}}

    def _update_state(self) -> dict:
        if isinstance(self.update, OptimizerStep):
            return self.update.state_dict()  # {"optimizer", "scaler"?}
        return {"update": self.update.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.epoch, self.step_in_epoch = state["step"], state["epoch"], state["step_in_epoch"]
        if isinstance(self.update, OptimizerStep):
            self.update.load_state_dict(state)
        else:
            self.update.load_state_dict(state.get("update", {}))
        for i, hook in enumerate(self.hooks):
            if (key := f"{i}:{type(hook).__name__}") in state["hooks"]:
                hook.load_state_dict(state["hooks"][key])


class LRScheduleHook(HookBase):
    """Steps a ``torch.optim.lr_scheduler`` after every optimizer step; logs ``lr``."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler):
        self.scheduler = scheduler

    def after_step(self) -> None:
        self.trainer.last_output["lr"] = self.scheduler.get_last_lr()[0]  # the lr this step used
        self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


def _fmt(values: dict) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in values.items() if isinstance(v, (int, float)))


class LoggingHook(HookBase):
    """Averages the step scalars over ``period`` steps; prints them and/or hands them to ``sink``
    (e.g. MLflow). ``history`` keeps one ``{"step", "epoch", **means}`` row per window."""

    def __init__(self, period: int = 20, *, prefix: str = "", printer: Callable[[str], None] | None = print,
                 sink: Callable[[int, dict[str, float]], None] | None = None):
        self.period, self.prefix, self.printer, self.sink = period, prefix, printer, sink
        self.history: list[dict[str, float]] = []
        self._sums: dict[str, float] = {}
        self._count = 0

    def after_step(self) -> None:
        for name, value in self.trainer.last_output.items():
            self._sums[name] = self._sums.get(name, 0.0) + value
        self._count += 1
        if self.trainer.step % self.period == 0:
            self.flush()

    def after_train(self) -> None:
        self.flush()

    def flush(self) -> None:
        if not self._count:
            return
        means = {k: v / self._count for k, v in self._sums.items()}
        self.history.append({"step": self.trainer.step, "epoch": self.trainer.epoch, **means})
        if self.sink is not None:
            self.sink(self.trainer.step, means)
        if self.printer is not None:
            self.printer(f"{self.prefix}step {self.trainer.step} epoch {self.trainer.epoch} {_fmt(means)}")
        self._sums, self._count = {}, 0

    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state["history"])


class EvalHook(HookBase):
    """Calls ``eval_fn() -> dict`` every ``period`` epochs (or steps) and once after training;
    results go to ``history`` and ``latest``. ``eval_fn`` must restore any train/eval modes."""

    def __init__(self, eval_fn: Callable[[], dict[str, float]], *, period: int = 1, per: str = "epoch",
                 printer: Callable[[str], None] | None = print, prefix: str = "eval"):
        if per not in ("step", "epoch"):
            raise ConfigError(f"EvalHook per={per!r}: use 'step' or 'epoch'")
        self.eval_fn, self.period, self.per = eval_fn, period, per
        self.printer, self.prefix = printer, prefix
        self.history: list[dict[str, float]] = []
        self.latest: dict[str, float] = {}
        self._last_step = -1

    def _run(self) -> None:
        if self._last_step == self.trainer.step:  # e.g. after_train right after an epoch's eval
            return
        self._last_step = self.trainer.step
        self.latest = dict(self.eval_fn())
        self.history.append({"step": self.trainer.step, "epoch": self.trainer.epoch, **self.latest})
        if self.printer is not None:
            self.printer(f"{self.prefix} step {self.trainer.step} epoch {self.trainer.epoch} {_fmt(self.latest)}")

    def after_step(self) -> None:
        if self.per == "step" and self.trainer.step % self.period == 0:
            self._run()

    def after_epoch(self) -> None:
        if self.per == "epoch" and self.trainer.epoch % self.period == 0:
            self._run()

    def after_train(self) -> None:
        if not self.trainer.failed:
            self._run()

    def state_dict(self) -> dict:
        return {"history": list(self.history), "latest": dict(self.latest), "last_step": self._last_step}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.latest, self._last_step = list(state["history"]), dict(state["latest"]), state["last_step"]
