"""Stage 1: train the full ResNet as an ordinary classifier (all blocks on)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from frugalcv.errors import ConfigError
from frugalcv.workflows.engine.trainer import EvalHook, HookBase, LoggingHook, LRScheduleHook, Trainer


@dataclass(kw_only=True)
class PretrainConfig:
    """SGD + Nesterov momentum with warm-up and cosine decay (He et al.'s CIFAR recipe, shortened)."""

    model: str = "cifar_resnet32"
    epochs: int = 12
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    translate: int = 2  # random-shift augmentation in pixels
    #: stochastic depth (Huang et al. 2016): each block is dropped per image with probability
    #: ``drop_path`` ("uniform") or drop_path * (k + 1) / K ("linear", Huang's rule), through the
    #: same shortcut-only path as BlockDrop. Not in the dissertation's recipe (0 = off); on a tiny
    #: dataset it makes the ResNet tolerate the dropped blocks the policy will later choose.
    drop_path: float = 0.0
    drop_path_rule: str = "uniform"
    log_every: int = 20

    def __post_init__(self):
        if self.epochs < 1:
            raise ConfigError(f"pretrain.epochs={self.epochs}: must be >= 1")
        if self.batch_size < 2:
            raise ConfigError(f"pretrain.batch_size={self.batch_size}: BatchNorm needs >= 2 images per batch")
        if not 0 < self.lr <= 1:
            raise ConfigError(f"pretrain.lr={self.lr}: use a value in (0, 1], e.g. 0.1 for SGD")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f"pretrain.warmup_epochs={self.warmup_epochs}: must be in [0, epochs={self.epochs})")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"pretrain.label_smoothing={self.label_smoothing}: must be in [0, 1)")
        if not 0 <= self.drop_path < 1:
            raise ConfigError(f"pretrain.drop_path={self.drop_path}: must be in [0, 1), e.g. 0.1; 0 turns it off")
        if self.drop_path_rule not in ("uniform", "linear"):
            raise ConfigError(f"pretrain.drop_path_rule={self.drop_path_rule!r}: use 'uniform' or 'linear'")


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
    correct = total = 0
    for images, labels in batches:
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
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=True)
    schedule = cosine_schedule(optimizer, config.epochs * steps_per_epoch,
                               int(config.warmup_epochs * steps_per_epoch))
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
