"""How a stage's trainable module is distributed: DDP (gloo/NCCL) or a DeepSpeed ZeRO engine.

Wrap only the trainable module (a frozen backbone stays a plain module). DeepSpeed owns the
backward pass, the optimizer and its sharded state: the Trainer gets a ``DeepSpeedStep`` as its
update and ``CheckpointHook(engine=...)`` writes DeepSpeed's checkpoint folders; the loader
cursor, trainer counters, hooks and every rank's RNG states travel in its ``client_state``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as dist

from frugalcv.errors import ConfigError
from frugalcv.workflows.engine.checkpoint import gathered_rng_states, rank_world, set_rng_state
from frugalcv.workflows.engine.trainer import Trainer

log = logging.getLogger(__name__)


def wrap_ddp(module: torch.nn.Module, device: torch.device | str | None = None, *,
             find_unused_parameters: bool = False,
             broadcast_buffers: bool = True) -> torch.nn.parallel.DistributedDataParallel:
    """DDP over the default group, the module placed on ``device`` (default: this rank's device).

    On CUDA, DDP gets ``device_ids=[index]``; on the CPU (gloo) none. ``find_unused_parameters``
    is for modules whose forward skips parameters (skipped residual blocks); it costs an extra
    graph traversal per step.
    """
    from frugalcv.workflows.engine.device import rank_device

    if not (dist.is_available() and dist.is_initialized()):
        raise ConfigError("wrap_ddp: torch.distributed is not initialised; call frugalcv.slurm.distributed.init_distributed()")
    if not any(p.requires_grad for p in module.parameters()):
        raise ConfigError(f"wrap_ddp: {type(module).__name__} has no trainable parameters; do not wrap frozen modules")
    device = torch.device(device) if device is not None else rank_device(int(os.environ.get("LOCAL_RANK", 0)))
    if dist.get_backend() == "nccl" and device.type != "cuda":
        raise ConfigError(f"wrap_ddp: the NCCL backend needs CUDA modules, got device {device}")
    module = module.to(device)
    if device.type == "cuda":
        return torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index], output_device=device.index,
            find_unused_parameters=find_unused_parameters, broadcast_buffers=broadcast_buffers)
    return torch.nn.parallel.DistributedDataParallel(
        module, find_unused_parameters=find_unused_parameters, broadcast_buffers=broadcast_buffers)


# -- DeepSpeed --------------------------------------------------------------------------------
def deepspeed_config(optimizer_config: dict, zero_stage: int, *, micro_batch_size: int, grad_accum: int = 1,
                     grad_clip: float | None = None, bf16: bool = False, extra: dict | None = None) -> dict:
    """A DeepSpeed config dict; ``optimizer_config`` is ``{"type": "AdamW", "params": {...}}``."""
    if zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"zero_stage={zero_stage}: DeepSpeed ZeRO stages are 0, 1, 2, 3")
    if "type" not in optimizer_config:
        raise ConfigError(f"optimizer_config {optimizer_config!r} needs a 'type' (e.g. 'AdamW', 'Adam', 'SGD')")
    optimizer = {"type": optimizer_config["type"], "params": dict(optimizer_config.get("params", {}))}
    if optimizer["type"].lower() in ("adam", "adamw"):
        optimizer["params"].setdefault("torch_adam", True)  # no FusedAdam compile
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "optimizer": optimizer,
        "zero_optimization": {"stage": zero_stage},
        "bf16": {"enabled": bf16},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if grad_clip is not None:
        config["gradient_clipping"] = grad_clip
    config.update(extra or {})
    return config


def build_deepspeed(model: torch.nn.Module, optimizer: dict | torch.optim.Optimizer, zero_stage: int, *,
                    micro_batch_size: int, grad_accum: int = 1, grad_clip: float | None = None, bf16: bool = False,
                    fp16: bool = False, extra: dict | None = None, lr_scheduler=None):
    """``deepspeed.initialize`` over the trainable parameters; returns the engine.

    ``optimizer``: a DeepSpeed optimizer config (``{"type": "AdamW", "params": {...}}``) or a torch
    optimizer over ``model``'s parameters (ZeRO then shards its states). On CPU set
    ``DS_ACCELERATOR=cpu`` before the first ``import deepspeed`` (gloo backend). The first init
    compiles DeepSpeed's shm comm op (g++ + ninja, ~35 s, then cached).
    """
    try:
        import deepspeed
    except ImportError as e:
        raise ConfigError("DeepSpeed is not installed: DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed") from e
    config_optimizer = optimizer if isinstance(optimizer, dict) else {"type": "external"}
    config = deepspeed_config(config_optimizer, zero_stage, micro_batch_size=micro_batch_size,
                              grad_accum=grad_accum, grad_clip=grad_clip, bf16=bf16, extra=extra)
    if not isinstance(optimizer, dict):
        del config["optimizer"]
        config.setdefault("zero_allow_untested_optimizer", True)  # a torch optimizer under ZeRO 1-2
    if fp16:
        config["fp16"] = {"enabled": True}
    params = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=None if not isinstance(optimizer, dict) else params,
                                      optimizer=None if isinstance(optimizer, dict) else optimizer,
                                      config=config, lr_scheduler=lr_scheduler,
                                      dist_init_required=not dist.is_initialized())
    return engine


class DeepSpeedStep:
    """The Trainer's update under DeepSpeed: ``engine.backward(loss)`` then ``engine.step()``.

    Gradient clipping, accumulation and loss scaling are the engine's; its optimizer state is
    in the engine's checkpoints (``CheckpointHook(engine=...)``), not in the Trainer's state.
    """

    def __init__(self, engine):
        self.engine = engine

    @property
    def param_groups(self):
        return self.engine.optimizer.param_groups

    def __call__(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)
        self.engine.step()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


def save_deepspeed(engine, directory: str, tag: str, *, trainer: Trainer | None = None, loader=None) -> str:
    """Collective ``engine.save_checkpoint``; trainer counters/hooks, cursor and RNGs go in client_state."""
    client_state: dict[str, Any] = {"rng": gathered_rng_states(), "world_size": rank_world()[1]}
    if trainer is not None:
        client_state["trainer"] = trainer.state_dict()
    if loader is not None:
        client_state["loader"] = loader.state_dict()
    engine.save_checkpoint(directory, tag=tag, client_state=client_state)
    return os.path.join(directory, tag)


def load_deepspeed(engine, directory: str, tag: str | None = None, *, trainer: Trainer | None = None,
                   loader=None) -> dict:
    """Collective ``engine.load_checkpoint`` (``tag=None``: DeepSpeed's ``latest``); restores the rest."""
    path, client_state = engine.load_checkpoint(directory, tag=tag)
    if path is None:
        raise ConfigError(f"no DeepSpeed checkpoint {tag or 'latest'!r} in {directory}")
    if trainer is not None and "trainer" in client_state:
        trainer.load_state_dict(client_state["trainer"])
    if loader is not None and "loader" in client_state:
        loader.load_state_dict(client_state["loader"])
    rank, world = rank_world()
    if len(client_state["rng"]) == world:
        set_rng_state(client_state["rng"][rank])
    else:
        log.warning("DeepSpeed checkpoint from %d ranks, this run has %d: RNG states not restored",
                    len(client_state["rng"]), world)
    return client_state
