"""LiteEval's stages on the stage kit: ``liteeval.train`` (LiteEval, or its always-fine baseline) and
``liteeval.evaluate``.

Inputs are ``video-features`` splits written by ``video.extract`` with a ``coarse`` backbone
(``features.npy`` fine, ``coarse.npy`` coarse per video) and model files. Training streams its
split (``train_stream(..., coarse=True)``), runs on ``ctx.device`` with DDP across ranks and resumes
from its checkpoints (the Gumbel temperature, the loader's cursor and the RNG states included).
"""

from __future__ import annotations

import math

from frugalcv.errors import ConfigError
from frugalcv.models.liteeval import LiteEvalNet
from frugalcv.sharding import storage
from frugalcv.workflows import kit
from frugalcv.workflows.liteeval import model_file
from frugalcv.workflows.liteeval.params import TrainParams
from frugalcv.workflows.liteeval.train import LiteEvalTask, TemperatureHook, lr_hooks, optimizer
from frugalcv.workflows.video.data import split_info, train_stream


def max_frames(ctx: kit.StageContext, info: dict, requested: int | None) -> int:
    """The padded length T: the param, else the split's frames per video."""
    if requested is not None:
        return requested
    if not isinstance(info.get("frames"), int):
        raise ConfigError(f"stages.{ctx.stage}.params.max_frames: the split's videos differ in length (its manifest "
                          "records no `frames`); set max_frames (longer videos are truncated, shorter ones padded)")
    return int(info["frames"])


def _features(p, frames: int) -> dict:
    return {"max_frames": frames, "normalize": p.normalize, "feature_norm": p.feature_norm}


def _check_coarse(ctx: kit.StageContext, info: dict, split: str) -> None:
    if info.get("coarse_dim") is None or info.get("fine_dim") is None:
        raise ConfigError(f"stages.{ctx.stage}.inputs.{split}: {storage.redact(ctx.input(split))} has no coarse and fine features; "
                          "extract it with video.extract and both a `fine:` and a `coarse:` backbone")


@kit.register_stage("liteeval.train", params=TrainParams, inputs=("train",), optional_inputs=("val",),
                    outputs=("checkpoint",), model="checkpoint")
def train_stage(ctx: kit.StageContext) -> kit.StageResult:
    """The coarse and fine LSTMs and the gate, trained jointly on Eq. 4.5 with a Gumbel-softmax gate
    whose temperature anneals from ``tau_start`` to ``tau_end`` (``gate: learned``); or the same network
    reading every fine frame (``gate: always_fine``). Metrics of the hard gate on ``val`` when given."""
    from frugalcv.workflows.liteeval.evaluate_stage import quick_metrics

    p: TrainParams = ctx.params
    info = split_info(ctx, "train")
    _check_coarse(ctx, info, "train")
    frames = max_frames(ctx, info, p.max_frames)
    kit.seed(ctx, per_rank=False)  # the same initial weights on every rank
    net = kit.place(ctx, LiteEvalNet(info["coarse_dim"], info["fine_dim"], len(info["classes"]),
                                     p.coarse_hidden, p.fine_hidden))
    if p.gate == "always_fine":  # the gate's output is never used: frozen, so DDP waits for no gradient of it
        net.gate.requires_grad_(False)
    opt = optimizer(net, p)
    model, update = kit.distribute(ctx, net, opt, grad_clip=p.grad_clip, batch_size=p.batch_size)
    data = train_stream(ctx, "train", p.batch_size, frames, coarse=True)
    task = LiteEvalTask(model, p)
    total = data.steps_per_epoch * p.epochs
    if ctx.smoke_steps:
        total = min(total, ctx.smoke_steps)
    kit.seed(ctx, 1, per_rank=True)  # Gumbel noise differs per rank
    hooks = [TemperatureHook(task, total), *lr_hooks(opt, p, total)]
    trainer = kit.fit(ctx, task, update, data, epochs=p.epochs, state=net, hooks=hooks,
                      log_every=p.log_every, log_prefix=f"{ctx.stage} ")
    if not ctx.is_main:
        return kit.StageResult()
    saved = model_file.state(net, gate=p.gate, gamma=p.gamma, lam=p.lam, features=_features(p, frames), info=info)
    url = ctx.path("model.pt")
    kit.save_state(url, saved)
    history = trainer.logger.history
    row = history[-1] if history else {}
    metrics = {f"train_{k}": float(row[k]) for k in ("ce", "top1", "fine_fraction") if k in row
               and math.isfinite(row[k])}
    if "val" in ctx.inputs:
        metrics.update({f"val_{k}": v for k, v in quick_metrics(ctx, saved, "val", p.eval_batch_size).items()})
    ctx.printer(f"{ctx.stage}: " + " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    return kit.StageResult(metrics=metrics, outputs={"checkpoint": url},
                           artifacts={"figures": kit.training_curves(ctx, trainer)})


from frugalcv.workflows.liteeval import evaluate_stage  # noqa: E402,F401  (registers liteeval.evaluate)
