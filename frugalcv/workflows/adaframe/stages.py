"""AdaFrame's stages on the stage kit: ``adaframe.train`` (the memory-augmented LSTM, Eq. 3.7),
``adaframe.baselines`` (AVGPOOLING and an LSTM over K frames) and ``adaframe.evaluate``.

Inputs are ``video.extract`` splits (``features.npy`` fine features v_t and ``coarse.npy``, the
memory's light features), streamed as padded batches on ``ctx.device``; training runs the one
Trainer (resumable, DDP across ranks). Model files are described in ``model_file``.
"""

from __future__ import annotations

import math

from torch import nn

from frugalcv.models.adaframe import AdaFrameNet
from frugalcv.workflows import kit
from frugalcv.workflows.adaframe import model_file
from frugalcv.workflows.adaframe.data import (
    check_matches,
    evaluation_batches,
    features_of,
    training_batches,
    with_stats,
)
from frugalcv.workflows.adaframe.evaluate import adaframe_metrics, evaluate_split
from frugalcv.workflows.adaframe.params import BaselinesParams, TrainParams
from frugalcv.workflows.adaframe.train import AdaFrameTask, BaselinesTask, optimizer, schedule_hooks


def _last(trainer: kit.Trainer, keys: tuple[str, ...]) -> dict[str, float]:
    history = trainer.logger.history
    row = history[-1] if history else {}
    return {f"train_{k}": float(row[k]) for k in keys if k in row and math.isfinite(row[k])}


def _fit(ctx: kit.StageContext, task, module, state: nn.Module, p, prefix: str, coarse: bool,
         features: dict) -> kit.Trainer:
    """Optimiser, DDP, the training stream and the Trainer for ``module`` (``state``: what is checkpointed)."""
    opt = optimizer(state.parameters(), p)
    model, update = kit.distribute(ctx, module, opt, grad_clip=p.grad_clip, batch_size=p.batch_size)
    data = training_batches(ctx, "train", p.batch_size, features, coarse=coarse)
    kit.seed(ctx, 1, per_rank=True)  # location samples and frame draws differ per rank
    return kit.fit(ctx, task(model), update, data, epochs=p.epochs, state=state,
                   hooks=schedule_hooks(opt, p, data.steps_per_epoch), log_every=p.log_every, log_prefix=prefix)


@kit.register_stage("adaframe.train", params=TrainParams, inputs=("train",), optional_inputs=("val",),
                    outputs=("checkpoint",), model="checkpoint")
def train_stage(ctx: kit.StageContext) -> kit.StageResult:
    """AdaFrame on `train` (fine + coarse features): T_e glimpses per video, locations sampled from
    the policy, L_cls + λ·L_util − λ·J_sel; with `val`, its mAP, top-1 and frames at the lookahead
    stop (`margin`, `patience`)."""
    p: TrainParams = ctx.params
    features = with_stats(ctx, features_of(ctx, "train", p), p.eval_batch_size, coarse=True)
    kit.seed(ctx, per_rank=False)  # the same initial weights on every rank
    args = model_file.adaframe_args(p, features)
    net = kit.place(ctx, AdaFrameNet(**args))
    trainer = _fit(ctx, lambda m: AdaFrameTask(m, p, features), net, net, p, "adaframe ", True, features)
    if not ctx.is_main:
        return kit.StageResult()
    metrics = _last(trainer, ("loss", "cls", "util", "sel", "reward", "top1"))
    if "val" in ctx.inputs:
        check_matches(ctx, "val", features, "training split")
        rollouts, _ = evaluate_split(net, evaluation_batches(ctx, "val", p.eval_batch_size, features), p.steps,
                                     features)
        val, _ = adaframe_metrics(rollouts, p.steps, p.margin, p.patience, features, args)
        metrics.update({f"val_{k}": val[k] for k in ("map", "top1", "frames_mean", "gflops_mean")})
        ctx.printer(f"adaframe val: mAP {100 * val['map']:.2f}%, top-1 {100 * val['top1']:.2f}%, "
                    f"{val['frames_mean']:.2f} frames (μ={p.margin:g}, p={p.patience})")
    url = model_file.save_adaframe(ctx, net, args, p.steps, features)
    return kit.StageResult(metrics=metrics, outputs={"checkpoint": url},
                           artifacts={"figures": kit.training_curves(ctx, trainer)})


@kit.register_stage("adaframe.baselines", params=BaselinesParams, inputs=("train",), outputs=("checkpoint",))
def baselines_stage(ctx: kit.StageContext) -> kit.StageResult:
    """The baselines on `train` (fine features only): AVGPOOLING (mean feature, one linear layer)
    over every frame, and an LSTM over K random frames (K drawn per batch from `frames` and all)."""
    p: BaselinesParams = ctx.params
    features = with_stats(ctx, features_of(ctx, "train", p, coarse=False), p.eval_batch_size, coarse=False)
    kit.seed(ctx, per_rank=False)
    args = {name: model_file.baseline_args(name, p, features) for name in p.models}
    nets = {name: kit.place(ctx, model_file.build_baseline(name, args[name])) for name in p.models}
    both = nn.ModuleDict(nets)
    task = lambda models: BaselinesTask(models, p.frames, features)  # noqa: E731
    trainer = _fit(ctx, task, nets, both, p, "baselines ", False, features)
    if not ctx.is_main:
        return kit.StageResult()
    keys = tuple(f"{name}_{k}" for name in p.models for k in ("ce", "top1"))
    url = model_file.save_baselines(ctx, {name: (nets[name], args[name]) for name in p.models}, p.frames, features)
    return kit.StageResult(metrics=_last(trainer, keys), outputs={"checkpoint": url},
                           artifacts={"figures": kit.training_curves(ctx, trainer)})


from frugalcv.workflows.adaframe import evaluate_stage  # noqa: E402,F401  (registers adaframe.evaluate)
