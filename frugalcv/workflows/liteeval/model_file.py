"""LiteEval's model file, ``<stage folder>/model.pt`` (plain data and tensors: ``weights_only``)::

    {"format": "liteeval", "gate": "learned" | "always_fine", "dims": {coarse_dim, fine_dim,
     coarse_hidden, fine_hidden, num_classes}, "gamma", "lam", "features": {max_frames, normalize,
     feature_norm}, "backbones": {fine: {model, size, gflops}, coarse: {...}}, "class_names",
     "net": state_dict}

It carries how its features were prepared, so evaluation needs nothing from training's params.
"""

from __future__ import annotations

from typing import Any

from frugalcv.errors import ConfigError
from frugalcv.models.liteeval import LiteEvalNet
from frugalcv.sharding import storage
from frugalcv.workflows import kit

FORMAT = "liteeval"


def _backbone(info: dict, which: str) -> dict[str, Any]:
    return {"gflops": info.get(f"{which}_gflops"), "dim": info.get(f"{which}_dim")}


def state(net: LiteEvalNet, *, gate: str, gamma: float, lam: float, features: dict, info: dict) -> dict:
    """The model file's content for ``net`` trained on a split described by ``info`` (``split_info``)."""
    return {"format": FORMAT, "gate": gate, "dims": dict(net.dims), "gamma": float(gamma), "lam": float(lam),
            "features": dict(features),
            "backbones": {"fine": _backbone(info, "fine"), "coarse": _backbone(info, "coarse")},
            "class_names": list(info["classes"]), "net": kit.unwrap(net).state_dict()}


def read(ctx: kit.StageContext, name: str) -> dict:
    """The model file given as input ``name``; a file of another kind is refused, naming the input."""
    url = ctx.input(name)
    loaded = kit.read_state(url, "LiteEval model file")
    if loaded.get("format") != FORMAT or "net" not in loaded:
        raise ConfigError(f"stages.{ctx.stage}.inputs.{name}: {storage.redact(url)} is not a LiteEval model file "
                          "(give a liteeval.train stage's checkpoint output)")
    return loaded


def network(loaded: dict) -> LiteEvalNet:
    """The model file's network, in eval mode, on the CPU."""
    net = LiteEvalNet(**loaded["dims"])
    net.load_state_dict(loaded["net"])
    return net.eval()


def check_split(loaded: dict, info: dict, where: str) -> None:
    """The split must have the features the network reads (dims, class count)."""
    dims = loaded["dims"]
    for which in ("coarse", "fine"):
        if info.get(f"{which}_dim") is not None and info[f"{which}_dim"] != dims[f"{which}_dim"]:
            raise ConfigError(f"{where}: the network reads {dims[f'{which}_dim']}-d {which} features, the split has "
                              f"{info[f'{which}_dim']}-d ones: extract it with the training split's backbones")
    if info.get("classes") and len(info["classes"]) != dims["num_classes"]:
        raise ConfigError(f"{where}: the network predicts {dims['num_classes']} classes, the split has "
                          f"{len(info['classes'])}")
