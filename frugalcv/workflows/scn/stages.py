"""SCN's stages on the stage kit: ``scn.pretrain`` (the backbone as a classifier, where no ImageNet
weights are at hand), ``scn.train`` (the spatial context network) and ``scn.evaluate``.

``scn.train`` streams patch-pair shards (``a.png``, ``b.png``, ``offset.npy``; kinds scn-shapes,
voc-pairs), builds both streams from the ``backbone`` input (an scn.pretrain model file) or from
its params (``weights``: a torchvision state dict), trains on ``ctx.device`` with DDP across ranks
and resumes from its checkpoints; with a ``test`` input it records ``test_mse`` every
``eval_every`` epochs (the curve of Fig. 5.4).
"""

from __future__ import annotations

import math

import torch

from frugalcv.errors import ConfigError
from frugalcv.models.scn import SpatialContextNet
from frugalcv.sharding import storage
from frugalcv.workflows import kit
from frugalcv.workflows.scn import model_file
from frugalcv.workflows.scn.data import image_stream, pair_stream
from frugalcv.workflows.scn.params import PretrainParams, TrainParams
from frugalcv.workflows.scn.train import (
    ClassifierTask,
    ContextTask,
    ReconstructionHook,
    examples_by_kind,
    milestone_schedule,
    regression_error,
)


def _sgd(params, p) -> torch.optim.Optimizer:
    trained = [q for q in params if q.requires_grad]
    return torch.optim.SGD(trained, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)


def _last(trainer: kit.Trainer, keys: tuple[str, ...]) -> dict[str, float]:
    history = trainer.logger.history
    row = history[-1] if history else {}
    return {f"train_{k}": float(row[k]) for k in keys if k in row and math.isfinite(row[k])}


@kit.register_stage("scn.pretrain", params=PretrainParams, inputs=("train",), outputs=("checkpoint",),
                    model="checkpoint")
def pretrain_stage(ctx: kit.StageContext) -> kit.StageResult:
    """The backbone trained as a classifier on a labelled split (e.g. digits): SCN's top stream."""
    p: PretrainParams = ctx.params
    from frugalcv.sharding import load_manifest

    classes = list(load_manifest(ctx.input("train")).classes)
    if len(classes) < 2:
        raise ConfigError(f"stages.{ctx.stage}.inputs.train: {storage.redact(ctx.input('train'))} names "
                          f"{len(classes)} class(es); give a labelled split with 2 or more")
    kit.seed(ctx, per_rank=False)
    net, name, args = model_file.new_backbone(p, len(classes))
    net = kit.place(ctx, net)
    optimizer = _sgd(net.parameters(), p)
    model, update = kit.distribute(ctx, net, optimizer, batch_size=p.batch_size)
    data = image_stream(ctx, "train", p.batch_size, p.patch_size)
    hooks = [milestone_schedule(optimizer, p.lr_milestones, p.lr_gamma, data.steps_per_epoch)]
    kit.seed(ctx, 1, per_rank=True)  # dropout differs per rank
    trainer = kit.fit(ctx, ClassifierTask(model), update, data, epochs=p.epochs, max_steps=p.iterations,
                      state=net, hooks=hooks, log_every=p.log_every, log_prefix=f"{ctx.stage} ")
    if not ctx.is_main:
        return kit.StageResult()
    url = model_file.save(ctx, {"format": model_file.BACKBONE_FORMAT, "backbone": name, "backbone_args": args,
                                "state": kit.unwrap(net).state_dict(), "classes": classes})
    return kit.StageResult(metrics=_last(trainer, ("loss", "top1")), outputs={"checkpoint": url},
                           artifacts={"figures": kit.training_curves(ctx, trainer)})


def _backbone(ctx: kit.StageContext, p: TrainParams):
    if "backbone" not in ctx.inputs:
        return model_file.new_backbone(p, 1000)
    if p.weights:
        raise ConfigError(f"stages.{ctx.stage}: both inputs.backbone and params.weights give the backbone; "
                          "keep one")
    state = model_file.read(ctx, "backbone", model_file.BACKBONE_FORMAT)
    return model_file.load_backbone(state), state["backbone"], dict(state["backbone_args"])


@kit.register_stage("scn.train", params=TrainParams, inputs=("train",), optional_inputs=("test", "backbone"),
                    outputs=("checkpoint",), model="checkpoint")
def train_stage(ctx: kit.StageContext) -> kit.StageResult:
    """SCN (Eqs. 5.1-5.2): the bottom stream (fc layers; convs with train_convs) and the spatial
    context module learn to predict the frozen top stream's fc7 of X_i from X_j and o_ij."""
    p: TrainParams = ctx.params
    kit.seed(ctx, per_rank=False)  # the same initial weights on every rank
    backbone, name, args = _backbone(ctx, p)
    scn_args = {"hidden": p.hidden, "use_offset": p.use_offset, "target": p.target, "target_size": p.target_size,
                "train_convs": p.train_convs, "offset_init": p.offset_init}
    net = kit.place(ctx, SpatialContextNet(backbone, **scn_args))
    optimizer = _sgd(net.parameters(), p)
    model, update = kit.distribute(ctx, net, optimizer, batch_size=p.batch_size)
    data = pair_stream(ctx, "train", p.batch_size, p.patch_size, train=True)
    hooks: list[kit.HookBase] = [milestone_schedule(optimizer, p.lr_milestones, p.lr_gamma, data.steps_per_epoch)]
    evaluation = recon = None
    if "test" in ctx.inputs:
        test = pair_stream(ctx, "test", p.eval_batch_size, p.patch_size, train=False)
        evaluation = kit.EvalHook(lambda: regression_error(net, test), period=p.eval_every,
                                  printer=ctx.printer if ctx.is_main else None, prefix=f"{ctx.stage} test")
        hooks.append(evaluation)
        if p.target == "pixels":
            recon = ReconstructionHook(net, examples_by_kind(test, [1, 2, 3]))
            hooks.append(recon)
    kit.seed(ctx, 1, per_rank=True)  # dropout differs per rank
    trainer = kit.fit(ctx, ContextTask(model), update, data, epochs=p.epochs, max_steps=p.iterations, state=net,
                      hooks=hooks, log_every=p.log_every, log_prefix=f"{ctx.stage} ")
    if not ctx.is_main:
        return kit.StageResult()
    history = [{k: float(v) for k, v in row.items()} for row in (evaluation.history if evaluation else [])]
    saved = {"format": model_file.SCN_FORMAT, "backbone": name, "backbone_args": args, "scn_args": scn_args,
             "state": kit.unwrap(net).state_dict(), "patch_size": p.patch_size, "history": history}
    if recon is not None and (frames := recon.result()) is not None:
        saved["reconstructions"] = frames
    url = model_file.save(ctx, saved)
    metrics = _last(trainer, ("mse",))
    if evaluation is not None and evaluation.latest:
        metrics["test_mse"] = float(evaluation.latest["test_mse"])
    ctx.printer(f"{ctx.stage}: " + " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    return kit.StageResult(metrics=metrics, outputs={"checkpoint": url},
                           artifacts={"figures": kit.training_curves(ctx, trainer)})


from frugalcv.workflows.scn import evaluate_stage  # noqa: E402,F401  (registers scn.evaluate)
