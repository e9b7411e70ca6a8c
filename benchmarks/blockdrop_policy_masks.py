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

from frugalcv.workflows.blockdrop.data import digits_arrays, load_split, normalize, resize
from frugalcv.workflows.blockdrop.policy import greedy_policy
from frugalcv.workflows.blockdrop.stages import _models, load_state


def policy_masks(checkpoint: str, test: str, images: int) -> dict:
    """The greedy masks of ``checkpoint``'s policy on the first ``images`` images of ``test``."""
    state = load_state(checkpoint)
    resnet, policy = _models(state, None)
    if policy is None:
        raise SystemExit(f"{checkpoint}: holds no policy; give a curriculum or finetune stage's model.pt")
    x, y = digits_arrays("test") if test == "digits" else load_split(test)
    if len(y) < images:
        raise SystemExit(f"{test}: {len(y)} images, fewer than --images {images}")
    x = resize(normalize(x[:images], state["mean"], state["std"]), state.get("image_size"))
    y = y[:images]
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
        "image_size": state.get("image_size"),
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
