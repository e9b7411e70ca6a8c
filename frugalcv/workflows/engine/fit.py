"""A stage's training run: place and distribute its modules, then the one Trainer with the standard hooks.

    resnet = kit.place(ctx, build_model(...))
    model, update = kit.distribute(ctx, resnet, torch.optim.SGD(resnet.parameters(), ...))
    trainer = kit.fit(ctx, Task(model), update, kit.stream(ctx, url, ...), epochs=10, state=resnet)

``distribute`` wraps in DDP (``device_ids`` on CUDA) when there are several ranks, or builds a
DeepSpeed engine (``engine: deepspeed``), and returns the Trainer's update for either.
``fit`` adds, after the stage's own hooks: logging (printed on rank 0), MLflow metrics (rank 0),
resume from the newest checkpoint, the checkpoint writer and the control hook (cadence by steps
and wall time, stop requests, preemption signals). The same code runs under every executor.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from frugalcv.errors import ConfigError
from frugalcv.workflows.engine.checkpoint import CheckpointHook, ResumeHook
from frugalcv.workflows.engine.control import ControlHook
from frugalcv.workflows.engine.device import grad_scaler, place
from frugalcv.workflows.engine.progress import ProgressHook, interactive
from frugalcv.workflows.engine.trainer import HookBase, LoggingHook, OptimizerStep, Trainer


def place_module(ctx, module: nn.Module) -> nn.Module:
    """``module`` on the rank's device (NHWC with ``channels_last``); once per module."""
    return place(module, ctx.device, channels_last=ctx.channels_last)


def _ddp(ctx, module: nn.Module, find_unused: bool) -> nn.Module:
    if ctx.world_size == 1:
        return module
    from frugalcv.workflows.engine.engines import wrap_ddp

    return wrap_ddp(module, ctx.device, find_unused_parameters=find_unused)


