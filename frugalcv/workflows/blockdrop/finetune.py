"""Stage 3: joint finetuning of the ResNet and the policy network.

The ResNet (BN in train mode) learns to classify under the policies it will be run with:
cross-entropy of its prediction under the sampled u, plus the self-critical policy-gradient
term of Eq. 2.6 for the policy network, both in one Adam step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from frugalcv.errors import ConfigError
from frugalcv.workflows.blockdrop import policy as P
from frugalcv.workflows.kit import HookBase, LoggingHook, Trainer


@dataclass(kw_only=True)
class FinetuneConfig:
    """Joint finetuning. The paper: Adam, batch 256 (CIFAR) / 320 (ImageNet), lr 1e-4 / 1e-5,
    α = 0.8 kept, no entropy bonus (reference code)."""

    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-4
    #: the policy network's learning rate (None: ``lr``, as in the paper)
    policy_lr: float | None = None
    alpha: float = 0.8
    gamma: float = 5.0
    entropy_weight: float = 0.0
    #: training augmentation (the pretrain stage's ``augment`` recipe): pad-crop pixels, flips
    translate: int = 0
    hflip: bool = False
    seed: int = 0
    eval_batch_size: int = 256
    log_every: int = 20

    def __post_init__(self):
        if self.epochs < 1:
            raise ConfigError(f"finetune.epochs={self.epochs}: must be >= 1")
        if self.batch_size < 2:
            raise ConfigError(f"finetune.batch_size={self.batch_size}: BatchNorm needs >= 2 images per batch")
        if not 0.5 < self.alpha <= 1:
            raise ConfigError(f"finetune.alpha={self.alpha}: must be in (0.5, 1]; the paper uses 0.8")
        if self.gamma < 0:
            raise ConfigError(f"finetune.gamma={self.gamma}: the penalty is -gamma, so give gamma >= 0")
        if self.policy_lr is not None and self.policy_lr <= 0:
            raise ConfigError(f"finetune.policy_lr={self.policy_lr}: must be > 0, or null to use lr")
        if self.lr <= 0 or self.entropy_weight < 0:
            raise ConfigError(f"finetune lr={self.lr} must be > 0 and entropy_weight={self.entropy_weight} >= 0")


class FinetuneTask:
    def __init__(self, resnet: nn.Module, policy_net: nn.Module, config: FinetuneConfig):
        self.resnet, self.policy_net, self.config = resnet, policy_net, config
        for p in resnet.parameters():
            p.requires_grad_(True)

    def training_step(self, batch) -> dict:
        images, labels = batch
        cfg = self.config
        self.resnet.train()
        self.policy_net.train()
        probs = self.policy_net(images)
        bounded = P.bound_probs(probs, cfg.alpha)
        sampled = P.sample_policy(bounded)
        greedy = P.greedy_policy(probs)
        logits = self.resnet(images, keep=sampled)
        with torch.no_grad():
            logits_greedy = self.resnet(images, keep=greedy)
        reward_sampled = P.policy_reward(sampled, logits.argmax(1) == labels, cfg.gamma)  # Eq. 2.3
        reward_greedy = P.policy_reward(greedy, logits_greedy.argmax(1) == labels, cfg.gamma)
        advantage = P.self_critical_advantage(reward_sampled, reward_greedy)  # Eq. 2.6
        policy_loss = P.policy_gradient_loss(bounded, sampled, advantage, None, cfg.entropy_weight)
        ce = F.cross_entropy(logits, labels)
        return {
            # the two terms reach disjoint parameters (the policy's output is sampled), so
            # under Adam their relative scale does not matter
            "loss": ce + policy_loss,
            "ce": ce,
            "policy_loss": policy_loss,
            "reward": reward_sampled.mean(),
            "accuracy_greedy": (logits_greedy.argmax(1) == labels).float().mean(),
            "blocks_greedy": P.blocks_kept(greedy).mean(),
        }


def finetune_optimizer(resnet: nn.Module, policy_net: nn.Module, config: FinetuneConfig) -> torch.optim.Optimizer:
    """One Adam over both networks; the policy may have its own learning rate."""
    return torch.optim.Adam([
        {"params": list(resnet.parameters())},
        {"params": list(policy_net.parameters()), "lr": config.policy_lr or config.lr},
    ], lr=config.lr)


def finetune(resnet: nn.Module, policy_net: nn.Module, train_data, config: FinetuneConfig, *,
             hooks: Iterable[HookBase] = (), printer=print) -> list[dict[str, float]]:
    """Train both networks in place; returns the logged history."""
    task = FinetuneTask(resnet, policy_net, config)
    optimizer = finetune_optimizer(resnet, policy_net, config)
    logger = LoggingHook(config.log_every, prefix="finetune ", printer=printer)
    Trainer(task, optimizer, train_data, [logger, *hooks], epochs=config.epochs).train()
    resnet.eval()
    policy_net.eval()
    return logger.history
