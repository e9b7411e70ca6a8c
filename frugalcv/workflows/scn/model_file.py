"""SCN's model files (``<output_dir>/model.pt``, loaded ``weights_only``)::

    {"format": "scn-backbone", "backbone": name, "backbone_args": {...}, "state": state_dict,
     "classes": [...]}                                                       # scn.pretrain
    {"format": "scn", "backbone": name, "backbone_args": {...}, "scn_args": {...}, "state": state_dict,
     "patch_size": int, "history": [{"epoch", "step", "test_mse"}, ...],
     "reconstructions": {"kinds": [...], "epochs": [...], "truth": uint8, "frames": uint8}}  # scn.train
"""

from __future__ import annotations

from torch import nn

from frugalcv.errors import ConfigError
from frugalcv.models.scn import SpatialContextNet, scn_backbone
from frugalcv.sharding import storage
from frugalcv.workflows import kit

BACKBONE_FORMAT, SCN_FORMAT = "scn-backbone", "scn"


def read(ctx: kit.StageContext, name: str, fmt: str) -> dict:
    """The SCN model file at input ``name``, of format ``fmt``."""
    url = ctx.input(name)
    state = kit.read_state(url, "SCN model file")
    if state.get("format") != fmt:
        what = {BACKBONE_FORMAT: "an scn.pretrain", SCN_FORMAT: "an scn.train"}[fmt]
        raise ConfigError(f"stages.{ctx.stage}.inputs.{name}: {storage.redact(url)} is not {what} model file "
                          f"(format {state.get('format')!r}); give {what} stage's checkpoint output")
    return state


def new_backbone(p, num_classes: int) -> tuple[nn.Module, str, dict]:
    """The backbone of ``p`` (its ``weights`` loaded when given) and its build args."""
    args = p.backbone_args(num_classes)
    net = scn_backbone(p.backbone, **args)
    if p.weights:
        # a classifier for another number of classes keeps its fc8 as initialised (fc8 is not h1)
        kit.load_pretrained(net, p.weights, allow_mismatch=("classifier.6.",), allow_missing=("classifier.6.",))
    return net, p.backbone, args


def load_backbone(state: dict) -> nn.Module:
    net = scn_backbone(state["backbone"], **state["backbone_args"])
    net.load_state_dict(state["state"])
    return net


def load_scn(state: dict) -> SpatialContextNet:
    net = SpatialContextNet(scn_backbone(state["backbone"], **state["backbone_args"]), **state["scn_args"])
    net.load_state_dict(state["state"])
    return net


def save(ctx: kit.StageContext, state: dict) -> str:
    """Write ``model.pt`` (rank 0) and return its URL."""
    url = ctx.path("model.pt")
    kit.save_state(url, state)
    return url
