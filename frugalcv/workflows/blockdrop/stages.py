"""BlockDrop stage adapters: shard URLs in, ``torch.save``'d state dicts out (loaded ``weights_only``).

Each stage reads its splits into memory (``load_split``), normalises with the training split's
channel statistics (carried in every checkpoint so ``evaluate`` needs no training data), calls
the ``frugalcv.workflows.blockdrop`` function of its step, and saves ``<output_dir>/model.pt``::

    {"model": name, "num_classes": n, "debug": bool, "mean": [...], "std": [...], "image_size": n or None,
     "resnet": state_dict, "policy_model": name, "policy": state_dict}     # policy keys after curriculum

With ``world_size > 1`` the trained module is wrapped in DDP and every rank takes its slice of
each global batch (``batch_size`` stays the global batch). Resumable: the Trainer state goes to
``ctx.checkpoint_dir`` every ``ctx.checkpoint_every`` steps and when ``ctx.should_stop()``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any

import torch
from torch import nn

from frugalcv.errors import ConfigError
from frugalcv.sharding import storage
from frugalcv.workflows.engine.trainer import HookBase
from frugalcv.workflows.pipeline.stages import StageContext, StageInterrupted, StageResult, register_stage

#: stage-level params next to the step's config dataclass fields
COMMON = ("seed", "debug", "num_classes", "eval_batch_size")


# ------------------------------------------------------------------------------------ helpers


def step_config(ctx: StageContext, cls: type, extra: tuple[str, ...] = ()) -> Any:
    """Build the step's config dataclass from ``ctx.params``; unknown keys list the allowed ones."""
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    allowed = set(fields) | set(COMMON) | set(extra)
    unknown = sorted(set(ctx.params) - allowed)
    if unknown:
        raise ConfigError(f"stages.{ctx.stage}.params: unknown key(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(allowed))}")
    return cls(**{k: v for k, v in ctx.params.items() if k in fields})


def save_state(url: str, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    storage.write_bytes_atomic(url, buf.getvalue())


def load_state(url: str) -> dict:
    return torch.load(io.BytesIO(storage.read_bytes(url)), map_location="cpu", weights_only=True)


def load_data(ctx: StageContext, split_input: str, mean=None, std=None, size: int | None = None):
    """(normalised images, labels, mean, std) of an input split; stats from this split unless given.

    ``size`` resizes to size x size after normalising (the pretrain stage's ``image_size``,
    carried in the checkpoint so every later stage sees the same resolution).
    """
    from frugalcv.workflows.blockdrop.data import channel_stats, load_split, normalize, resize

    images, labels = load_split(ctx.input(split_input))
    if mean is None:
        mean, std = channel_stats(images)
    return resize(normalize(images, mean, std), size), labels, mean, std


class RankBatches:
    """Rank ``rank``'s slice of every global batch of a ``TensorBatches`` (same length on every rank)."""

    def __init__(self, batches, rank: int, world_size: int):
        if batches.batch_size < world_size:
            raise ConfigError(f"batch_size={batches.batch_size} is smaller than the world size {world_size}")
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __len__(self) -> int:
        return len(self.batches)

    def __call__(self, epoch: int = 0):
        for images, labels in self.batches(epoch):
            yield images[self.rank::self.world_size], labels[self.rank::self.world_size]


def train_batches(ctx: StageContext, images, labels, batch_size: int, translate: int = 0):
    from frugalcv.workflows.blockdrop.data import TensorBatches

    batches = TensorBatches(images, labels, batch_size, shuffle=True, seed=int(ctx.param("seed", 0)),
                            translate=translate, drop_last=len(images) > batch_size)
    return batches if ctx.world_size == 1 else RankBatches(batches, ctx.rank, ctx.world_size)


def eval_batches(ctx: StageContext, images, labels):
    from frugalcv.workflows.blockdrop.data import TensorBatches

    return TensorBatches(images, labels, int(ctx.param("eval_batch_size", 256)))


def distributed(module: nn.Module, ctx: StageContext, find_unused: bool = False) -> nn.Module:
    """DDP around the trained module when there are several ranks (gloo on CPU, NCCL on GPU)."""
    if ctx.world_size == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, find_unused_parameters=find_unused)


