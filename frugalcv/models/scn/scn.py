"""Spatial context networks (dissertation Ch. 5): predict the representation of patch X_i from
patch X_j and their offset o_ij.

* top stream ``g(X_i; W_T)``: a pre-trained CNN, frozen (no gradient, always in eval mode);
* bottom stream ``h1 = g(X_j; W_B)``: a copy of it (W_B = W_T at the start), whose fully-connected
  layers train (its convolutions too with ``train_convs``);
* the spatial context module (Eq. 5.1): ``h2 = sigmoid(V1 h1 + V_loc o_ij)``, ``h3 = V2 h2``;
* the loss (Eq. 5.2): ``||g(X_i; W_T) - h3||^2``, or with ``target="pixels"`` the squared error of
  X_i's pixels at ``target_size`` (the reconstruction experiment).

After training, ``features`` (h1 of the bottom stream) is the feature extractor.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OFFSET_DIM = 8  # the four box corners' (x, y) differences
Target = Literal["features", "pixels"]


def box_corners(box_B4: Tensor) -> Tensor:
    """Boxes (x1, y1, x2, y2) -> their corners flattened [x1,y1, x2,y1, x2,y2, x1,y2], [B, 8]."""
    x1, y1, x2, y2 = box_B4.unbind(-1)
    return torch.stack([x1, y1, x2, y1, x2, y2, x1, y2], dim=-1)


def box_offset(box_i: Tensor, box_j: Tensor, width: float, height: float) -> Tensor:
    """o_ij = corners(b_i) - corners(b_j), x differences over the image width, y over its height."""
    scale = box_i.new_tensor([width, height] * 4)
    return (box_corners(box_i) - box_corners(box_j)) / scale


class SpatialContextNet(nn.Module):
    """The two streams and the spatial context module over ``backbone`` (any ``Backbone``)."""

    def __init__(self, backbone: nn.Module, *, hidden: int | None = None, use_offset: bool = True,
                 target: Target = "features", target_size: int = 16, train_convs: bool = False,
                 offset_init: float = 10.0):
        super().__init__()
        if target not in ("features", "pixels"):
            raise ValueError(f"target={target!r}: expected 'features' or 'pixels'")
        self.use_offset, self.target_kind, self.target_size = use_offset, target, target_size
        self.top = backbone
        self.bottom = copy.deepcopy(backbone)  # W_B = W_T
        self.top.requires_grad_(False)
        self.bottom.features.requires_grad_(train_convs)
        self.bottom.classifier[-1].requires_grad_(False)  # fc8 is not part of h1
        dim = backbone.feature_dim
        hidden = hidden or dim
        out = dim if target == "features" else 3 * target_size * target_size
        self.v1 = nn.Linear(dim, hidden)
        self.v_loc = nn.Linear(OFFSET_DIM, hidden, bias=False) if use_offset else None
        self.v2 = nn.Linear(hidden, out)
        self.reset_context(offset_init)

    @torch.no_grad()
    def reset_context(self, offset_init: float) -> None:
        """V_loc ~ N(0, offset_init^2) and V1's bias ~ U(-offset_init/2, offset_init/2): the location
        pathway starts as random sharp half-planes of the offset space (|o| < 1 once normalised), so
        V2 can read the offset's regions off h2 from the first steps; PyTorch's default (|w| < 0.35)
        leaves the sigmoids nearly linear in o for hundreds of SGD steps. Both variants get the bias."""
        if offset_init <= 0:
            return
        self.v1.bias.uniform_(-offset_init / 2, offset_init / 2)
        if self.v_loc is not None:
            nn.init.normal_(self.v_loc.weight, std=offset_init)

    def train(self, mode: bool = True) -> SpatialContextNet:
        super().train(mode)
        self.top.eval()  # the target representation never sees dropout
        return self

    def features(self, x_j: Tensor) -> Tensor:
        """h1 = g(X_j; W_B): the learned representation."""
        return self.bottom.penultimate(x_j)

    def forward(self, x_j: Tensor, offset_B8: Tensor) -> Tensor:
        """h3, the prediction of X_i's target from X_j and o_ij (Eq. 5.1)."""
        pre = self.v1(self.features(x_j))
        if self.v_loc is not None:
            pre = pre + self.v_loc(offset_B8.to(pre.dtype))
        return self.v2(torch.sigmoid(pre))

    @torch.no_grad()
    def target(self, x_i: Tensor, pixels_i: Tensor | None = None) -> Tensor:
        """g(X_i; W_T), or X_i's pixels (``pixels_i`` in [0, 1]) at ``target_size`` flattened."""
        if self.target_kind == "features":
            return self.top.penultimate(x_i)
        source = x_i if pixels_i is None else pixels_i
        small = F.interpolate(source.float(), size=(self.target_size,) * 2, mode="bilinear", align_corners=False,
                              antialias=True)
        return small.flatten(1)

    @torch.no_grad()
    def original_features(self, x: Tensor) -> Tensor:
        """g(X; W_T): the pre-trained backbone's representation (the probe's baseline)."""
        return self.top.penultimate(x)


def context_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Eq. 5.2 averaged over the batch: mean over samples of ||target - h3||^2."""
    return (target.float() - prediction.float()).pow(2).sum(dim=1).mean()
