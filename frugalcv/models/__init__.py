"""Architectures only (no I/O, tracking or distributed code): shared blocks, the registry and FLOPs
counter here, each method's networks in ``models/<method>/``.

Every registered model has a tiny flavour for tests: ``build_model(name, debug=True)``.
"""

from frugalcv.models import adaframe, dcan, liteeval, scn  # noqa: F401  (registers the models)
from frugalcv.models.blockdrop import policy, resnet  # noqa: F401  (registers the models)
from frugalcv.models.blockdrop.fuse import fuse_batchnorm
from frugalcv.models.blockdrop.policy import PolicyNet
from frugalcv.models.blockdrop.resnet import BlockDropResNet
from frugalcv.models.blockdrop.row_shards import RowShards
from frugalcv.models.blocks import BasicBlock, Bottleneck, DroppableBlock
from frugalcv.models.flops import block_flops, count_flops, flops_report, policy_flops
from frugalcv.models.registry import UnknownModelError, build_model, list_models, register_model

__all__ = [
    "BasicBlock",
    "BlockDropResNet",
    "Bottleneck",
    "DroppableBlock",
    "PolicyNet",
    "UnknownModelError",
    "block_flops",
    "count_flops",
    "flops_report",
    "fuse_batchnorm",
    "list_models",
    "policy_flops",
    "build_model",
    "register_model",
    "RowShards",
]
