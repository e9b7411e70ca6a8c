"""LiteEval's training step: the coarse/fine LSTMs and the gate learned jointly on Eq. 4.5.

Every step runs the network over a batch of padded feature sequences with straight-through
Gumbel-softmax decisions at the current temperature τ (Eqs. 4.6–4.7), then minimises
``CE(p_T) + λ·(fine fraction − γ)²``. ``TemperatureHook`` anneals τ exponentially from
``tau_start`` to ``tau_end`` over the run and keeps it in the checkpoint. The always-fine
baseline is the same network with every decision forced to 1 (the gate unused, no gate term).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from frugalcv.models.liteeval import always_fine_decisions
from frugalcv.workflows.kit import HookBase, LRScheduleHook, unwrap
from frugalcv.workflows.liteeval.params import TrainParams


def prepare_features(batch: dict, normalize: str, norm: float) -> tuple[Tensor, Tensor]:
    """(coarse, fine) [B, T, D] of a batch, each frame's vector L2-normalised to ``norm`` with
    ``normalize: l2`` (padded all-zero frames stay zero)."""
    coarse, fine = batch["coarse"].float(), batch["features"].float()
    if normalize == "l2":
        coarse, fine = norm * F.normalize(coarse, dim=-1), norm * F.normalize(fine, dim=-1)
    return coarse, fine


def temperature(step: int, total_steps: int, start: float, end: float) -> float:
    """τ at ``step`` of ``total_steps``: ``start·(end/start)^(step/(total−1))``, ``end`` from the last step on."""
    if total_steps <= 1:
        return end
    return start * (end / start) ** (min(step, total_steps - 1) / (total_steps - 1))


class LiteEvalTask:
    """One optimizer step of LiteEval (``gate: learned``) or of its always-fine baseline."""

    def __init__(self, model: nn.Module, params: TrainParams):
        self.model, self.params = model, params
        self.tau = params.tau_start  # set before every step by TemperatureHook

    def training_step(self, batch: dict) -> dict:
        p = self.params
        coarse, fine = prepare_features(batch, p.normalize, p.feature_norm)
        lengths, labels = batch["length"], batch["label"]
        self.model.train()
        if p.gate == "always_fine":
            forced = always_fine_decisions(lengths, coarse.shape[1])
            out = self.model(coarse, fine, lengths, decisions=forced)
            losses = unwrap(self.model).loss(out, labels, gamma=1.0, lam=0.0)  # CE alone
        else:
            out = self.model(coarse, fine, lengths, tau=self.tau, mode="sample", noise_scale=p.noise_scale)
            losses = unwrap(self.model).loss(out, labels, gamma=p.gamma, lam=p.lam)  # Eq. 4.5
        with torch.no_grad():
            top1 = (out.final_logits.argmax(dim=1) == labels).float().mean()
        return {**losses, "top1": top1}


class TemperatureHook(HookBase):
    """Sets the task's Gumbel-softmax temperature before every step (exponential annealing) and
    logs it; the schedule (τ, total steps) is part of the checkpoint."""

    def __init__(self, task: LiteEvalTask, total_steps: int):
        self.task, self.total_steps = task, max(1, int(total_steps))

    def before_step(self) -> None:
        p = self.task.params
        self.task.tau = temperature(self.trainer.step, self.total_steps, p.tau_start, p.tau_end)

    def after_step(self) -> None:
        if self.task.params.gate == "learned":
            self.trainer.last_output["tau"] = self.task.tau

    def state_dict(self) -> dict:
        return {"tau": float(self.task.tau), "total_steps": self.total_steps}

    def load_state_dict(self, state: dict) -> None:
        self.task.tau, self.total_steps = float(state["tau"]), int(state["total_steps"])


def lr_hooks(opt: torch.optim.Optimizer, params: TrainParams, total_steps: int) -> list[HookBase]:
    """The learning-rate schedule as a hook (none for ``constant``); ``cosine`` reaches 0 at ``total_steps``."""
    if params.lr_schedule == "constant":
        return []
    total = max(1, int(total_steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total)))
    return [LRScheduleHook(schedule)]


def optimizer(net: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    """Adam over the network's trainable parameters (the dissertation's; ``weight_decay`` > 0: AdamW)."""
    trained = [q for q in net.parameters() if q.requires_grad]
    if params.weight_decay:
        return torch.optim.AdamW(trained, lr=params.lr, weight_decay=params.weight_decay)
    return torch.optim.Adam(trained, lr=params.lr)