def ddp_only(ctx: StageContext) -> None:
    if ctx.engine != "ddp":
        raise ConfigError(f"stages.{ctx.stage}.engine={ctx.engine!r}: this stage supports engine ddp only "
                          "(DeepSpeed: blockdrop.pretrain)")


class ResumeHook(HookBase):
    """Before training, restore the newest checkpoint in ``directory`` (Trainer, hooks, RNG, weights)."""

    def __init__(self, directory: str, model: nn.Module, printer=print):
        self.directory, self.model, self.printer = directory, model, printer

    def before_train(self) -> None:
        from frugalcv.workflows.engine.checkpoint import latest_checkpoint, restore

        url = latest_checkpoint(self.directory)
        if url is not None:
            restore(url, self.trainer, self.model)
            self.printer(f"resumed from {url} (step {self.trainer.step}, epoch {self.trainer.epoch})")


class StopHook(HookBase):
    """Checkpoint and stop when ``should_stop()`` says so on any rank (a collective decision)."""

    runs_after_checkpoint = True

    def __init__(self, ctx: StageContext, checkpointer):
        self.ctx, self.checkpointer = ctx, checkpointer

    def after_step(self) -> None:
        stop = bool(self.ctx.should_stop())
        if self.ctx.world_size > 1:
            import torch.distributed as dist

            flag = torch.tensor([1.0 if stop else 0.0])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        if stop:
            url = self.checkpointer.save()
            raise StageInterrupted(f"stage {self.ctx.stage} stopped at step {self.trainer.step}; "
                                   f"checkpoint {url}")


class MetricsHook(HookBase):
    """Rank 0 logs the step's scalars to the stage's MLflow run every ``every`` steps."""

    def __init__(self, ctx: StageContext, every: int = 10):
        self.ctx, self.every = ctx, every

    def after_step(self) -> None:
        if self.ctx.is_main and self.trainer.step % self.every == 0:
            self.ctx.tracker.log_metrics(self.trainer.last_output, step=self.trainer.step)


def resume_hooks(ctx: StageContext, model: nn.Module) -> list[HookBase]:
    """[MetricsHook, ResumeHook, CheckpointHook, StopHook, PreemptionHook]: last in a step's hooks.

    ``model`` is what the resumable checkpoint holds (unwrapped; a ModuleDict for several nets).
    """
    from frugalcv.slurm.preemption import PreemptionHook
    from frugalcv.workflows.engine.checkpoint import CheckpointHook

    saver = CheckpointHook(ctx.checkpoint_dir, model, every=ctx.checkpoint_every or None, keep=2,
                           save_at_end=False)
    return [MetricsHook(ctx), ResumeHook(ctx.checkpoint_dir, model, ctx.printer), saver, StopHook(ctx, saver),
            PreemptionHook(saver)]


def unwrapped(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)


def last_row(history: list[dict], keys: tuple[str, ...], prefix: str = "") -> dict[str, float]:
    row = history[-1] if history else {}
    return {f"{prefix}{k}": float(row[k]) for k in keys if k in row}


def _models(state: dict, ctx: StageContext):
    from frugalcv.models import build_model

    resnet = build_model(state["model"], num_classes=int(state["num_classes"]), debug=bool(state["debug"]))
    resnet.load_state_dict(state["resnet"])
    policy = None
    if "policy" in state:
        policy = build_model(state["policy_model"], num_blocks=resnet.num_blocks, debug=bool(state["debug"]))
        policy.load_state_dict(state["policy"])
    return resnet, policy


# ------------------------------------------------------------------------------------ stages


