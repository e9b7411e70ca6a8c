"""AdaFrame's training steps: the LSTM with its heads on Eq. 3.7, and the two baselines.

``AdaFrameTask`` runs ``steps`` (T_e) glimpses per video with locations drawn from the policy
(ℓ ~ N(a_t, σ²)), then minimises L_cls + λ·L_util − λ·J_sel (``AdaFrameNet.loss``).
``BaselinesTask`` trains AVGPOOLING on every frame and the LSTM on K frames drawn at random (K
drawn per batch from ``frames`` and all of them, so one LSTM serves every K); their losses are
summed, which trains the two independent networks exactly as apart.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import nn

from frugalcv.models.adaframe import gather_frames, sample_frames
from frugalcv.workflows import kit
from frugalcv.workflows.adaframe.data import prepare


class AdaFrameTask:
    """One optimizer step of AdaFrame: a sampled rollout and its loss (Eq. 3.7)."""

    def __init__(self, model: nn.Module, p, features: dict):
        self.model, self.p, self.features = model, p, features

    def training_step(self, batch: dict) -> dict:
        fine, coarse = prepare(batch, self.features)
        lengths, labels = batch["length"], batch["label"]
        self.model.train()
        rollout = self.model(fine, lengths, coarse, self.p.steps, sample=True)
        losses = kit.unwrap(self.model).loss(rollout, labels, gamma=self.p.gamma, lam=self.p.lam,
                                             cls_all_steps=self.p.cls_all_steps)
        with torch.no_grad():
            rows = torch.arange(labels.shape[0], device=labels.device)
            top1 = (rollout.logits[rows, rollout.last_step()].argmax(dim=1) == labels).float().mean()
        return {"loss": losses["loss"], **{k: v.detach() for k, v in losses.items() if k != "loss"}, "top1": top1}


def frame_counts(frames: list[int], max_frames: int) -> list[int]:
    """The K an LSTM baseline trains on: ``frames`` below ``max_frames``, and ``max_frames`` (all)."""
    return sorted({k for k in frames if k < max_frames} | {max_frames})


class BaselinesTask:
    """AVGPOOLING over every frame and the LSTM over K random frames, one summed loss."""

    def __init__(self, models: dict[str, nn.Module], frames: list[int], features: dict):
        self.models, self.features = models, features
        self.counts = frame_counts(frames, features["max_frames"])  # K drawn with `random`: seeded, in every checkpoint

    def training_step(self, batch: dict) -> dict:
        fine, _ = prepare(batch, self.features)
        lengths, labels = batch["length"], batch["label"]
        out: dict = {}
        total = fine.new_zeros(())
        for name, model in self.models.items():
            model.train()
            x, n = fine, lengths
            if name == "lstm":
                k = random.choice(self.counts)
                if k < fine.shape[1]:
                    x = gather_frames(fine, sample_frames(lengths, k, "random"))
                    n = torch.full_like(lengths, k)
            logits = model(x, n)
            loss = F.cross_entropy(logits.float(), labels)
            total = total + loss
            out[f"{name}_ce"] = loss.detach()
            out[f"{name}_top1"] = (logits.argmax(dim=1) == labels).float().mean().detach()
        return {"loss": total, **out}


def optimizer(params, p) -> torch.optim.Optimizer:
    """SGD with momentum (the dissertation's) or Adam; ``weight_decay`` is an L2 term in both."""
    if p.optimizer == "adam":
        return torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay)
    return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)


def schedule_hooks(opt: torch.optim.Optimizer, p, steps_per_epoch: int) -> list[kit.HookBase]:
    """``lr_schedule: cosine``: the learning rate decayed to 0 over ``epochs``; none when constant."""
    if p.lr_schedule == "constant":
        return []
    total = max(1, p.epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    return [kit.LRScheduleHook(schedule)]
