"""Stage 1: train the full ResNet as an ordinary classifier (all blocks on)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from frugalcv.workflows.kit import EvalHook, FieldError, HookBase, LoggingHook, LRScheduleHook, Trainer


@dataclass(kw_only=True)
class PretrainConfig:
    """Train the full ResNet: SGD (Nesterov by default) with a cosine or step schedule.

    The defaults are a shortened CIFAR recipe; the paper recipes (He et al.: lr 0.1, momentum 0.9,
    weight decay 1e-4, lr / 10 at epochs 80 and 120, 0.01 warm-up for ResNet-110) set
    ``lr_schedule: step``. ``epochs: 0`` with ``weights`` only loads (e.g. torchvision's ImageNet
    ResNet-101), checks validation accuracy and writes the checkpoint.
    """

    model: str = "cifar_resnet32"
    num_classes: int = 10
    #: tiny flavour of the model (tests)
    debug: bool = False
    epochs: int = 12
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_schedule: Literal["cosine", "step"] = "cosine"
    #: ``step``: epochs at which the lr is multiplied by ``lr_decay``
    lr_milestones: list[int] = field(default_factory=list)
    lr_decay: float = 0.1
    #: warm-up epochs: linear from 0 to ``lr``, or constant ``warmup_lr`` when it is set
    warmup_epochs: float = 1.0
    warmup_lr: float | None = None
    label_smoothing: float = 0.0
    #: torchvision state dict (path or fsspec URL) to start from; nothing is downloaded
    weights: str | None = None
    #: preprocessing (``transforms.py``): ``crop`` pads by ``translate`` pixels and crops, ``imagenet``
    #: is RandomResizedCrop / resize + center crop; ``hflip`` adds horizontal flips in training
    augment: Literal["crop", "imagenet"] = "crop"
    image_size: int | None = None
    translate: int = 2
    hflip: bool = False
    #: per-channel statistics: streamed from up to ``stats_samples`` training images, or a known set
    normalize: Literal["dataset", "imagenet", "cifar10", "cifar100"] = "dataset"
    stats_samples: int = 10000
    #: stochastic depth (Huang et al. 2016): each block is dropped per image with probability
    #: ``drop_path`` ("uniform") or drop_path * (k + 1) / K ("linear", Huang's rule), through the
    #: same shortcut-only path as BlockDrop. Not in the dissertation's recipe (0 = off); on a tiny
    #: dataset it makes the ResNet tolerate the dropped blocks the policy will later choose.
    drop_path: float = 0.0
    drop_path_rule: Literal["uniform", "linear"] = "uniform"
    seed: int = 0
    eval_batch_size: int = 256
    log_every: int = 20

    def __post_init__(self):
        if self.epochs < 0 or (self.epochs == 0 and not self.weights):
            raise FieldError("epochs", f"{self.epochs}: must be >= 1 (0 only with weights: load, evaluate, save)")
        if self.batch_size < 2:
            raise FieldError("batch_size", f"{self.batch_size}: BatchNorm needs >= 2 images per batch")
        if not 0 < self.lr <= 1:
            raise FieldError("lr", f"{self.lr}: use a value in (0, 1], e.g. 0.1 for SGD")
        if self.epochs and not 0 <= self.warmup_epochs < self.epochs:
            raise FieldError("warmup_epochs", f"{self.warmup_epochs}: must be in [0, epochs={self.epochs})")
        if self.warmup_lr is not None and not 0 < self.warmup_lr <= 1:
            raise FieldError("warmup_lr", f"{self.warmup_lr}: use a value in (0, 1], or null for a linear warm-up")
        if self.lr_schedule == "step" and not self.lr_milestones:
            raise FieldError("lr_milestones", "lr_schedule step needs milestone epochs, e.g. [80, 120]")
        if sorted(self.lr_milestones) != self.lr_milestones or any(m < 1 for m in self.lr_milestones):
            raise FieldError("lr_milestones", f"{self.lr_milestones}: increasing epochs >= 1")
        if not 0 < self.lr_decay <= 1:
            raise FieldError("lr_decay", f"{self.lr_decay}: must be in (0, 1], e.g. 0.1")
        if not 0 <= self.label_smoothing < 1:
            raise FieldError("label_smoothing", f"{self.label_smoothing}: must be in [0, 1)")
        if self.drop_path_rule not in ("uniform", "linear"):
            raise FieldError("drop_path_rule", f"{self.drop_path_rule!r}: use 'uniform' or 'linear'")
        if not 0 <= self.drop_path < 1:
            raise FieldError("drop_path", f"{self.drop_path}: must be in [0, 1), e.g. 0.1; 0 turns it off")
        if self.translate < 0 or (self.image_size is not None and self.image_size < 8):
            raise FieldError("image_size", f"{self.image_size} / translate {self.translate}: image_size >= 8, translate >= 0")
        if self.stats_samples < 1 or self.eval_batch_size < 1:
            raise FieldError("stats_samples", "stats_samples and eval_batch_size must be >= 1")


def lr_schedule(optimizer: torch.optim.Optimizer, config: PretrainConfig, steps_per_epoch: int):
    """The config's schedule as a per-step ``LambdaLR`` (warm-up, then cosine or steps)."""
    total, warmup = config.epochs * steps_per_epoch, int(config.warmup_epochs * steps_per_epoch)
    if config.lr_schedule == "cosine" and config.warmup_lr is None:
        return cosine_schedule(optimizer, total, warmup)
    milestones = [m * steps_per_epoch for m in config.lr_milestones]

    def factor(step: int) -> float:
        if step < warmup:
            return config.warmup_lr / config.lr if config.warmup_lr is not None else (step + 1) / warmup
        if config.lr_schedule == "step":
            return config.lr_decay ** sum(step >= m for m in milestones)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def pretrain_optimizer(model: nn.Module, config: PretrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay, nesterov=config.nesterov and config.momentum > 0)


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0):
    """Linear warm-up, then cosine decay to zero at ``total_steps``, as a ``LambdaLR``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def stochastic_depth_keep(batch_size: int, num_blocks: int, drop_path: float, rule: str = "uniform") -> torch.Tensor:
    """Random keep mask [B, K]: P(drop block k) = drop_path ("uniform") or drop_path·(k+1)/K ("linear")."""
    if rule == "linear":
        survival = 1.0 - drop_path * torch.arange(1, num_blocks + 1) / num_blocks
    else:
        survival = torch.full((num_blocks,), 1.0 - drop_path)
    return torch.bernoulli(survival.expand(batch_size, num_blocks))


class ClassificationTask:
    """Cross-entropy of the ResNet (all blocks, or stochastic depth); logs the batch accuracy."""

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0, drop_path: float = 0.0,
                 drop_path_rule: str = "uniform"):
        self.model, self.label_smoothing = model, label_smoothing
        self.drop_path, self.drop_path_rule = drop_path, drop_path_rule

    def training_step(self, batch) -> dict:
        images, labels = batch
        self.model.train()
        if self.drop_path > 0:
            num_blocks = getattr(self.model, "module", self.model).num_blocks
            keep = stochastic_depth_keep(len(labels), num_blocks, self.drop_path, self.drop_path_rule)
            keep = keep.to(images.device)
            logits = self.model(images, keep=keep)
        else:
            logits = self.model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return {"loss": loss, "accuracy": (logits.argmax(1) == labels).float().mean()}


@torch.no_grad()
def classification_accuracy(model: nn.Module, batches: Iterable) -> float:
    """Top-1 accuracy of the full network (eval mode) over one pass of ``batches``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    for images, labels in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        correct += int((model(images).argmax(1) == labels).sum())
        total += len(labels)
    model.train(was_training)
    return correct / max(total, 1)


