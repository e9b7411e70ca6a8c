"""BlockDrop's stages: thin adapters binding each training step to the stage kit.

Splits are streamed from shards (``kit.stream``); every stage writes ``<output_dir>/model.pt``
(loaded ``weights_only``)::

    {"model": name, "num_classes": n, "debug": bool, "preprocess": {augment, image_size, mean, std},
     "resnet": state_dict, "policy_model": name, "policy": state_dict}     # policy keys after curriculum

The preprocessing (and so the normalisation statistics) is fixed by the pretrain stage and
carried in every checkpoint, so later stages and ``evaluate`` need no training statistics.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

from torch import nn

from frugalcv.errors import ConfigError
from frugalcv.models import build_model
from frugalcv.sharding import storage
from frugalcv.workflows import kit
from frugalcv.workflows.blockdrop.curriculum import (
    CurriculumConfig,
    CurriculumHook,
    CurriculumTask,
    curriculum_optimizer,
)
from frugalcv.workflows.blockdrop.evaluate import evaluate_policy
from frugalcv.workflows.blockdrop.finetune import FinetuneConfig, FinetuneTask, finetune_optimizer
from frugalcv.workflows.blockdrop.pretrain import (
    ClassificationTask,
    PretrainConfig,
    classification_accuracy,
    lr_schedule,
    pretrain_optimizer,
)
from frugalcv.workflows.blockdrop.transforms import KNOWN_STATS, Preprocess, dataset_stats

# ------------------------------------------------------------------------------------ helpers


def _preprocess(ctx: kit.StageContext, p: PretrainConfig) -> Preprocess:
    """The pretrain stage's preprocessing; ``normalize: dataset`` streams the statistics from train."""
    prep = Preprocess(p.augment, p.image_size)
    if p.normalize != "dataset":
        prep.mean, prep.std = (list(v) for v in KNOWN_STATS[p.normalize])
        return prep
    split = "train" if "train" in ctx.inputs else "val"
    transform, batch_transform = prep.stats_transforms()
    batches = kit.stream(ctx, ctx.input(split), p.eval_batch_size, transform, batch_transform=batch_transform,
                         train=False)
    limit = max(1, math.ceil(p.stats_samples / p.eval_batch_size))
    prep.mean, prep.std = dataset_stats(b for _, b in zip(range(limit), batches, strict=False))
    return prep


def _models(ctx: kit.StageContext, state: dict) -> tuple[nn.Module, nn.Module | None]:
    """The ResNet (and policy, after curriculum) of a BlockDrop model file, on ``ctx.device``."""
    resnet = build_model(state["model"], num_classes=int(state["num_classes"]), debug=bool(state["debug"]))
    resnet.load_state_dict(state["resnet"])
    policy = None
    if "policy" in state:
        policy = build_model(state["policy_model"], num_blocks=resnet.num_blocks, debug=bool(state["debug"]))
        policy.load_state_dict(state["policy"])
        policy = kit.place(ctx, policy)
    return kit.place(ctx, resnet), policy


def _read_model_file(ctx: kit.StageContext, name: str = "checkpoint", *, needs_policy: bool = False) -> dict:
    url = ctx.input(name)
    state = kit.read_state(url, "BlockDrop model file")
    if "resnet" not in state or "preprocess" not in state:
        raise ConfigError(f"stages.{ctx.stage}.inputs.{name}: {storage.redact(url)} is not a BlockDrop model file "
                          "(give a blockdrop stage's checkpoint output)")
    if needs_policy and "policy" not in state:
        raise ConfigError(f"stages.{ctx.stage}.inputs.{name}: {storage.redact(url)} holds no policy; "
                          "give the curriculum (or finetune) stage's checkpoint")
    return state


def _eval_stream(ctx: kit.StageContext, split: str, prep: Preprocess, batch_size: int):
    transform, batch_transform = prep.transforms(train=False)
    return kit.stream(ctx, ctx.input(split), batch_size, transform, batch_transform=batch_transform, train=False)


