"""DCAN's end-to-end step against the sum of its parts run alone.

    .venv/bin/python benchmarks/dcan_step.py [--steps 10] [--rounds 5] [--batch 8] [--size 64 128]

One optimizer step each, on the same in-memory batches (source images, masks, target images) and
the demo's networks by default (FCN8s-VGG16 at 1/8 width, the generator at 1/8 width), through
the stage's own tasks (``workflows/dcan/tasks.py``) and the Trainer's update:

- generator: ``GeneratorTask`` (generator forward, its loss, backward into the decoder, step);
- segmentation: ``TwoStageTask``'s segmentation half on images the generator synthesised
  beforehand (untimed): forward with alignment, cross-entropy, backward, step;
- end to end: ``EndToEndTask`` over ``DCAN(seg, generator)`` (``l_seg + 0.1 l_gen``, one backward).

The three alternate step by step, so a busy neighbour slows them alike. ``overhead_ratio`` is the
median over rounds of end-to-end time / (generator + segmentation time): end to end should cost
no more than its parts. On CUDA every timed step is synchronised. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from frugalcv.models import build_model
from frugalcv.workflows.dcan.data import normalize
from frugalcv.workflows.dcan.tasks import DCAN, EndToEndTask, GeneratorTask, segmentation_loss
from frugalcv.workflows.engine.trainer import OptimizerStep


def batches(count: int, batch: int, size: tuple[int, int], classes: int, device) -> list:
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        source = torch.rand(batch, 3, *size, generator=gen)
        masks = torch.randint(0, classes, (batch, *size), generator=gen)
        target = torch.rand(batch, 3, *size, generator=gen)
        out.append(((source.to(device), masks.to(device)), target.to(device)))
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="fcn8s_vgg16")
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--generator-width", type=float, default=0.125)
    p.add_argument("--debug", action="store_true", help="the networks' tiny debug flavours")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, nargs=2, default=[64, 128], metavar=("H", "W"))
    p.add_argument("--steps", type=int, default=10, help="steps of each kind per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    seg = build_model(args.model, num_classes=19, width=args.width, debug=args.debug).to(device)
    gen = build_model("dcan_generator", width=args.generator_width, debug=args.debug).to(device)
    decoder = [q for q in gen.parameters() if q.requires_grad]

    def sgd(params):
        return OptimizerStep(torch.optim.SGD(params, lr=1e-3, momentum=0.9))

    gen_update, seg_update = sgd(decoder), sgd(seg.parameters())
    joint_update = sgd([{"params": list(seg.parameters())}, {"params": decoder}])
    gen_task = GeneratorTask(gen, 1)
    joint_task = EndToEndTask(DCAN(seg, gen), 0.1, 1)
    data = batches(args.steps, args.batch, tuple(args.size), 19, device)
    with torch.no_grad():
        synthesised = [gen(src, tgt).image for (src, _), tgt in data]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(fn) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    def seg_step(i):
        (_, masks), target = data[i]
        seg_update(segmentation_loss(seg(normalize(synthesised[i]), target=normalize(target)), masks))

    kinds = {
        "generator": lambda i: gen_update(gen_task.training_step(data[i])["loss"]),
        "segmentation": seg_step,
        "end_to_end": lambda i: joint_update(joint_task.training_step(data[i])["loss"]),
    }
    seg.train()
    gen.train()
    rounds = []
    for r in range(args.rounds + 1):  # the first round warms up
        totals = dict.fromkeys(kinds, 0.0)
        for i in range(args.steps):
            order = list(kinds)[i % 3:] + list(kinds)[:i % 3]
            for name in order:
                totals[name] += timed(lambda name=name, i=i: kinds[name](i))
        if r:
            rounds.append(totals)
    ratios = [t["end_to_end"] / (t["generator"] + t["segmentation"]) for t in rounds]
    ms = {name: 1000 * statistics.median(t[name] for t in rounds) / args.steps for name in kinds}
    result = {"benchmark": "dcan_step", "overhead_ratio": round(statistics.median(ratios), 4),
              "ratios": [round(x, 4) for x in ratios], "device": str(device), "batch": args.batch,
              "size": list(args.size), "model": args.model, "width": args.width,
              "generator_width": args.generator_width, "steps": args.steps, "rounds": args.rounds,
              **{f"{name}_step_ms": round(v, 2) for name, v in ms.items()}}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
