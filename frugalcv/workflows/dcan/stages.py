"""DCAN's stages on the stage kit: the source-only baseline, the generator alone, two-stage
(segmentation on images a frozen generator synthesised), end to end, and evaluation.

Inputs are shard splits (``source``: labelled, ``target``: the target domain's training images,
whose labels are never read; ``val``: labelled target images for evaluation) and model files
(``model_file``). Every training stage streams its splits, pairs each source batch with
``targets_per_source`` random target images per source image (both cursors in every
checkpoint), runs on ``ctx.device`` with the stage's engine and precision, and resumes.
"""

from __future__ import annotations

import math

import torch

from frugalcv.workflows import kit
from frugalcv.workflows.dcan import model_file
from frugalcv.workflows.dcan.data import paired_stream, source_stream
from frugalcv.workflows.dcan.optim import SGDAndAdam
from frugalcv.workflows.dcan.params import (
    GeneratorParams,
    SourceOnlyParams,
    TrainParams,
    TwoStageParams,
)
from frugalcv.workflows.dcan.tasks import DCAN, EndToEndTask, GeneratorTask, SourceOnlyTask, TwoStageTask


def _sgd(groups, p) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)


def _end_to_end_optimizer(seg, gen, p: TrainParams) -> torch.optim.Optimizer:
    """The segmentation network's SGD and, for the decoder, the generator stage's Adam (no weight decay)
    or, with ``generator_optimizer: sgd``, the same SGD at ``generator_lr``."""
    decoder = {"params": [q for q in gen.parameters() if q.requires_grad], "rule": p.generator_optimizer,
               "lr": p.generator_lr}
    if p.generator_optimizer == "adam":
        decoder["weight_decay"] = 0.0
    return SGDAndAdam([{"params": list(seg.parameters())}, decoder], lr=p.lr, momentum=p.momentum,
                      weight_decay=p.weight_decay)


def _schedule_hooks(optimizer, p) -> list[kit.HookBase]:
    if p.lr_schedule == "constant":
        return []
    total = max(1, p.iterations)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1 - step / total) ** p.poly_power)
    return [kit.LRScheduleHook(schedule)]


def _fit(ctx, task, update, data, state, p, hooks=()) -> kit.Trainer:
    kit.seed(ctx, 1, per_rank=True)  # dropout differs per rank
    return kit.fit(ctx, task, update, data, max_steps=p.iterations, state=state, hooks=hooks,
                   log_every=p.log_every, log_prefix=f"{ctx.stage} ")


def _metrics(trainer: kit.Trainer, keys: tuple[str, ...]) -> dict[str, float]:
    history = trainer.logger.history
    row = history[-1] if history else {}
    return {f"train_{k}": float(row[k]) for k in keys if k in row and math.isfinite(row[k])}


def _result(ctx, url: str, trainer: kit.Trainer, keys: tuple[str, ...]) -> kit.StageResult:
    return kit.StageResult(metrics=_metrics(trainer, keys), outputs={"checkpoint": url},
                           artifacts={"figures": kit.training_curves(ctx, trainer)})


@kit.register_stage("dcan.source_only", params=SourceOnlyParams, inputs=("source",), outputs=("checkpoint",),
                    model="checkpoint")
def source_only_stage(ctx: kit.StageContext) -> kit.StageResult:
    """Segmentation trained on the labelled source domain alone (the baseline DCAN improves on)."""
    p: SourceOnlyParams = ctx.params
    kit.seed(ctx, per_rank=False)
    seg, args = model_file.segmentation_net(ctx, p)
    seg = kit.place(ctx, seg)
    optimizer = _sgd(seg.parameters(), p)
    model, update = kit.distribute(ctx, seg, optimizer, grad_clip=p.grad_clip, batch_size=p.batch_size)
    data = source_stream(ctx, p)
    classes = model_file.classes_of(data.loader.manifest, p.num_classes)
    trainer = _fit(ctx, SourceOnlyTask(model), update, data, seg, p, _schedule_hooks(optimizer, p))
    if not ctx.is_main:
        return kit.StageResult()
    url = model_file.save(ctx, seg=(seg, args, p.model), classes=classes)
    return _result(ctx, url, trainer, ("seg",))


@kit.register_stage("dcan.generator", params=GeneratorParams, inputs=("source", "target"),
                    optional_inputs=("generator",), outputs=("checkpoint",))
