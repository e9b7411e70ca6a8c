"""DCAN's model files: building the networks from params, and ``<output_dir>/model.pt``::

    {"format": "dcan", "model": name, "model_args": {num_classes, align_at, width, debug},
     "segmentation": state_dict, "classes": [train ids scored], "class_names": [...],
     "generator_args": {width}, "generator": state_dict}      # generator keys where one was trained

loaded ``weights_only``. ``classes`` come from the source split's manifest (SYNTHIA lists the 16
classes it labels), so evaluation scores what the source could teach.
"""

from __future__ import annotations

from torch import nn

from frugalcv.errors import ConfigError
from frugalcv.models import build_model
from frugalcv.sharding import storage
from frugalcv.workflows import kit

FORMAT = "dcan"


def segmentation_net(ctx: kit.StageContext, p) -> tuple[nn.Module, dict]:
    """The segmentation network of ``p`` (ImageNet backbone weights when given), and its build args."""
    args = {"num_classes": p.num_classes, "align_at": p.align_at, "width": p.width, "debug": p.debug}
    net = build_model(p.model, **args)
    if p.weights:
        kit.load_pretrained(net.backbone, p.weights, allow_unexpected=True)
    return net, args


def generator_net(ctx: kit.StageContext, p, state: dict | None = None) -> tuple[nn.Module, dict]:
    """The image generator: from a model file's ``state`` when given, else new (ImageNet encoder when given)."""
    if state is not None:
        args = dict(state["generator_args"])
        net = build_model("dcan_generator", **args)
        net.load_state_dict(state["generator"])
        net.style_weight = getattr(p, "style_weight", net.style_weight)
        return net, args
    args = {"width": p.generator_width, "depth": p.generator_depth, "debug": bool(getattr(p, "debug", False))}
    net = build_model("dcan_generator", **args)
    net.style_weight = p.style_weight
    if p.generator_weights:
        kit.load_pretrained(net.encoder, p.generator_weights, allow_unexpected=True)
    return net, args


def read(ctx: kit.StageContext, name: str, *, needs: str) -> dict:
    """The DCAN model file at input ``name``, which must hold ``needs`` ("segmentation" or "generator")."""
    url = ctx.input(name)
    state = kit.read_state(url, "DCAN model file")
    if state.get("format") != FORMAT:
        raise ConfigError(f"stages.{ctx.stage}.inputs.{name}: {storage.redact(url)} is not a DCAN model file "
                          "(give a dcan stage's checkpoint output)")
    if needs not in state:
        what = {"generator": "a dcan.generator or dcan.train", "segmentation": "a dcan.source_only, "
                "dcan.two_stage or dcan.train"}[needs]
        raise ConfigError(f"stages.{ctx.stage}.inputs.{name}: {storage.redact(url)} holds no {needs} network; "
                          f"give {what} stage's checkpoint")
    return state


def load_segmentation(ctx: kit.StageContext, state: dict) -> nn.Module:
    net = build_model(state["model"], **state["model_args"])
    net.load_state_dict(state["segmentation"])
    return kit.place(ctx, net)


def classes_of(manifest, num_classes: int) -> tuple[list[int], list[str]]:
    """(the train ids to score, all class names) from a source split's manifest."""
    names = list(manifest.classes) if len(manifest.classes) == num_classes else [str(i) for i in range(num_classes)]
    present = manifest.extra.get("classes_present")
    ids = [int(c["train_id"]) for c in present] if present else list(range(num_classes))
    return ids, names


def save(ctx: kit.StageContext, *, seg: tuple[nn.Module, dict, str] | None = None,
         generator: tuple[nn.Module, dict] | None = None, classes: tuple[list[int], list[str]]) -> str:
    """Write ``model.pt`` (rank 0) and return its URL."""
    state: dict = {"format": FORMAT, "classes": classes[0], "class_names": classes[1]}
    if seg is not None:
        net, args, name = seg
        state.update(model=name, model_args=args, segmentation=kit.unwrap(net).state_dict())
    if generator is not None:
        net, args = generator
        state.update(generator_args=args, generator=kit.unwrap(net).state_dict())
    url = ctx.path("model.pt")
    kit.save_state(url, state)
    return url
