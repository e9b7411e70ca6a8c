"""Stage 1: train the full ResNet as an ordinary classifier (all blocks on)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from frugalcv.errors import ConfigError
from frugalcv.workflows.trainer import EvalHook, HookBase, LoggingHook, LRScheduleHook, Trainer


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


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0):
    """Linear warm-up, then cosine decay to zero at ``total_steps``, as a ``LambdaLR``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class ClassificationTask:
    """Cross-entropy on the full network; logs the batch accuracy."""

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0):
        self.model, self.label_smoothing = model, label_smoothing

    def training_step(self, batch) -> dict:
        images, labels = batch
        self.model.train()
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
    Trainer(ClassificationTask(model, config.label_smoothing), optimizer, train_data, [*all_hooks, *hooks],
            epochs=config.epochs).train()
    model.eval()
    return dict(evaluator.latest) if evaluator is not None else {}