def distribute(ctx, modules: nn.Module | Mapping[str, nn.Module], optimizer: torch.optim.Optimizer, *,
               find_unused: bool | Mapping[str, bool] = False, grad_clip: float | None = None,
               batch_size: int | None = None):
    """(the wrapped module(s), the Trainer's update) for this stage's engine.

    ``modules``: the trainable module, or ``{name: module}`` for several trained with one optimizer
    (each wrapped in its own DDP; DeepSpeed takes one module). Frozen modules are not passed here.
    """
    several = isinstance(modules, Mapping)
    named = dict(modules) if several else {"module": modules}
    unused = find_unused if isinstance(find_unused, Mapping) else dict.fromkeys(named, bool(find_unused))
    if ctx.engine == "deepspeed":
        if several and len(named) > 1:
            raise ConfigError(f"stages.{ctx.stage}.engine=deepspeed: this stage trains {len(named)} modules "
                              f"({', '.join(named)}) with one optimizer; DeepSpeed takes one. Use engine: ddp")
        (name, module), = named.items()
        micro = max(1, (batch_size or ctx.world_size) // ctx.world_size)
        engine = _deepspeed(ctx, module, optimizer, grad_clip, micro)
        from frugalcv.workflows.engine.engines import DeepSpeedStep

        return ({name: engine} if several else engine), DeepSpeedStep(engine)
    wrapped = {name: _ddp(ctx, module, unused.get(name, False)) for name, module in named.items()}
    update = OptimizerStep(optimizer, scaler=grad_scaler(ctx.device, ctx.precision), grad_clip=grad_clip)
    return (wrapped if several else wrapped["module"]), update


def _deepspeed(ctx, module: nn.Module, optimizer, grad_clip, micro: int):
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from frugalcv.slurm.distributed import init_distributed
    from frugalcv.workflows.engine.engines import build_deepspeed

    ds = ctx.deepspeed or {}
    zero = int(ds.get("zero_stage", 0))
    if zero == 3 or ds.get("offload_param"):
        raise ConfigError(f"stages.{ctx.stage}.deepspeed.zero_stage=3: stage outputs are full state dicts "
                          "saved from every rank's module; use zero_stage 0, 1 or 2")
    init_distributed()  # DeepSpeed needs a process group; alone this is a world of one
    extra = dict(ds.get("config") or {})
    if ds.get("offload_optimizer"):
        extra.setdefault("zero_optimization", {"stage": zero, "offload_optimizer": {"device": "cpu"}})
    return build_deepspeed(module, optimizer, zero, micro_batch_size=micro, grad_clip=grad_clip,
                           bf16=ctx.precision == "bf16", fp16=ctx.precision == "fp16", extra=extra or None)


class MetricsHook(HookBase):
    """Rank 0 logs the step's scalars to the stage's MLflow run every ``every`` steps."""

    def __init__(self, ctx, every: int = 10):
        self.ctx, self.every = ctx, every

    def after_step(self) -> None:
        if self.ctx.is_main and self.trainer.step % self.every == 0:
            self.ctx.tracker.log_metrics(self.trainer.last_output, step=self.trainer.step)


def fit(ctx, task, update, data, *, state: nn.Module, epochs: int | None = None, max_steps: int | None = None,
        hooks: Iterable[HookBase] = (), log_every: int = 20, log_prefix: str = "") -> Trainer:
    """Train ``task`` with ``update`` over ``data`` (``kit.stream``) and the standard hooks; returns the Trainer.

    ``state`` is what the resumable checkpoint holds (unwrapped; a ModuleDict for several nets).
    A smoke run (``ctx.smoke_steps``) stops after that many steps. ``trainer.logger.history``
    holds the logged means.
    """
    if ctx.smoke_steps:
        max_steps = ctx.smoke_steps if max_steps is None else min(max_steps, ctx.smoke_steps)
    engine = getattr(update, "engine", None)
    loader = data if hasattr(data, "state_dict") else None
    saver = CheckpointHook(ctx.checkpoint_dir, state, keep=2, loader=loader, save_at_end=False, engine=engine)
    control = ControlHook(saver, should_stop=ctx.should_stop, every_steps=ctx.checkpoint_every,
                          every_seconds=ctx.checkpoint_every_s)
    logger = LoggingHook(log_every, prefix=log_prefix, printer=ctx.printer if ctx.is_main else None)
    resume = ResumeHook(ctx.checkpoint_dir, state, loader=loader, engine=engine,
                        printer=ctx.printer if ctx.is_main else None)
    all_hooks = [*hooks, logger, MetricsHook(ctx), resume, saver, control]
    if ctx.is_main and interactive():
        all_hooks.append(ProgressHook(_total_steps(data, epochs, max_steps), _global_batch(ctx, data), log_prefix))
    # DeepSpeed casts itself (its bf16/fp16 config); autocast is for the plain update
    precision = "fp32" if engine is not None else ctx.precision
    trainer = Trainer(task, update, data, all_hooks, epochs=epochs, max_steps=max_steps, device=ctx.device,
                      precision=precision, channels_last=ctx.channels_last)
    trainer.logger = logger
    if ctx.is_main:
        backend = "deepspeed" if engine is not None else ("ddp" if ctx.world_size > 1 else "single process")
        ctx.printer(f"{log_prefix}training on {ctx.device} ({ctx.world_size} rank(s), {backend}, {precision}, "
                    f"{getattr(getattr(data, 'loader', None), 'num_workers', 0)} loader workers, "
                    f"{ctx.cpus} CPU(s) a rank)")
    try:
        trainer.train()
    finally:
        close = getattr(data, "close", None)
        if close is not None:
            close()  # the loader's workers end with the training, not whenever the Trainer is collected
    return trainer


def _total_steps(data, epochs: int | None, max_steps: int | None) -> int | None:
    per_epoch = getattr(data, "steps_per_epoch", None)
    total = per_epoch * epochs if per_epoch is not None and epochs is not None else None
    if max_steps is not None:
        total = max_steps if total is None else min(total, max_steps)
    return total


def _global_batch(ctx, data) -> int | None:
    loader = getattr(data, "loader", None)
    batch = getattr(ctx.params, "batch_size", None) if loader is None else loader.batch_size * ctx.world_size
    return int(batch) if isinstance(batch, int) else None


def seed(ctx, offset: int = 0, *, per_rank: bool) -> None:
    """Seed torch/numpy/python from the stage's ``seed`` param: the same on every rank (initial
    weights) or distinct per rank (policy sampling, drop-path)."""
    import random

    import numpy as np

    base = int(ctx.param("seed", 0)) + offset
    value = base * 1_000_003 + (ctx.rank + 1 if per_rank else 0)
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    random.seed(value)


def unwrap(module: Any) -> Any:
    """The module inside a DDP wrapper or a DeepSpeed engine."""
    return getattr(module, "module", module)


def training_curves(ctx, trainer: Trainer | None, name: str = "training_curves.png") -> list[str]:
    """Rank 0: the logged means of ``trainer`` as ``<output_dir>/<name>``; a list for
    ``StageResult.artifacts`` (empty when nothing was trained or logged)."""
    from frugalcv.workflows.engine.curves import plot_training_curves

    if trainer is None or not ctx.is_main:
        return []
    path = plot_training_curves(trainer.logger.history, ctx.path(name), f"{ctx.stage} ({ctx.pipeline})")
    return [path] if path else []