def pretrain(model: nn.Module, train_data, config: PretrainConfig, *, eval_data=None,
             hooks: Iterable[HookBase] = (), printer=print) -> dict[str, float]:
    """Train ``model`` in place; returns ``{"accuracy": ...}`` on ``eval_data`` when given.

    ``train_data`` is a Trainer data source (iterable or ``epoch -> iterable``) with a
    ``len()`` of batches per epoch; ``eval_data`` is re-iterable or ``epoch -> iterable``.
    """
    steps_per_epoch = len(train_data)
    optimizer = pretrain_optimizer(model, config)
    schedule = lr_schedule(optimizer, config, steps_per_epoch)
    all_hooks: list[HookBase] = [LRScheduleHook(schedule), LoggingHook(config.log_every, prefix="pretrain ",
                                                                       printer=printer)]
    evaluator = None
    if eval_data is not None:
        def eval_fn():
            return {"accuracy": classification_accuracy(model, eval_data(0) if callable(eval_data) else eval_data)}
        evaluator = EvalHook(eval_fn, period=max(1, config.epochs // 4), prefix="pretrain eval", printer=printer)
        all_hooks.append(evaluator)
    task = ClassificationTask(model, config.label_smoothing, config.drop_path, config.drop_path_rule)
    Trainer(task, optimizer, train_data, [*all_hooks, *hooks], epochs=config.epochs).train()
    model.eval()
    return dict(evaluator.latest) if evaluator is not None else {}