def generator_stage(ctx: kit.StageContext) -> kit.StageResult:
    """The image generator trained alone on its loss (content + Gram style), the encoder frozen."""
    p: GeneratorParams = ctx.params
    kit.seed(ctx, per_rank=False)
    start = model_file.read(ctx, "generator", needs="generator") if "generator" in ctx.inputs else None
    gen, args = model_file.generator_net(ctx, p, start)
    gen = kit.place(ctx, gen)
    optimizer = torch.optim.Adam([q for q in gen.parameters() if q.requires_grad], lr=p.lr)
    model, update = kit.distribute(ctx, gen, optimizer, batch_size=p.batch_size)
    data = paired_stream(ctx, p)
    classes = model_file.classes_of(data.loader.manifest, len(data.loader.manifest.classes) or 19)
    trainer = _fit(ctx, GeneratorTask(model, p.targets_per_source), update, data, gen, p)
    if not ctx.is_main:
        return kit.StageResult()
    url = model_file.save(ctx, generator=(gen, args), classes=classes)
    return _result(ctx, url, trainer, ("gen", "content", "style"))


@kit.register_stage("dcan.two_stage", params=TwoStageParams, inputs=("generator", "source", "target"),
                    outputs=("checkpoint",), model="checkpoint")
def two_stage_stage(ctx: kit.StageContext) -> kit.StageResult:
    """Segmentation on source images synthesised by a trained generator, kept frozen (the ablation of
    end-to-end training), aligned with the target at the split as in end-to-end training."""
    p: TwoStageParams = ctx.params
    gen, _ = model_file.generator_net(ctx, p, model_file.read(ctx, "generator", needs="generator"))
    gen = kit.place(ctx, gen).eval().requires_grad_(False)
    kit.seed(ctx, per_rank=False)
    seg, args = model_file.segmentation_net(ctx, p)
    seg = kit.place(ctx, seg)
    optimizer = _sgd(seg.parameters(), p)
    model, update = kit.distribute(ctx, seg, optimizer, grad_clip=p.grad_clip, batch_size=p.batch_size)
    data = paired_stream(ctx, p)
    classes = model_file.classes_of(data.loader.manifest, p.num_classes)
    trainer = _fit(ctx, TwoStageTask(model, gen, p.targets_per_source), update, data, seg, p,
                   _schedule_hooks(optimizer, p))
    if not ctx.is_main:
        return kit.StageResult()
    url = model_file.save(ctx, seg=(seg, args, p.model), classes=classes)
    return _result(ctx, url, trainer, ("seg",))


@kit.register_stage("dcan.train", params=TrainParams, inputs=("source", "target"), optional_inputs=("generator",),
                    outputs=("checkpoint",), model="checkpoint")
def train_stage(ctx: kit.StageContext) -> kit.StageResult:
    """DCAN end to end (Eq. 6.5): generator and segmentation network trained jointly on
    ``l_seg + gen_weight * l_gen``; ``generator`` (a dcan.generator checkpoint) starts the decoder."""
    p: TrainParams = ctx.params
    start = model_file.read(ctx, "generator", needs="generator") if "generator" in ctx.inputs else None
    kit.seed(ctx, 2, per_rank=False)
    gen, gen_args = model_file.generator_net(ctx, p, start)
    kit.seed(ctx, per_rank=False)  # the segmentation network starts as in the other stages with this seed
    seg, args = model_file.segmentation_net(ctx, p)
    net = kit.place(ctx, DCAN(seg, gen))
    optimizer = _end_to_end_optimizer(seg, gen, p)
    model, update = kit.distribute(ctx, net, optimizer, grad_clip=p.grad_clip, batch_size=p.batch_size)
    data = paired_stream(ctx, p)
    classes = model_file.classes_of(data.loader.manifest, p.num_classes)
    trainer = _fit(ctx, EndToEndTask(model, p.gen_weight, p.targets_per_source), update, data, net, p,
                   _schedule_hooks(optimizer, p))
    if not ctx.is_main:
        return kit.StageResult()
    url = model_file.save(ctx, seg=(seg, args, p.model), generator=(gen, gen_args), classes=classes)
    return _result(ctx, url, trainer, ("seg", "gen", "content", "style"))


from frugalcv.workflows.dcan import evaluate_stage  # noqa: E402,F401  (registers dcan.evaluate)
