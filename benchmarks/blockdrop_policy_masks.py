"""Keep masks of a trained BlockDrop policy, for ``blockdrop_inference.py --masks``.

Runs the greedy policy (s > 0.5) of a finetuned (or curriculum) BlockDrop checkpoint on the
first ``--images`` images of a test split and writes one JSON file: the masks as 0/1 strings
(one per image, one character per block), the labels, where they came from, and the accuracy of
the ResNet under them. The inference benchmark only needs the masks (its timings do not depend
on the weights), so a learned policy's structure, which rows share which blocks, can be timed
without shipping a checkpoint::

    python benchmarks/blockdrop_policy_masks.py RUN/stages/finetune/model.pt digits \\
        --out benchmarks/data/blockdrop_resnet110_digits_masks.json

The last line printed is JSON (a summary of the file written).
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from frugalcv.models import build_model
from frugalcv.workflows import kit
from frugalcv.workflows.blockdrop.data import digits_arrays
from frugalcv.workflows.blockdrop.policy import greedy_policy
from frugalcv.workflows.blockdrop.transforms import Preprocess


def _test_images(test: str, images: int, prep: Preprocess) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``images`` test images, preprocessed as the checkpoint's evaluation does."""
    from frugalcv.sharding import iter_samples

    transform, batch_transform = prep.transforms(train=False)
    if test == "digits":
        x_NCHW, y = digits_arrays("test")
        samples = ({"image": x.permute(1, 2, 0).numpy(), "label": int(label)} for x, label in zip(x_NCHW, y, strict=True))
    else:
        samples = iter_samples(test)
    pairs = [transform(s) for _, s in zip(range(images), samples, strict=False)]
    if len(pairs) < images:
        raise SystemExit(f"{test}: {len(pairs)} images, fewer than --images {images}")
    return batch_transform((torch.stack([x for x, _ in pairs]), torch.tensor([label for _, label in pairs])))


def policy_masks(checkpoint: str, test: str, images: int) -> dict:
    """The greedy masks of ``checkpoint``'s policy on the first ``images`` images of ``test``."""
    state = kit.read_state(checkpoint, "BlockDrop model file")
    if "policy" not in state:
        raise SystemExit(f"{checkpoint}: holds no policy; give a curriculum or finetune stage's model.pt")
    resnet = build_model(state["model"], num_classes=int(state["num_classes"]), debug=bool(state["debug"]))
    resnet.load_state_dict(state["resnet"])
    policy = build_model(state["policy_model"], num_blocks=resnet.num_blocks, debug=bool(state["debug"]))
    policy.load_state_dict(state["policy"])
    prep = Preprocess(**state["preprocess"])
    x, y = _test_images(test, images, prep)
    resnet.eval()
    policy.eval()
    with torch.inference_mode():
        keep = greedy_policy(policy(x)).bool()
        correct = (resnet.forward_dynamic(x, keep).argmax(1) == y).float().mean().item()
    return {
        "model": state["model"],
        "num_blocks": int(resnet.num_blocks),
        "checkpoint": checkpoint,
        "test": test,
        "image_size": prep.image_size,
        "accuracy": round(correct, 4),
        "blocks_mean": round(keep.sum(1).float().mean().item(), 2),
        "unique_policies": len({tuple(row) for row in keep.tolist()}),
        "labels": y.tolist(),
        "masks": ["".join("1" if b else "0" for b in row) for row in keep.tolist()],
    }


def load_masks(path: str) -> torch.Tensor:
    """The masks of a file written by this script as a float [N, K] tensor of 0/1."""
    try:
        with open(path) as f:
            rows = json.load(f)["masks"]
    except FileNotFoundError:
        raise SystemExit(f"--masks {path}: no such file") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SystemExit(f"--masks {path}: not a masks file from blockdrop_policy_masks.py ({e})") from None
    if not rows or any(len(r) != len(rows[0]) or set(r) - {"0", "1"} for r in rows):
        raise SystemExit(f"--masks {path}: 'masks' must be equal-length strings of 0 and 1")
    return torch.tensor([[c == "1" for c in r] for r in rows], dtype=torch.float32)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a BlockDrop curriculum/finetune stage's model.pt (any fsspec URL)")
    parser.add_argument(
        "test",
        help="the test split's shard folder (e.g. the digits stage's outputs.test), or 'digits' for "
        "scikit-learn's digits test split as the digits stage shards it",
    )
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--source", help="how the checkpoint was made (e.g. the pipeline command), kept in the file")
    args = parser.parse_args(argv)
    record = policy_masks(args.checkpoint, args.test, args.images)
    if args.source:
        record = {"source": args.source, **record}
    tmp = f"{args.out}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, args.out)  # never a half-written file
    summary = {k: record[k] for k in ("model", "num_blocks", "accuracy", "blocks_mean", "unique_policies")}
    summary["images"] = len(record["masks"])
    summary["out"] = args.out
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