def _train_stream(ctx: kit.StageContext, prep: Preprocess, p) -> kit.TrainStream:
    """The ``train`` split with the stage's augmentation (``translate``, ``hflip``), on ``ctx.device``."""
    transform, batch_transform = prep.transforms(train=True, translate=p.translate, hflip=p.hflip)
    return kit.stream(ctx, ctx.input("train"), p.batch_size, transform, batch_transform=batch_transform)


def _policy_metrics(ctx, resnet, policy, prep: Preprocess, batch_size: int, seed: int) -> dict[str, float]:
    if "val" not in ctx.inputs:
        return {}
    ev = evaluate_policy(resnet, policy, _eval_stream(ctx, "val", prep, batch_size), baselines=False, seed=seed)
    return {f"val_{k}": ev.metrics[k] for k in ("accuracy", "blocks_mean", "flops_speedup")}


def _last(trainer: kit.Trainer, keys: tuple[str, ...]) -> dict[str, float]:
    history = trainer.logger.history
    row = history[-1] if history else {}
    return {f"train_{k}": float(row[k]) for k in keys if k in row}


# ------------------------------------------------------------------------------------ stages


def _pretrain_inputs(params: PretrainConfig, inputs) -> None:
    if params.epochs > 0 and "train" not in inputs:
        raise kit.FieldError("inputs.train", f"needed to train for epochs={params.epochs} "
                             "(epochs: 0 with weights only evaluates)")


@kit.register_stage("blockdrop.pretrain", params=PretrainConfig, inputs=("val",), optional_inputs=("train",),
                    outputs=("checkpoint",), check=_pretrain_inputs, model="checkpoint")
def pretrain_stage(ctx: kit.StageContext) -> kit.StageResult:
    """Train (or, with ``epochs: 0``, only load ``weights`` of) the full ResNet; report val accuracy."""
    p: PretrainConfig = ctx.params
    kit.seed(ctx, per_rank=False)  # the same initial weights on every rank
    resnet = build_model(p.model, num_classes=p.num_classes, debug=p.debug)
    if p.weights:
        kit.load_pretrained(resnet, p.weights, allow_mismatch=("fc.",))
    prep = _preprocess(ctx, p)
    resnet = kit.place(ctx, resnet)
    trainer = None
    if p.epochs > 0:
        data = _train_stream(ctx, prep, p)
        optimizer = pretrain_optimizer(resnet, p)
        model, update = kit.distribute(ctx, resnet, optimizer, batch_size=p.batch_size)
        schedule = lr_schedule(optimizer, p, data.steps_per_epoch)
        task = ClassificationTask(model, p.label_smoothing, p.drop_path, p.drop_path_rule)
        kit.seed(ctx, 1, per_rank=True)  # drop-path masks differ per rank
        trainer = kit.fit(ctx, task, update, data, epochs=p.epochs, state=resnet,
                          hooks=[kit.LRScheduleHook(schedule)], log_every=p.log_every, log_prefix="pretrain ")
    if not ctx.is_main:
        return kit.StageResult()
    accuracy = classification_accuracy(resnet, _eval_stream(ctx, "val", prep, p.eval_batch_size))
    ctx.printer(f"pretrained {p.model}: val accuracy {100 * accuracy:.2f}%")
    url = ctx.path("model.pt")
    kit.save_state(url, {"model": p.model, "num_classes": p.num_classes, "debug": p.debug,
                         "preprocess": prep.to_dict(), "resnet": kit.unwrap(resnet).state_dict()})
    return kit.StageResult(metrics={"val_accuracy": accuracy}, outputs={"checkpoint": url},
                           artifacts={"figures": kit.training_curves(ctx, trainer)})


@kit.register_stage("blockdrop.curriculum", params=CurriculumConfig, inputs=("checkpoint", "train"),
                    optional_inputs=("val",), outputs=("checkpoint",), model="checkpoint")