@register_stage("blockdrop.pretrain")
def pretrain_stage(ctx: StageContext) -> StageResult:
    """Inputs train, val (shard splits). Params: PretrainConfig fields + seed, num_classes, debug."""
    from frugalcv.models import build_model
    from frugalcv.workflows.blockdrop.pretrain import PretrainConfig, classification_accuracy, pretrain

    config = step_config(ctx, PretrainConfig, extra=("image_size",))
    torch.manual_seed(int(ctx.param("seed", 0)))
    size = ctx.param("image_size", None)
    size = int(size) if size else None
    x_train, y_train, mean, std = load_data(ctx, "train", size=size)
    x_val, y_val, _, _ = load_data(ctx, "val", mean, std, size)
    debug = bool(ctx.param("debug", False))
    num_classes = int(ctx.param("num_classes", 10))
    resnet = build_model(config.model, num_classes=num_classes, debug=debug)
    data = train_batches(ctx, x_train, y_train, config.batch_size, config.translate)
    if ctx.engine == "deepspeed":
        pretrain_deepspeed(ctx, config, resnet, data)
    else:
        pretrain(distributed(resnet, ctx), data, config, hooks=resume_hooks(ctx, resnet), printer=ctx.printer)
    accuracy = classification_accuracy(resnet, eval_batches(ctx, x_val, y_val)(0))
    ctx.printer(f"pretrained {config.model}: val accuracy {100 * accuracy:.2f}%")
    if not ctx.is_main:
        return StageResult()
    url = ctx.path("model.pt")
    save_state(url, {"model": config.model, "num_classes": num_classes, "debug": debug, "mean": mean,
                     "std": std, "image_size": size, "resnet": resnet.state_dict()})
    return StageResult(metrics={"val_accuracy": accuracy}, outputs={"checkpoint": url})


