"""Stage 2: curriculum policy learning (Alg. 1) with the pretrained ResNet frozen.

Every step samples u ~ Bernoulli(s') from the α-bounded policy, runs the frozen ResNet
(eval mode, no gradient) once with u and once with the greedy ũ, and updates only the
policy network with the self-critical REINFORCE loss (Eqs. 2.3, 2.6).
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
class CurriculumConfig:
    """Policy learning. The paper's CIFAR recipe: Adam lr 1e-4, batch 2048, α = 0.8,
    entropy bonus 0.1 on the bounded probabilities (reference code)."""

    epochs: int = 60
    #: epochs per curriculum stage; stage t learns the last t + 1 blocks (1 = the paper's
    #: one stage per epoch; small datasets need a few passes per stage)
    epochs_per_stage: int = 1
    batch_size: int = 2048
    lr: float = 1e-4
    alpha: float = 0.8
    gamma: float = 5.0
    entropy_weight: float = 0.1
    #: run the frozen ResNet dynamically (``frozen_logits``: the sampled path reuses the greedy
    #: one up to their first difference, dropped blocks are skipped; same result as the masked
    #: forward up to float rounding)
    dynamic_execution: bool = True
    #: the policy network (a registered model) and an optional torchvision state dict to start it
    #: from (the ImageNet policy ResNet-10 from a ResNet-18); nothing is downloaded
    policy: str = "policy_resnet8_cifar"
    policy_weights: str | None = None
    #: training augmentation (the pretrain stage's ``augment`` recipe): pad-crop pixels, flips
    translate: int = 0
    hflip: bool = False
    seed: int = 0
    eval_batch_size: int = 256
    log_every: int = 20

    def __post_init__(self):
        if self.epochs < 1:
            raise ConfigError(f"curriculum.epochs={self.epochs}: must be >= 1")
        if self.epochs_per_stage < 1:
            raise ConfigError(f"curriculum.epochs_per_stage={self.epochs_per_stage}: must be >= 1 (1 = paper)")
        if self.batch_size < 2:
            raise ConfigError(f"curriculum.batch_size={self.batch_size}: must be >= 2 (policy BatchNorm)")
        if not 0.5 < self.alpha <= 1:
            raise ConfigError(f"curriculum.alpha={self.alpha}: must be in (0.5, 1]; the paper uses 0.8")
        if self.gamma < 0:
            raise ConfigError(f"curriculum.gamma={self.gamma}: the penalty is -gamma, so give gamma >= 0")
        if self.lr <= 0 or self.entropy_weight < 0:
            raise ConfigError(f"curriculum lr={self.lr} must be > 0 and entropy_weight={self.entropy_weight} >= 0")


def _dynamic_block(block: nn.Module, x: torch.Tensor, keep_B: torch.Tensor) -> torch.Tensor:
    """One block in eval mode, its residual branch run only on the rows that keep it."""
    kept = int(keep_B.sum())
    if kept == len(keep_B):
        return block(x)
    skipped = block.shortcut(x)
    if kept == 0:
        return skipped
    index = keep_B.nonzero().squeeze(1)
    x_kept = x.index_select(0, index)
    out = F.relu(block.residual(x_kept) + skipped.index_select(0, index))
    return skipped.index_copy(0, index, out)


@torch.no_grad()
def frozen_logits(resnet: nn.Module, images: torch.Tensor, greedy_BK: torch.Tensor,
                  sampled_BK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the frozen (eval-mode) ResNet under the greedy and the sampled policy.

    Exact, but cheaper than two forward passes: a sampled path shares the greedy path's
    activations up to the first block where the two policies differ (the curriculum's forced
    blocks always agree), and dropped blocks' residual branches are skipped.
    """
    resnet = getattr(resnet, "module", resnet)  # a (DDP-)wrapped network: use the module inside
    blocks = resnet.blocks
    greedy, sampled = greedy_BK.bool(), sampled_BK.bool()
    differs = greedy != sampled
    # block index where each row's sampled path leaves the greedy one (len(blocks): never)
    leaves = torch.where(differs.any(1), differs.float().argmax(1), len(blocks))
    x = resnet.stem(images)
    x_left, rows_left = None, torch.zeros(0, dtype=torch.long, device=images.device)
    for k, block in enumerate(blocks):
        joining = (leaves == k).nonzero().squeeze(1)
        if len(joining):
            start = x.index_select(0, joining)
            x_left = start if x_left is None else torch.cat([x_left, start])
            rows_left = torch.cat([rows_left, joining])
        if x_left is not None:
            x_left = _dynamic_block(block, x_left, sampled[rows_left, k])
        x = _dynamic_block(block, x, greedy[:, k])
    logits_greedy = resnet.fc(resnet.pool(x))
    logits_sampled = logits_greedy.clone()
    if x_left is not None:
        logits_sampled[rows_left] = resnet.fc(resnet.pool(x_left))
    return logits_greedy, logits_sampled


