"""One optimiser, two update rules: SGD for the segmentation network, Adam for the generator's decoder.

End-to-end DCAN trains both networks on one loss. The decoder keeps the rule it was trained with in
the generator stage (Adam): its gradients are far smaller than the segmentation network's (the
encoder's features, and so ``l_gen``, are small), and Adam's per-weight normalisation makes its step
size independent of that scale. The engine, its checkpoints and LR schedules take one
``torch.optim.Optimizer``, so the rule is a key of each param group: ``"rule": "sgd"`` (momentum,
no dampening, L2 weight decay, as ``torch.optim.SGD``) or ``"rule": "adam"`` (as ``torch.optim.Adam``).
"""

from __future__ import annotations

import math

import torch

RULES = ("sgd", "adam")


class SGDAndAdam(torch.optim.Optimizer):
    """``torch.optim.SGD`` or ``torch.optim.Adam`` per param group (its ``rule``; default ``"sgd"``)."""

    def __init__(self, groups, *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        defaults = {"rule": "sgd", "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                    "betas": tuple(betas), "eps": eps}
        super().__init__(groups, defaults)
        for i, group in enumerate(self.param_groups):
            if group["rule"] not in RULES:
                raise ValueError(f"param group {i}: rule={group['rule']!r}; expected one of {', '.join(RULES)}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            update = self._sgd if group["rule"] == "sgd" else self._adam
            for p in group["params"]:
                if p.grad is not None:
                    grad = p.grad if not group["weight_decay"] else p.grad.add(p, alpha=group["weight_decay"])
                    update(p, grad, group, self.state[p])
        return loss

    @staticmethod
    def _sgd(p: torch.Tensor, grad: torch.Tensor, group: dict, state: dict) -> None:
        if group["momentum"]:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.detach().clone()
            else:
                state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
            grad = state["momentum_buffer"]
        p.add_(grad, alpha=-group["lr"])

    @staticmethod
    def _adam(p: torch.Tensor, grad: torch.Tensor, group: dict, state: dict) -> None:
        if "step" not in state:
            state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        state["step"] += 1
        beta1, beta2 = group["betas"]
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias1, bias2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
        denom = (state["exp_avg_sq"].sqrt() / math.sqrt(bias2)).add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / bias1)
