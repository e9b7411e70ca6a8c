"""The stage kit: everything a method's stages use from the engine, in one place.

A method's ``workflows/<method>/stages.py`` imports this module (and ``frugalcv.models``,
``frugalcv.sharding``), never ``workflows.engine`` or ``workflows.pipeline`` directly::

    from frugalcv.workflows import kit

    @kit.register_stage("method.train", params=TrainParams, inputs=("train",), optional_inputs=("val",),
                        outputs=("checkpoint",))
    def train(ctx: kit.StageContext) -> kit.StageResult:
        kit.seed(ctx, per_rank=False)                       # equal initial weights on every rank
        net = kit.place(ctx, build_model(...))              # on ctx.device, once
        model, update = kit.distribute(ctx, net, torch.optim.SGD(net.parameters(), lr=ctx.params.lr))
        data = kit.stream(ctx, ctx.input("train"), ctx.params.batch_size, transform)
        kit.seed(ctx, per_rank=True)                        # sampling / drop-path differ per rank
        trainer = kit.fit(ctx, Task(model), update, data, epochs=ctx.params.epochs, state=net)
        return kit.StageResult(metrics=..., outputs={"checkpoint": url},
                               artifacts={"figures": kit.training_curves(ctx, trainer)})
"""

from __future__ import annotations

from frugalcv.workflows.engine.data import SMOKE_BATCH, EvalStream, PairedStream, TrainStream, pair, stream
from frugalcv.workflows.engine.device import autocast, to_device
from frugalcv.workflows.engine.fit import MetricsHook, distribute, fit, seed, training_curves, unwrap
from frugalcv.workflows.engine.fit import place_module as place
from frugalcv.workflows.engine.outputs import local_outputs
from frugalcv.workflows.engine.trainer import EvalHook, HookBase, LoggingHook, LRScheduleHook, Trainer
from frugalcv.workflows.engine.weights import load_pretrained, read_state, save_state
from frugalcv.workflows.pipeline.schema import FieldError
from frugalcv.workflows.pipeline.shard_stage import shard_splits
from frugalcv.workflows.pipeline.stages import StageContext, StageInterrupted, StageResult, register_stage

__all__ = [
    "SMOKE_BATCH", "EvalHook", "EvalStream", "FieldError", "HookBase", "LRScheduleHook", "LoggingHook", "MetricsHook", "PairedStream",
    "StageContext", "StageInterrupted", "StageResult", "TrainStream", "Trainer", "autocast", "distribute",
    "fit", "load_pretrained", "local_outputs", "pair", "place", "read_state", "register_stage", "save_state", "seed", "shard_splits", "stream",
    "to_device", "training_curves", "unwrap",
]