def curriculum_stage(ctx: kit.StageContext) -> kit.StageResult:
    """Learn the policy against the frozen pretrained ResNet, one curriculum step per stage (Alg. 1)."""
    p: CurriculumConfig = ctx.params
    state = _read_model_file(ctx)
    prep = Preprocess(**state["preprocess"])
    resnet, _ = _models(ctx, state)
    kit.seed(ctx, per_rank=False)
    policy = build_model(p.policy, num_blocks=resnet.num_blocks, debug=bool(state["debug"]))
    if p.policy_weights:  # e.g. torchvision's ResNet-18 into the ResNet-10 policy: its head stays new
        kit.load_pretrained(policy, p.policy_weights, allow_missing=("logit.",), allow_unexpected=True)
    policy = kit.place(ctx, policy)
    model, update = kit.distribute(ctx, policy, curriculum_optimizer(policy, p), batch_size=p.batch_size)
    data = _train_stream(ctx, prep, p)
    task = CurriculumTask(resnet, model, p)
    kit.seed(ctx, 1, per_rank=True)  # policy samples differ per rank
    trainer = kit.fit(ctx, task, update, data, epochs=p.epochs, state=policy,
                      hooks=[CurriculumHook(task, p.epochs_per_stage)], log_every=p.log_every,
                      log_prefix="curriculum ")
    if not ctx.is_main:
        return kit.StageResult()
    metrics = _last(trainer, ("reward", "accuracy_greedy", "blocks_greedy"))
    metrics.update(_policy_metrics(ctx, resnet, policy, prep, p.eval_batch_size, p.seed))
    url = ctx.path("model.pt")
    kit.save_state(url, {**state, "resnet": resnet.state_dict(), "policy_model": p.policy,
                         "policy": policy.state_dict()})
    return kit.StageResult(metrics=metrics, outputs={"checkpoint": url},
                           artifacts={"figures": kit.training_curves(ctx, trainer)})


@kit.register_stage("blockdrop.finetune", params=FinetuneConfig, inputs=("checkpoint", "train"),
                    optional_inputs=("val",), outputs=("checkpoint",), model="checkpoint")
def finetune_stage(ctx: kit.StageContext) -> kit.StageResult:
    """Finetune the ResNet and the policy jointly (the ResNet under the policies it will run with)."""
    p: FinetuneConfig = ctx.params
    state = _read_model_file(ctx, needs_policy=True)
    prep = Preprocess(**state["preprocess"])
    resnet, policy = _models(ctx, state)
    nets, update = kit.distribute(ctx, {"resnet": resnet, "policy": policy},
                                  finetune_optimizer(resnet, policy, p), find_unused={"resnet": True},
                                  batch_size=p.batch_size)
    data = _train_stream(ctx, prep, p)
    both = nn.ModuleDict({"resnet": resnet, "policy": policy})  # what the resumable checkpoint holds
    kit.seed(ctx, 1, per_rank=True)
    trainer = kit.fit(ctx, FinetuneTask(nets["resnet"], nets["policy"], p), update, data, epochs=p.epochs,
                      state=both, log_every=p.log_every, log_prefix="finetune ")
    if not ctx.is_main:
        return kit.StageResult()
    metrics = _last(trainer, ("ce", "reward", "accuracy_greedy", "blocks_greedy"))
    metrics.update(_policy_metrics(ctx, resnet, policy, prep, p.eval_batch_size, p.seed))
    url = ctx.path("model.pt")
    kit.save_state(url, {**state, "resnet": resnet.state_dict(), "policy": policy.state_dict()})
    return kit.StageResult(metrics=metrics, outputs={"checkpoint": url},
                           artifacts={"figures": kit.training_curves(ctx, trainer)})


