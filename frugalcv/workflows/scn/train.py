"""SCN's training steps: the backbone's pretraining (cross-entropy) and the spatial context
objective (Eq. 5.2), the test regression error per epoch and the reconstructions of Fig. 5.3.

Batches are ``to_float_pairs``'s: (X_i, X_j normalised, o_ij, class of X_i, class of X_j, X_i in
[0, 1]) on the device.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from frugalcv.models.scn import SpatialContextNet, context_loss
from frugalcv.workflows.kit import HookBase, LRScheduleHook, unwrap


class ClassifierTask:
    """The backbone as a classifier (fc8 over fc7): cross-entropy and top-1."""

    def __init__(self, model: nn.Module):
        self.model = model

    def training_step(self, batch):
        images, labels = batch
        logits = self.model(images)
        loss = F.cross_entropy(logits.float(), labels)
        return {"loss": loss, "top1": (logits.argmax(1) == labels).float().mean()}


class ContextTask:
    """Eq. 5.2: ||g(X_i; W_T) - h3(X_j, o_ij)||^2, the top stream frozen."""

    def __init__(self, model: nn.Module):
        self.model = model

    def training_step(self, batch):
        x_i, x_j, offset, _, _, pixels_i = batch
        target = unwrap(self.model).target(x_i, pixels_i)
        loss = context_loss(self.model(x_j, offset), target)
        return {"loss": loss, "mse": loss.detach()}


@torch.no_grad()
def regression_error(net: SpatialContextNet, batches: Iterable) -> dict[str, float]:
    """Mean over the pairs of ||target - h3||^2 (``test_mse``); restores the train/eval mode."""
    was_training = net.training
    net.eval()
    total, count = 0.0, 0
    try:
        for x_i, x_j, offset, _, _, pixels_i in batches:
            err = (net.target(x_i, pixels_i) - net(x_j, offset).float()).pow(2).sum(1)
            total, count = total + float(err.sum()), count + len(err)
    finally:
        net.train(was_training)
    return {"test_mse": total / max(1, count)}


def milestone_schedule(optimizer, milestones_epochs: list[int], gamma: float, steps_per_epoch: int) -> HookBase:
    """lr x gamma after each milestone epoch (the recipe's 1e-3 -> 1e-4 after 100 epochs), stepped per step."""
    steps = [m * max(1, steps_per_epoch) for m in milestones_epochs]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: gamma ** bisect.bisect_right(steps, step))
    return LRScheduleHook(schedule)


def examples_by_kind(batches: Iterable, kinds: list[int]) -> dict[int, tuple]:
    """The first test pair of each partner class in ``kinds``: class -> (X_i, X_j, o, X_i in [0, 1])."""
    found: dict[int, tuple] = {}
    for x_i, x_j, offset, a_label, _, pixels_i in batches:
        for n, label in enumerate(a_label.tolist()):
            if label in kinds and label not in found:
                found[label] = (x_i[n:n + 1], x_j[n:n + 1], offset[n:n + 1], pixels_i[n:n + 1])
        if len(found) == len(kinds):
            break
    return found


def to_uint8(flat: torch.Tensor, size: int) -> torch.Tensor:
    return (flat.float().clamp(0, 1) * 255).round().to(torch.uint8).view(-1, 3, size, size).cpu()


class ReconstructionHook(HookBase):
    """``target: pixels``: after every epoch, the predicted X_i of one test pair per partner class
    (Fig. 5.3), and once more at the end of a run stopped mid-epoch; the frames are part of the
    checkpoint, so a resumed run keeps the earlier ones."""

    def __init__(self, net: SpatialContextNet, examples: dict[int, tuple]):
        self.net, self.kinds = net, sorted(examples)
        self.inputs = [examples[k] for k in self.kinds]
        self.truth = torch.cat([to_uint8(net.target(x_i, p).float(), net.target_size)
                                for x_i, _, _, p in self.inputs]) if self.inputs else None
        self.epochs: list[int] = []
        self.frames: list[torch.Tensor] = []
        self._last_step = -1

    def after_epoch(self) -> None:
        self._record()

    def after_train(self) -> None:
        if not self.trainer.failed:  # a run that ends mid-epoch (max_steps) shows where it stopped
            self._record()

    @torch.no_grad()
    def _record(self) -> None:
        if not self.inputs or self._last_step == self.trainer.step:
            return
        self._last_step = self.trainer.step
        was_training = self.net.training
        self.net.eval()
        try:
            out = torch.cat([to_uint8(self.net(x_j, o), self.net.target_size) for _, x_j, o, _ in self.inputs])
        finally:
            self.net.train(was_training)
        self.epochs.append(self.trainer.epoch)
        self.frames.append(out)

    def result(self) -> dict | None:
        if not self.frames:
            return None
        return {"kinds": self.kinds, "epochs": list(self.epochs), "truth": self.truth,
                "frames": torch.stack(self.frames)}

    def state_dict(self) -> dict:
        return {"epochs": list(self.epochs), "frames": list(self.frames), "last_step": self._last_step}

    def load_state_dict(self, state: dict) -> None:
        self.epochs, self.frames = list(state["epochs"]), list(state["frames"])
        self._last_step = int(state.get("last_step", -1))
