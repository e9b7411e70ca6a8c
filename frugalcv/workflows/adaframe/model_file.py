"""AdaFrame's model files, ``<output_dir>/model.pt`` (loaded ``weights_only``)::

    {"format": "adaframe", "model_args": {feature_dim, memory_dim, num_classes, hidden,
     memory_frames, pe_dim, sigma}, "net": state_dict, "steps": T_e, "features": {...}}
    {"format": "adaframe-baselines", "features": {...}, "frames": [K, ...],
     "avgpool": {"args": {feature_dim, num_classes}, "state": state_dict},
     "lstm": {"args": {feature_dim, num_classes, hidden}, "state": state_dict}}   # those trained

``features`` is what the networks were trained on: ``classes``, ``max_frames``, ``long_videos``,
``normalize``, the fine and coarse ``*_dim`` and per-frame ``*_gflops`` (from the split's manifest),
so evaluation reads the test split the same way and costs it without the training split.
"""

from __future__ import annotations

from torch import nn

from frugalcv.errors import ConfigError
from frugalcv.models.adaframe import AdaFrameNet, AvgPoolClassifier, LSTMClassifier
from frugalcv.sharding import storage
from frugalcv.workflows import kit

FORMAT = "adaframe"
BASELINES_FORMAT = "adaframe-baselines"
_WHAT = {FORMAT: "an adaframe.train", BASELINES_FORMAT: "an adaframe.baselines"}


def adaframe_args(p, features: dict) -> dict:
    return {"feature_dim": features["fine_dim"], "memory_dim": features["coarse_dim"],
            "num_classes": len(features["classes"]), "hidden": p.hidden, "memory_frames": p.memory_frames,
            "pe_dim": p.pe_dim, "sigma": p.sigma}


def baseline_args(name: str, p, features: dict) -> dict:
    args = {"feature_dim": features["fine_dim"], "num_classes": len(features["classes"])}
    return {**args, "hidden": p.hidden} if name == "lstm" else args


def build_baseline(name: str, args: dict) -> nn.Module:
    return LSTMClassifier(**args) if name == "lstm" else AvgPoolClassifier(**args)


def save_adaframe(ctx: kit.StageContext, net: nn.Module, args: dict, steps: int, features: dict) -> str:
    url = ctx.path("model.pt")
    kit.save_state(url, {"format": FORMAT, "model_args": args, "net": kit.unwrap(net).state_dict(),
                         "steps": int(steps), "features": features})
    return url


def save_baselines(ctx: kit.StageContext, nets: dict[str, tuple[nn.Module, dict]], frames: list[int],
                   features: dict) -> str:
    url = ctx.path("model.pt")
    state: dict = {"format": BASELINES_FORMAT, "features": features, "frames": [int(k) for k in frames]}
    for name, (net, args) in nets.items():
        state[name] = {"args": args, "state": kit.unwrap(net).state_dict()}
    kit.save_state(url, state)
    return url


def read(ctx: kit.StageContext, name: str, fmt: str) -> dict:
    """The model file at input ``name``, which must be of format ``fmt``."""
    url = ctx.input(name)
    state = kit.read_state(url, "AdaFrame model file")
    if state.get("format") != fmt:
        raise ConfigError(f"stages.{ctx.stage}.inputs.{name}: {storage.redact(url)} is not {_WHAT[fmt]} "
                          f"model file (give the checkpoint output of {_WHAT[fmt]} stage)")
    return state


def load_adaframe(ctx: kit.StageContext, state: dict) -> AdaFrameNet:
    net = AdaFrameNet(**state["model_args"])
    net.load_state_dict(state["net"])
    return kit.place(ctx, net).eval()


def load_baselines(ctx: kit.StageContext, state: dict) -> dict[str, nn.Module]:
    nets = {}
    for name in ("avgpool", "lstm"):
        if name in state:
            net = build_baseline(name, state[name]["args"])
            net.load_state_dict(state[name]["state"])
            nets[name] = kit.place(ctx, net).eval()
    return nets
