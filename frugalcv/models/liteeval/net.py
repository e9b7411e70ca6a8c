"""LiteEval's coarse-to-fine network over pre-extracted per-frame features (Ch. 4).

Per step t of a video (features ``v_t^c`` from a cheap CNN, ``v_t^f`` from an expensive one):

* coarse LSTM: ``(h_t^c, c_t^c) = LSTM_c(v_t^c, (h_{t−1}^c, c_{t−1}^c))``, always;
* gate: ``b_t = W_gᵀ [v_t^c, h_{t−1}^f, c_{t−1}^f]`` ∈ R² (Eq. 4.2), ``B_t`` ∈ {0, 1} from it
  (Gumbel-softmax in training, Eqs. 4.6–4.7; argmax at test; or a forced pattern for the baselines);
* fine LSTM (Eqs. 4.3–4.4), ``B_t = 1``:
  ``(h_t^f, c_t^f) = LSTM_f([v_t^c, v_t^f], (h_{t−1}^f, c_{t−1}^f))``; ``B_t = 0``: the fine state is
  synchronised, its first D_c dims taking ``(h_t^c, c_t^c)``;
* prediction ``p_T = softmax(W_p h_T^f)``; loss ``CE(p_T) + λ (mean_t B_t − γ)²`` (Eq. 4.5).

Padded steps (``t ≥ length``) change no state, read nothing (``B_t = 0``) and count in no mean (the public
code counts them). ``γ`` is the target fraction of fine reads (the public code's γ is that of skips), and
the Gumbel noise is unscaled by default (the public code scales it by 0.5: ``noise_scale``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from frugalcv.errors import ConfigError
from frugalcv.models.liteeval.gumbel import gumbel_softmax_decision, hard_decision
from frugalcv.models.registry import register_model

MODES = ("sample", "hard")


@dataclass
class Output:
    """One forward pass over a batch of (padded) videos."""

    logits: Tensor  # [B, T, C] fine-LSTM logits after each step (padding repeats the last valid step's)
    decisions: Tensor  # [B, T] float 0/1, 1 = the fine frame was read; 0 on padding
    mask: Tensor  # [B, T] bool, True on valid (unpadded) steps
    final_logits: Tensor  # [B, C] at each video's last valid step (offline prediction)
    gate_logits: Tensor  # [B, T, 2] (skip, fine) gate scores b_t; 0 on padding

    @property
    def lengths(self) -> Tensor:
        """Valid steps per video [B] (long)."""
        return self.mask.sum(dim=1)


def valid_mask(lengths_B: Tensor, steps: int) -> Tensor:
    """[B, T] bool: True where ``t < length``."""
    return torch.arange(steps, device=lengths_B.device)[None, :] < lengths_B[:, None]


class LiteEvalNet(nn.Module):
    """Coarse LSTM + gate + fine LSTM + classifier; ``forward`` reads [B, T, D] feature sequences."""

    def __init__(self, coarse_dim: int, fine_dim: int, num_classes: int, coarse_hidden: int = 512,
                 fine_hidden: int = 2048):
        super().__init__()
        if fine_hidden < coarse_hidden:
            raise ConfigError(
                f"fine_hidden ({fine_hidden}) must be >= coarse_hidden ({coarse_hidden}): the first "
                "coarse_hidden dims of the fine state take the coarse state when a fine frame is skipped")
        self.coarse_dim, self.fine_dim, self.num_classes = coarse_dim, fine_dim, num_classes
        self.coarse_hidden, self.fine_hidden = coarse_hidden, fine_hidden
        self.coarse_lstm = nn.LSTMCell(coarse_dim, coarse_hidden)
        self.fine_lstm = nn.LSTMCell(coarse_dim + fine_dim, fine_hidden)
        self.gate = nn.Linear(coarse_dim + 2 * fine_hidden, 2)  # Eq. 4.2; logits (skip, fine)
        self.classifier = nn.Linear(fine_hidden, num_classes)  # W_p

    @property
    def dims(self) -> dict[str, int]:
        """The constructor's sizes (``liteeval_flops(**net.dims)``)."""
        return {"coarse_dim": self.coarse_dim, "fine_dim": self.fine_dim, "coarse_hidden": self.coarse_hidden,
                "fine_hidden": self.fine_hidden, "num_classes": self.num_classes}

    def synchronise(self, h_f: Tensor, c_f: Tensor, h_c: Tensor, c_c: Tensor) -> tuple[Tensor, Tensor]:
        """Fine state after a skip: first D_c dims from the coarse state, the rest of the fine state kept."""
        d = self.coarse_hidden
        return torch.cat([h_c, h_f[:, d:]], dim=1), torch.cat([c_c, c_f[:, d:]], dim=1)

    def forward(self, coarse: Tensor, fine: Tensor, lengths: Tensor, *, tau: float = 1.0,
                mode: str = "sample", decisions: Tensor | None = None,
                generator: torch.Generator | None = None, noise_scale: float = 1.0) -> Output:
        """Run the T steps. ``decisions`` [B, T] forces the gate (baselines); otherwise ``mode`` "sample"
        draws straight-through Gumbel-softmax decisions at temperature ``tau``, "hard" takes the argmax."""
        batch, steps = self._check(coarse, fine, lengths, mode, decisions)
        mask = valid_mask(lengths, steps)
        forced = None if decisions is None else decisions.to(coarse.dtype) * mask
        h_c = c_c = coarse.new_zeros(batch, self.coarse_hidden)
        h_f = c_f = coarse.new_zeros(batch, self.fine_hidden)
        hidden, chosen, gates = [], [], []
        for t in range(steps):
            valid = mask[:, t, None]
            x_c = coarse[:, t]
            new_h_c, new_c_c = self.coarse_lstm(x_c, (h_c, c_c))
            h_c, c_c = torch.where(valid, new_h_c, h_c), torch.where(valid, new_c_c, c_c)
            b = self.gate(torch.cat([x_c, h_f, c_f], dim=1))
            if forced is not None:
                d = forced[:, t]
            elif mode == "sample":
                d = gumbel_softmax_decision(b, tau, generator=generator, noise_scale=noise_scale) * mask[:, t]
            else:
                d = hard_decision(b) * mask[:, t]
            new_h_f, new_c_f = self._fine_step(d, torch.cat([x_c, fine[:, t]], dim=1), h_f, c_f, h_c, c_c)
            h_f, c_f = torch.where(valid, new_h_f, h_f), torch.where(valid, new_c_f, c_f)
            hidden.append(h_f)
            chosen.append(d)
            gates.append(b * valid)
        logits = self.classifier(torch.stack(hidden, dim=1))
        final = logits[torch.arange(batch, device=logits.device), lengths - 1]
        return Output(logits=logits, decisions=torch.stack(chosen, dim=1), mask=mask, final_logits=final,
                      gate_logits=torch.stack(gates, dim=1))

    def _fine_step(self, d_B: Tensor, x_B: Tensor, h_f: Tensor, c_f: Tensor, h_c: Tensor, c_c: Tensor):
        """``B·LSTM_f(x) + (1 − B)·sync``; with no gradient through B only the rows that read run the LSTM."""
        h_sync, c_sync = self.synchronise(h_f, c_f, h_c, c_c)
        if d_B.requires_grad:  # straight-through: dL/dB needs both branches for every row
            h_read, c_read = self.fine_lstm(x_B, (h_f, c_f))
            w = d_B[:, None]
            return w * h_read + (1 - w) * h_sync, w * c_read + (1 - w) * c_sync
        rows = torch.nonzero(d_B > 0.5).squeeze(1)
        if rows.numel() == 0:
            return h_sync, c_sync
        h_read, c_read = self.fine_lstm(x_B[rows], (h_f[rows], c_f[rows]))
        return h_sync.index_put((rows,), h_read), c_sync.index_put((rows,), c_read)

    def loss(self, out: Output, labels: Tensor, gamma: float, lam: float = 2.0) -> dict[str, Tensor]:
        """Eq. 4.5: ``CE(final logits) + λ·mean_videos (fine fraction − γ)²``; the fraction of a video is
        over its valid steps. ``fine_fraction`` (detached) is the batch mean of the per-video fractions."""
        if not 0.0 <= gamma <= 1.0:
            raise ConfigError(f"gamma is the target fraction of fine reads, in [0, 1]; got {gamma}")
        if lam < 0:
            raise ConfigError(f"lam weighs the gate penalty and must be >= 0; got {lam}")
        ce = F.cross_entropy(out.final_logits, labels)
        fraction = (out.decisions * out.mask).sum(dim=1) / out.lengths.to(out.decisions.dtype)
        gate = ((fraction - gamma) ** 2).mean()
        return {"loss": ce + lam * gate, "ce": ce, "gate": gate, "fine_fraction": fraction.mean().detach()}

    def _check(self, coarse: Tensor, fine: Tensor, lengths: Tensor, mode: str, decisions: Tensor | None):
        if coarse.dim() != 3 or coarse.shape[2] != self.coarse_dim:
            raise ValueError(f"coarse features must be [B, T, {self.coarse_dim}], got {tuple(coarse.shape)}")
        batch, steps = coarse.shape[:2]
        if tuple(fine.shape) != (batch, steps, self.fine_dim):
            raise ValueError(f"fine features must be [B, T, {self.fine_dim}] = "
                             f"{(batch, steps, self.fine_dim)}, got {tuple(fine.shape)}")
        if tuple(lengths.shape) != (batch,) or lengths.dtype != torch.long:
            raise ValueError(f"lengths must be a long tensor [B] = [{batch}], "
                             f"got {lengths.dtype} {tuple(lengths.shape)}")
        if steps == 0 or bool(((lengths < 1) | (lengths > steps)).any()):
            raise ValueError(f"every length must be in [1, T={steps}], got {lengths.tolist()}")
        if decisions is not None and tuple(decisions.shape) != (batch, steps):
            raise ValueError(f"forced decisions must be [B, T] = {(batch, steps)}, "
                             f"got {tuple(decisions.shape)}")
        if decisions is None and mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        return batch, steps


_DEFAULTS = {"coarse_dim": 1280, "fine_dim": 2048, "num_classes": 239, "coarse_hidden": 512,
             "fine_hidden": 2048}
_DEBUG = {"coarse_dim": 12, "fine_dim": 16, "num_classes": 5, "coarse_hidden": 6, "fine_hidden": 10}


@register_model
def liteeval_lstm(*, coarse_dim: int = 1280, fine_dim: int = 2048, num_classes: int = 239,
                  coarse_hidden: int = 512, fine_hidden: int = 2048, debug: bool = False) -> LiteEvalNet:
    """LiteEval coarse (512) and fine (2048) LSTMs over MobileNetV2 (1280-d) and ResNet-101 (2048-d) features;
    debug: tiny sizes for the arguments left at their defaults."""
    sizes = {"coarse_dim": coarse_dim, "fine_dim": fine_dim, "num_classes": num_classes,
             "coarse_hidden": coarse_hidden, "fine_hidden": fine_hidden}
    if debug:  # sizes left at their defaults shrink; explicitly changed ones are kept
        sizes = {k: _DEBUG[k] if v == _DEFAULTS[k] else v for k, v in sizes.items()}
    return LiteEvalNet(**sizes)