def pretrain_deepspeed(ctx: StageContext, config, resnet: nn.Module, data) -> None:
    """``pretrain`` with a DeepSpeed engine (ZeRO 0-2; CPU: gloo + ``DS_ACCELERATOR=cpu``): the same
    task, SGD + Nesterov and warm-up/cosine schedule; resumable from DeepSpeed checkpoints."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from frugalcv.slurm.distributed import init_distributed
    from frugalcv.slurm.preemption import PreemptionHook
    from frugalcv.workflows.blockdrop.pretrain import ClassificationTask, cosine_schedule
    from frugalcv.workflows.engine.engines import (
        DeepSpeedCheckpointHook,
        DeepSpeedTrainer,
        build_deepspeed,
        load_deepspeed,
    )
    from frugalcv.workflows.engine.trainer import LoggingHook

    ds = ctx.deepspeed or {}
    zero = int(ds.get("zero_stage", 0))
    if zero == 3 or ds.get("offload_param"):
        raise ConfigError(f"stages.{ctx.stage}.deepspeed.zero_stage=3: blockdrop.pretrain saves full state dicts "
                          "from every rank's module; use zero_stage 0, 1 or 2")
    init_distributed()  # DeepSpeed needs a process group; alone this is a world of one
    extra = dict(ds.get("config") or {})
    if ds.get("offload_optimizer"):
        extra.setdefault("zero_optimization", {"stage": zero, "offload_optimizer": {"device": "cpu"}})
    extra.setdefault("zero_allow_untested_optimizer", True)  # torch SGD under ZeRO 1-2: sharded states only
    steps, warmup = config.epochs * len(data), int(config.warmup_epochs * len(data))
    engine = build_deepspeed(
        resnet, {"type": "SGD", "params": {"lr": config.lr, "momentum": config.momentum,
                                           "weight_decay": config.weight_decay, "nesterov": True}},
        zero, micro_batch_size=config.batch_size // ctx.world_size, extra=extra or None,
        lr_scheduler=lambda optimizer: cosine_schedule(optimizer, steps, warmup))
    saver = DeepSpeedCheckpointHook(ctx.checkpoint_dir, engine, every=ctx.checkpoint_every or None, save_at_end=False)
    trainer = DeepSpeedTrainer(ClassificationTask(engine, config.label_smoothing, config.drop_path, config.drop_path_rule), engine, data,
                               [LoggingHook(config.log_every, prefix="pretrain ", printer=ctx.printer),
                                MetricsHook(ctx), saver,
                                StopHook(ctx, saver), PreemptionHook(saver)], epochs=config.epochs)
    if os.path.exists(os.path.join(ctx.checkpoint_dir, "latest")):
        load_deepspeed(engine, ctx.checkpoint_dir, trainer=trainer)
        ctx.printer(f"resumed from DeepSpeed checkpoint in {ctx.checkpoint_dir} (step {trainer.step})")
    try:
        trainer.train()
    finally:
        if ctx.world_size == 1:
            from frugalcv.slurm.distributed import cleanup

            cleanup()  # the world of one made for DeepSpeed
    resnet.eval()


@register_stage("blockdrop.curriculum")
def curriculum_stage(ctx: StageContext) -> StageResult:
    """Inputs checkpoint (pretrain), train, val. Params: CurriculumConfig fields + policy, seed."""
    ddp_only(ctx)
    from frugalcv.models import build_model
    from frugalcv.workflows.blockdrop.curriculum import CurriculumConfig, learn_policy
    from frugalcv.workflows.blockdrop.evaluate import evaluate_policy

    config = step_config(ctx, CurriculumConfig, extra=("policy",))
    torch.manual_seed(int(ctx.param("seed", 0)))
    state = load_state(ctx.input("checkpoint"))
    resnet, _ = _models(state, ctx)
    x_train, y_train, _, _ = load_data(ctx, "train", state["mean"], state["std"], state.get("image_size"))
    policy_model = ctx.param("policy", "policy_resnet8_cifar")
    policy = build_model(policy_model, num_blocks=resnet.num_blocks, debug=bool(state["debug"]))
    history = learn_policy(resnet, distributed(policy, ctx), train_batches(ctx, x_train, y_train, config.batch_size),
                           config, hooks=resume_hooks(ctx, policy), printer=ctx.printer)
    if not ctx.is_main:
        return StageResult()
    metrics = last_row(history, ("reward", "accuracy_greedy", "blocks_greedy"), "train_")
    if "val" in ctx.inputs:
        x_val, y_val, _, _ = load_data(ctx, "val", state["mean"], state["std"], state.get("image_size"))
        ev = evaluate_policy(resnet, policy, eval_batches(ctx, x_val, y_val), baselines=False,
                             seed=int(ctx.param("seed", 0)))
        metrics.update({f"val_{k}": ev.metrics[k] for k in ("accuracy", "blocks_mean", "flops_speedup")})
    url = ctx.path("model.pt")
    save_state(url, {**state, "resnet": resnet.state_dict(), "policy_model": policy_model,
                     "policy": policy.state_dict()})
    return StageResult(metrics=metrics, outputs={"checkpoint": url})


@register_stage("blockdrop.finetune")
def finetune_stage(ctx: StageContext) -> StageResult:
    """Inputs checkpoint (curriculum), train, val. Params: FinetuneConfig fields + seed."""
    ddp_only(ctx)
    from frugalcv.workflows.blockdrop.evaluate import evaluate_policy
    from frugalcv.workflows.blockdrop.finetune import FinetuneConfig, finetune

    config = step_config(ctx, FinetuneConfig)
    torch.manual_seed(int(ctx.param("seed", 0)))
    state = load_state(ctx.input("checkpoint"))
    resnet, policy = _models(state, ctx)
    if policy is None:
        raise ConfigError(f"stages.{ctx.stage}.inputs.checkpoint: {ctx.input('checkpoint')} holds no policy; "
                          "give the curriculum stage's checkpoint")
    x_train, y_train, _, _ = load_data(ctx, "train", state["mean"], state["std"], state.get("image_size"))
    both = nn.ModuleDict({"resnet": resnet, "policy": policy})  # what the resumable checkpoint holds
    history = finetune(distributed(resnet, ctx, find_unused=True), distributed(policy, ctx),
                       train_batches(ctx, x_train, y_train, config.batch_size, config.translate), config,
                       hooks=resume_hooks(ctx, both), printer=ctx.printer)
    if not ctx.is_main:
        return StageResult()
    metrics = last_row(history, ("ce", "reward", "accuracy_greedy", "blocks_greedy"), "train_")
    if "val" in ctx.inputs:
        x_val, y_val, _, _ = load_data(ctx, "val", state["mean"], state["std"], state.get("image_size"))
        ev = evaluate_policy(resnet, policy, eval_batches(ctx, x_val, y_val), baselines=False,
                             seed=int(ctx.param("seed", 0)))
        metrics.update({f"val_{k}": ev.metrics[k] for k in ("accuracy", "blocks_mean", "flops_speedup")})
    url = ctx.path("model.pt")
    save_state(url, {**state, "resnet": resnet.state_dict(), "policy": policy.state_dict()})
    return StageResult(metrics=metrics, outputs={"checkpoint": url})


EVALUATE_PARAMS = ("batch_size", "seed", "baselines", "title", "gamma")
KEY_METRICS = ("accuracy", "blocks_mean", "flops_mean", "flops_speedup", "full_accuracy", "unique_policies",
               "firstk_accuracy", "randomk_accuracy", "distributek_accuracy")


@register_stage("blockdrop.evaluate")
def evaluate_stage(ctx: StageContext) -> StageResult:
    """Inputs checkpoint (finetuned), test, optional before (curriculum checkpoint). Writes report.md,
    figures and metrics.json. Params: batch_size, seed, baselines, title."""
    from frugalcv.workflows.blockdrop import report as R
    from frugalcv.workflows.blockdrop.data import TensorBatches
    from frugalcv.workflows.blockdrop.evaluate import evaluate_policy

    unknown = sorted(set(ctx.params) - set(EVALUATE_PARAMS))
    if unknown:
        raise ConfigError(f"stages.{ctx.stage}.params: unknown key(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(EVALUATE_PARAMS)}")
    if not ctx.is_main:
        return StageResult()
    seed = int(ctx.param("seed", 0))
    state = load_state(ctx.input("checkpoint"))
    resnet, policy = _models(state, ctx)
    if policy is None:
        raise ConfigError(f"stages.{ctx.stage}.inputs.checkpoint: {ctx.input('checkpoint')} holds no policy")
    x_test, y_test, _, _ = load_data(ctx, "test", state["mean"], state["std"], state.get("image_size"))
    data = TensorBatches(x_test, y_test, int(ctx.param("batch_size", 256)))
    baselines = bool(ctx.param("baselines", True))
    after = evaluate_policy(resnet, policy, data, baselines=baselines, seed=seed)
    title = ctx.param("title", f"BlockDrop ({state['model']}), pipeline {ctx.pipeline}, run {ctx.run_id}")
    gamma = float(ctx.param("gamma", float("nan")))
    storage.url_to_fs(ctx.output_dir)[0].makedirs(ctx.output_dir, exist_ok=True)
    metrics = {k: after.metrics[k] for k in KEY_METRICS if k in after.metrics}
    rows = [("BlockDrop", after.metrics)]
    if "before" in ctx.inputs and baselines:
        before_resnet, before_policy = _models(load_state(ctx.input("before")), ctx)
        before = evaluate_policy(before_resnet, before_policy, data, seed=seed)
        R.write_report(ctx.output_dir, title=title, before=before, after=after, gamma=gamma)
        metrics.update({f"before_{k}": before.metrics[k] for k in KEY_METRICS if k in before.metrics})
        rows = [("BlockDrop, before finetuning", before.metrics), ("BlockDrop, after finetuning", after.metrics)]
        ctx.printer(R.results_table(rows))
        ctx.printer(R.baselines_table(before.metrics, after.metrics))
    else:
        figures = [
            R.plot_accuracy_vs_flops([("BlockDrop", after.metrics)], ctx.path("accuracy_vs_flops.png")),
            R.plot_block_usage({"BlockDrop": after}, ctx.path("block_usage.png")),
            R.plot_policies_per_class(after, ctx.path("policies_per_class.png")),
        ]
        parts = [f"# {title}", "## Results", R.results_table([("BlockDrop", after.metrics)])]
        if baselines:
            parts += ["## Heuristic baselines at the same K", R.baselines_table(after.metrics)]
        parts += ["## Figures", "\n".join(f"![{f.rsplit('/', 1)[-1]}]({f.rsplit('/', 1)[-1]})" for f in figures)]
        with open(ctx.path("report.md"), "w") as f:
            f.write("\n\n".join(parts) + "\n")
        ctx.printer(R.results_table(rows))
    with open(ctx.path("metrics.json"), "w") as f:
        json.dump(after.metrics, f, indent=1, sort_keys=True)
    ctx.tracker.log_artifact(ctx.path("report.md"), "report")
    return StageResult(metrics=metrics, outputs={"report": ctx.path("report.md"), "metrics": ctx.path("metrics.json")})