class CurriculumTask:
    """Policy-gradient step; ``learned`` (set by ``CurriculumHook``) is how many last blocks are learned."""

    def __init__(self, resnet: nn.Module, policy_net: nn.Module, config: CurriculumConfig):
        self.resnet, self.policy_net, self.config = resnet, policy_net, config
        self.num_blocks = int(getattr(resnet, "module", resnet).num_blocks)
        self.learned = self.num_blocks
        for p in resnet.parameters():
            p.requires_grad_(False)

    def training_step(self, batch) -> dict:
        images, labels = batch
        cfg = self.config
        self.resnet.eval()  # frozen: BN uses running statistics, no gradient
        self.policy_net.train()
        probs = self.policy_net(images)
        bounded = P.bound_probs(probs, cfg.alpha)
        mask = P.curriculum_mask(self.num_blocks, self.learned, device=probs.device)
        sampled = P.apply_curriculum(P.sample_policy(bounded), mask)
        greedy = P.apply_curriculum(P.greedy_policy(probs), mask)
        if cfg.dynamic_execution:
            logits_greedy, logits_sampled = frozen_logits(self.resnet, images, greedy, sampled)
        else:
            with torch.no_grad():
                logits_sampled, logits_greedy = self.resnet(
                    torch.cat([images, images]), keep=torch.cat([sampled, greedy])).chunk(2)
        correct_sampled = (logits_sampled.argmax(1) == labels).float()
        correct_greedy = (logits_greedy.argmax(1) == labels).float()
        reward_sampled = P.policy_reward(sampled, correct_sampled, cfg.gamma)  # Eq. 2.3
        reward_greedy = P.policy_reward(greedy, correct_greedy, cfg.gamma)
        advantage = P.self_critical_advantage(reward_sampled, reward_greedy)  # Eq. 2.6
        loss = P.policy_gradient_loss(bounded, sampled, advantage, mask, cfg.entropy_weight)
        return {
            "loss": loss,
            "reward": reward_sampled.mean(),
            "reward_greedy": reward_greedy.mean(),
            "accuracy_greedy": correct_greedy.mean(),
            "blocks_greedy": P.blocks_kept(greedy).mean(),
            "learned_blocks": self.learned,
        }


class CurriculumHook(HookBase):
    """Sets the task's learned-block count from the epoch (Alg. 1); stateless, derives it on resume."""

    def __init__(self, task: CurriculumTask, epochs_per_stage: int = 1):
        self.task, self.epochs_per_stage = task, epochs_per_stage

    def before_epoch(self) -> None:
        stage = self.trainer.epoch // self.epochs_per_stage
        self.task.learned = P.learned_blocks_at_epoch(stage, self.task.num_blocks)


def curriculum_optimizer(policy_net: nn.Module, config: CurriculumConfig) -> torch.optim.Optimizer:
    """Adam over the policy network only (the ResNet is frozen)."""
    return torch.optim.Adam(policy_net.parameters(), lr=config.lr)


def learn_policy(resnet: nn.Module, policy_net: nn.Module, train_data, config: CurriculumConfig, *,
                 hooks: Iterable[HookBase] = (), printer=print) -> list[dict[str, float]]:
    """Train ``policy_net`` in place against the frozen ``resnet``; returns the logged history."""
    task = CurriculumTask(resnet, policy_net, config)
    optimizer = curriculum_optimizer(policy_net, config)
    logger = LoggingHook(config.log_every, prefix="curriculum ", printer=printer)
    Trainer(task, optimizer, train_data, [CurriculumHook(task, config.epochs_per_stage), logger, *hooks],
            epochs=config.epochs).train()
    policy_net.eval()
    return logger.history
