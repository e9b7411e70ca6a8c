"""ResNets whose residual blocks can be dropped per image (BlockDrop).

``forward(x, keep)`` is the masked executor used in training: every block runs on the whole
batch and each row then takes either the block output or the block's shortcut. Dropped
identity blocks therefore pass their input through (y_{i+1} = y_i); dropped downsampling blocks
still run their shortcut (parameter-free on CIFAR, 1x1 conv + BN on ImageNet, as the official
code does). ``forward_dynamic(x, keep)`` gives the same result in eval mode but runs each
block's residual branch only on the rows that keep it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from frugalcv.models.blocks import BasicBlock, Bottleneck, DroppableBlock, conv3x3
from frugalcv.models.registry import register_model


class ResNetTrunk(nn.Module):
    """Stem + residual segments with torchvision's parameter names (conv1, bn1, layerN)."""

    def __init__(
        self,
        block: type[DroppableBlock],
        layers: list[int],
        widths: list[int],
        *,
        stem_width: int,
        imagenet_stem: bool,
        shortcut: str,
        input_size: tuple[int, int, int],
    ):
        super().__init__()
        if imagenet_stem:  # 7x7/2 conv + 3x3/2 max pool
            self.conv1 = nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False)
        else:  # CIFAR: one 3x3 conv at full resolution
            self.conv1 = conv3x3(3, stem_width)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if imagenet_stem else None
        in_ch = stem_width
        for i, (n, width) in enumerate(zip(layers, widths, strict=True)):
            segment = []
            for b in range(n):
                stride = 2 if i > 0 and b == 0 else 1
                segment.append(block(in_ch, width, stride, shortcut))
                in_ch = width * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*segment))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.layer_config = tuple(layers)
        self.feature_dim = in_ch
        self.input_size = tuple(input_size)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def blocks(self) -> list[DroppableBlock]:
        """All residual blocks in execution order (index k = policy column k)."""
        return [b for i in range(len(self.layer_config)) for b in getattr(self, f"layer{i + 1}")]

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return x if self.maxpool is None else self.maxpool(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(x), 1)