@dataclass(kw_only=True)
class EvaluateParams:
    """Greedy-policy evaluation on ``test``; with ``before`` (the curriculum checkpoint) the report
    compares before and after finetuning (the dissertation's Table 2.1)."""

    batch_size: int = 256
    seed: int = 0
    #: FirstK / RandomK / DistributeK at the learned policy's mean block count
    baselines: bool = True
    title: str | None = None
    #: the penalty the policy was trained with, shown in the report
    gamma: float | None = None

    def __post_init__(self):
        if self.batch_size < 1:
            raise kit.FieldError("batch_size", f"{self.batch_size}: must be >= 1")


KEY_METRICS = ("accuracy", "blocks_mean", "flops_mean", "flops_speedup", "full_accuracy", "unique_policies",
               "firstk_accuracy", "randomk_accuracy", "distributek_accuracy")


@kit.register_stage("blockdrop.evaluate", params=EvaluateParams, inputs=("checkpoint", "test"),
                    optional_inputs=("before",), outputs=("report", "metrics"))
def evaluate_stage(ctx: kit.StageContext) -> kit.StageResult:
    """Accuracy, blocks and FLOPs of the greedy policy, the heuristic baselines, report.md and figures."""
    from frugalcv.workflows.blockdrop import report

    p: EvaluateParams = ctx.params
    if not ctx.is_main:
        return kit.StageResult()
    state = _read_model_file(ctx, needs_policy=True)
    prep = Preprocess(**state["preprocess"])
    resnet, policy = _models(ctx, state)
    data = _eval_stream(ctx, "test", prep, p.batch_size)
    after = evaluate_policy(resnet, policy, data, baselines=p.baselines, seed=p.seed)
    title = p.title or f"BlockDrop ({state['model']}), pipeline {ctx.pipeline}, run {ctx.run_id}"
    gamma = float("nan") if p.gamma is None else p.gamma
    metrics = {k: after.metrics[k] for k in KEY_METRICS if k in after.metrics}
    with kit.local_outputs(ctx) as out:  # report and figures as files; uploaded when the root is remote
        if "before" in ctx.inputs and p.baselines:
            before_resnet, before_policy = _models(ctx, _read_model_file(ctx, "before", needs_policy=True))
            before = evaluate_policy(before_resnet, before_policy, data, seed=p.seed)
            report.write_report(out, title=title, before=before, after=after, gamma=gamma)
            metrics.update({f"before_{k}": before.metrics[k] for k in KEY_METRICS if k in before.metrics})
            ctx.printer(report.results_table([("BlockDrop, before finetuning", before.metrics),
                                              ("BlockDrop, after finetuning", after.metrics)]))
            ctx.printer(report.baselines_table(before.metrics, after.metrics))
        else:
            figures = [
                report.plot_accuracy_vs_flops([("BlockDrop", after.metrics)], os.path.join(out, "accuracy_vs_flops.png")),
                report.plot_block_usage({"BlockDrop": after}, os.path.join(out, "block_usage.png")),
                report.plot_policies_per_class(after, os.path.join(out, "policies_per_class.png")),
            ]
            parts = [f"# {title}", "## Results", report.results_table([("BlockDrop", after.metrics)])]
            if p.baselines:
                parts += ["## Heuristic baselines at the same K", report.baselines_table(after.metrics)]
            names = [os.path.basename(f) for f in figures]
            parts += ["## Figures", "\n".join(f"![{name}]({name})" for name in names)]
            with open(os.path.join(out, "report.md"), "w") as f:
                f.write("\n\n".join(parts) + "\n")
            ctx.printer(report.results_table([("BlockDrop", after.metrics)]))
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(after.metrics, f, indent=1, sort_keys=True)
    figures = [ctx.path(name) for name in report.FIGURES]
    return kit.StageResult(metrics=metrics, outputs={"report": ctx.path("report.md"), "metrics": ctx.path("metrics.json")},
                           artifacts={"report": [ctx.path("report.md"), *figures, ctx.path("metrics.json")]})