class BlockDropResNet(ResNetTrunk):
    """A classifier ResNet with per-image block dropping; ``num_blocks`` = K policy columns."""

    def __init__(self, *args, num_classes: int, policy_name: str, debug: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fc = nn.Linear(self.feature_dim, num_classes)
        self.num_blocks = sum(self.layer_config)
        self.num_classes = num_classes
        self.policy_name = policy_name  # registry name of the matching policy network
        self.debug = debug
        # forward_dynamic runs a block on the contiguous range of rows spanning the ones that keep
        # it once they fill this share of it (moving a kept row costs about a tenth of computing
        # one; benchmarks/blockdrop_inference.py); above 1, rows are always gathered
        self.dense_fraction = 0.9

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Logits; ``keep`` [B, K] (bool or float, None = all blocks) masks blocks per row."""
        keep = self._check_keep(keep, x)
        x = self.stem(x)
        for k, block in enumerate(self.blocks):
            x = block(x) if keep is None else block(x, keep[:, k])
        return self.fc(self.pool(x))

    @torch.no_grad()
    def forward_dynamic(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Inference that skips work: block k's residual runs only on the rows keeping it.

        Equals ``forward(x, keep)`` in eval mode up to float rounding (a conv over a subset of
        rows may sum in another order); bit-exact for blocks that every row keeps. ``keep``
        must be 0/1. No gradients.

        Rows are independent, so the batch is first put in an order where rows with similar
        policies sit together (``_group_similar_rows``; the logits come back in the caller's
        order). Then each block takes the cheapest of three ways to touch only its rows:

        * its kept rows span a contiguous range of rows that they nearly fill
          (``dense_fraction``): run the block on that range in place (a view, nothing moved)
          and restore the few dropped rows inside it; computing them costs less than moving
          all the kept ones twice;
        * otherwise gather the kept rows, run the residual branch on them and add the change
          back (``index_add_``);
        * blocks that every row or no row keeps run on the batch or pass it through.
        """
        if self.training:
            raise RuntimeError("forward_dynamic needs eval mode (BN running statistics); call .eval()")
        keep_BK = _bool_mask(self._check_keep(keep, x))
        order = _group_similar_rows(keep_BK, self.dense_fraction)
        if order is not None:
            keep_BK = keep_BK[order.numpy()]
            order = order.to(x.device)
            x = _gather_rows(x, order)
        plan = self._rows_per_block(keep_BK, x.device)
        x = self.stem(x)
        for block, (kind, arg) in zip(self.blocks, plan, strict=True):
            if kind is _ALL:
                x = block(x)
            elif kind is _NONE:
                x = block.shortcut(x)
            elif kind is _RANGE:
                x = _run_range(block, x, *arg)
            else:
                x = _run_rows(block, x, arg)
        logits = self.fc(self.pool(x))
        if order is None:
            return logits
        return torch.empty_like(logits).index_copy_(0, order, logits)

    def _check_keep(self, keep: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        if keep is None:
            return None
        expected = (x.shape[0], self.num_blocks)
        if keep.dim() != 2 or tuple(keep.shape) != expected:
            raise ValueError(f"keep must have shape [B, K] = {list(expected)}, got {list(keep.shape)}")
        if keep.dtype != torch.bool and not keep.is_floating_point():
            keep = keep.to(x.dtype)
        return keep

    def _rows_per_block(self, keep, device: torch.device) -> list[tuple[object, object]]:
        """Per block: (_ALL | _NONE, None), (_RANGE, (start, stop, dropped rows or None)) or (_ROWS, kept rows).

        ``keep`` is [B, K], 0/1 or bool (tensor or array), rows in the order they will run.
        Plans are made with numpy: a few microseconds per block, not tens.
        """
        keep_BK = _bool_mask(keep)
        batch = keep_BK.shape[0]
        plan: list[tuple[object, object]] = []
        for kept in keep_BK.T:
            rows = np.flatnonzero(kept)
            n = len(rows)
            if n == batch:
                plan.append((_ALL, None))
            elif n == 0:
                plan.append((_NONE, None))
            else:
                start, stop = int(rows[0]), int(rows[-1]) + 1
                if n >= self.dense_fraction * (stop - start):
                    holes = np.flatnonzero(~kept[start:stop]) + start
                    dropped = _index(holes, device) if len(holes) else None
                    plan.append((_RANGE, (start, stop, dropped)))
                else:
                    plan.append((_ROWS, _index(rows, device)))
        return plan


def _index(rows: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(rows.astype(np.int64, copy=False)).to(device, non_blocking=True)


def _bool_mask(keep) -> np.ndarray:
    """``keep`` (tensor or array) as a bool array on the CPU (plans are made there); 0/1 floats only."""
    if isinstance(keep, torch.Tensor):
        keep = keep.detach().to("cpu")
        keep = (keep if keep.dtype == torch.bool else keep.float()).numpy()
    keep = np.asarray(keep)
    if keep.dtype == np.bool_:
        return keep
    if not ((keep == 0) | (keep == 1)).all():
        raise ValueError("forward_dynamic needs a 0/1 keep mask (threshold or sample the policy)")
    return keep != 0


def _group_similar_rows(keep, dense_fraction: float = 0.9) -> torch.Tensor | None:
    """A row order in which the rows keeping each block tend to be contiguous; None: keep the order.

    Rows are sorted on their decisions for the blocks that some but not all rows keep, in
    reflected-binary (Gray code) order: the rows keeping the first of these blocks form one
    range, those keeping the second one too (across the first's boundary), the third at most
    two, and so on. Rows sharing a policy (trained policies repeat: 469 distinct ones over
    CIFAR-10's 10k test images in the dissertation) end up side by side, so many blocks run on
    a slice of the batch with nothing gathered or scattered. Which blocks come first decides
    which ones become contiguous; a few such priorities are tried and the order whose plan
    moves the fewest rows (``forward_dynamic``'s rule, ``dense_fraction``) is kept.
    """
    keep_BK = _bool_mask(keep)
    batch = keep_BK.shape[0]
    counts = keep_BK.sum(0)
    partial = np.flatnonzero((counts > 0) & (counts < batch))
    if len(partial) == 0:
        return None
    n = counts[partial]
    priorities = (n, n * (batch - n), -partial)  # most kept, most mixed, network order: first
    best, best_cost = None, None
    for priority in priorities:
        blocks = partial[np.argsort(-priority, kind="stable")]
        # Gray code -> binary: bit i of the key is the XOR of the row's first i+1 decisions
        bits = np.cumsum(keep_BK[:, blocks], axis=1) % 2
        order = np.lexsort((1 - bits)[:, ::-1].T)  # stable; first block's 1s first, then the next...
        cost = _moved_rows(keep_BK[order][:, partial], dense_fraction)
        if best_cost is None or cost < best_cost:
            best, best_cost = order, cost
    if (best == np.arange(batch)).all():
        return None
    return torch.from_numpy(best.astype(np.int64, copy=False))


def _moved_rows(keep_BP, dense_fraction: float) -> float:
    """Rows computed in vain or moved, in row-compute units, by ``forward_dynamic``'s plan of these blocks.

    A block run on a range computes its dropped rows in vain; a gathered one moves each kept
    row twice, which ``dense_fraction`` prices at (1 / dense_fraction - 1) of computing it.
    """
    keep_BP = _bool_mask(keep_BP)
    batch = keep_BP.shape[0]
    n = keep_BP.sum(0)
    position = np.arange(batch)[:, None]
    first = np.where(keep_BP, position, batch).min(0)
    span = np.where(keep_BP, position, -1).max(0) + 1 - first
    ranged = n >= dense_fraction * span
    move = max(1.0 / dense_fraction - 1.0, 0.0)
    return float(np.where(ranged, span - n, n * move).sum())


def _run_range(block: DroppableBlock, x: torch.Tensor, start: int, stop: int, dropped: torch.Tensor | None):
    """``block`` on rows ``start:stop`` of ``x`` (a view, updated in place), rows ``dropped`` restored."""
    skipped = block.shortcut(x)  # x itself for identity blocks: produced by forward_dynamic, ours
    saved = None if dropped is None else skipped.index_select(0, dropped)
    out = block.residual(x[start:stop])
    F.relu(skipped[start:stop].add_(out), inplace=True)  # s + out == out + s: the masked forward's sum
    return skipped if saved is None else skipped.index_copy_(0, dropped, saved)


def _run_rows(block: DroppableBlock, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``block`` applied to rows ``idx`` of ``x``, the other rows passed through (x may be reused)."""
    x_kept = _gather_rows(x, idx)
    out = block.residual(x_kept)
    if block.downsample is None:
        shortcut_kept = x_kept  # a copy, ours to overwrite
        skipped = x  # produced by forward_dynamic, safe to overwrite
    else:
        skipped = block.shortcut(x)
        shortcut_kept = _gather_rows(skipped, idx)
    rows, out_rows, kept_rows = _row_major(skipped), _row_major(out), _row_major(shortcut_kept)
    if rows is None or out_rows is None or kept_rows is None:  # an unusual layout: plain copy back
        return skipped.index_copy_(0, idx, F.relu(out.add_(shortcut_kept), inplace=True))
    # the kept rows become relu(out + s) = s + max(out, -s): add the change max(out, -s) in
    # place with index_add_, which runs in parallel where index_copy_ does not (~3x faster on
    # CPU); two passes over the kept rows (negate, maximum) instead of add, relu, subtract
    change = torch.maximum(out_rows, kept_rows.neg_(), out=out_rows)
    rows.index_add_(0, idx, change)
    return skipped


def _row_major(x: torch.Tensor) -> torch.Tensor | None:
    """A contiguous view of ``x`` with rows first (NHWC as [N, H, W, C]), or None if there is none."""
    if x.is_contiguous():
        return x
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1)
    return None


def _gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[idx]`` in x's memory layout (plain index_select would turn NHWC back into NCHW)."""
    rows = _row_major(x)
    if rows is None:
        return x.index_select(0, idx)
    kept = rows.index_select(0, idx)
    return kept if rows is x else kept.permute(0, 3, 1, 2)


_ALL = object()  # every row keeps the block: run it on the batch
_NONE = object()  # no row keeps it: run only its shortcut
_RANGE = object()  # its rows nearly fill a range: run it on that slice in place, restore the dropped rows
_ROWS = object()  # gather the kept rows, run them, add their change back


def _cifar_resnet(blocks_per_segment: int, num_classes: int, debug: bool, debug_blocks: int):
    n = debug_blocks if debug else blocks_per_segment
    widths = [4, 8, 16] if debug else [16, 32, 64]
    return BlockDropResNet(
        BasicBlock,
        [n, n, n],
        widths,
        stem_width=widths[0],
        imagenet_stem=False,
        shortcut="zero_pad",
        input_size=(3, 32, 32),
        num_classes=num_classes,
        policy_name="policy_resnet8_cifar",
        debug=debug,
    )


@register_model
def cifar_resnet32(num_classes: int = 10, debug: bool = False) -> BlockDropResNet:
    """CIFAR ResNet-32: 15 basic blocks (3 x 5, 16/32/64 ch), parameter-free shortcuts; debug: 6 tiny blocks."""
    return _cifar_resnet(5, num_classes, debug, debug_blocks=2)


@register_model
def cifar_resnet110(num_classes: int = 10, debug: bool = False) -> BlockDropResNet:
    """CIFAR ResNet-110: 54 basic blocks (3 x 18, 16/32/64 ch), parameter-free shortcuts; debug: 9 tiny blocks."""
    return _cifar_resnet(18, num_classes, debug, debug_blocks=3)


@register_model
def imagenet_resnet101(num_classes: int = 1000, debug: bool = False) -> BlockDropResNet:
    """ImageNet ResNet-101: 33 bottlenecks [3, 4, 23, 3], loads torchvision weights; debug: 5 tiny blocks."""
    layers = [1, 1, 2, 1] if debug else [3, 4, 23, 3]
    widths = [4, 8, 16, 32] if debug else [64, 128, 256, 512]
    return BlockDropResNet(
        Bottleneck,
        layers,
        widths,
        stem_width=8 if debug else 64,
        imagenet_stem=True,
        shortcut="conv",
        input_size=(3, 64, 64) if debug else (3, 224, 224),
        num_classes=num_classes,
        policy_name="policy_resnet10_imagenet",
        debug=debug,
    )
