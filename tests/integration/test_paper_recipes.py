"""The three BlockDrop paper recipes, unchanged but for their data paths, end to end inline in smoke
mode (2 optimizer steps per training stage on batches of at most 8, 2 evaluation batches) on tiny
datasets in the real on-disk layouts: CIFAR-10 / CIFAR-100 python batches, and an ImageNet-style
class-folder tree of JPEGs of varied sizes with weights files saved from torchvision's ResNet-101
and ResNet-18 where the recipe reads them (``${storage.root}/weights/``)."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from dataset_fixtures import make_cifar10, make_cifar100
from PIL import Image

from frugalcv.workflows.kit import read_state
from frugalcv.workflows.pipeline import runner
from frugalcv.workflows.pipeline.config import load_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
PIPELINES = REPO / "pipelines"
STAGES = ["data", "pretrain", "curriculum", "finetune", "evaluate"]

# (width, height): ImageNet's photos are of every size and aspect ratio, some smaller than the crop
IMAGENET_CLASSES = ["n01440764", "n01443537", "n01484850"]
TRAIN_SIZES = [(80, 60), (300, 200), (200, 300), (127, 93), (64, 64), (250, 187)]
VAL_SIZES = [(60, 80), (299, 211), (176, 144)]


def make_imagenet(root: Path, train_per_class: int = 4, val_per_class: int = 2) -> Path:
    """``root/imagenet/{train,val}/<wnid>/<wnid>_<n>.JPEG``, RGB JPEGs of varied sizes (one grayscale)."""
    base = root / "imagenet"
    rng = np.random.default_rng(0)
    n = 0
    for split, count, sizes in (("train", train_per_class, TRAIN_SIZES), ("val", val_per_class, VAL_SIZES)):
        for c, wnid in enumerate(IMAGENET_CLASSES):
            folder = base / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                w, h = sizes[(c * count + i) % len(sizes)]
                # a smooth class colour plus noise: JPEG-compressible, not constant
                pixels = np.clip(rng.normal(60 + 70 * c, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels)
                if split == "train" and i == 0 and c == 0:
                    image = image.convert("L")  # ImageNet has grayscale JPEGs too
                name = f"{wnid}_{n}.JPEG" if split == "train" else f"ILSVRC2012_val_{n:08d}.JPEG"
                image.save(folder / name, format="JPEG", quality=85)
                n += 1
    return base


def run_recipe(path: Path, overrides: list[str], stages: list[str] = STAGES) -> tuple[dict, float]:
    cfg = load_pipeline(path, [*overrides, "executor.kind=inline", "smoke_steps=2"])
    assert [s.name for s in cfg.stages] == stages
    t0 = time.monotonic()
    rid = runner.run_pipeline(cfg, "inline", track=False)
    took = time.monotonic() - t0
    return runner.status(rid, cfg.storage.root), took


def check_evaluation(st: dict, num_blocks: int) -> dict:
    assert st["status"] == "finished", st
    states = {s["stage"]: s["state"] for s in st["stages"]}
    assert states == dict.fromkeys(STAGES, "finished"), states
    stages = {s["stage"]: s for s in st["stages"]}
    assert 0.0 <= stages["pretrain"]["metrics"]["val_accuracy"] <= 1.0
    for name in ("curriculum", "finetune"):
        assert Path(stages[name]["outputs"]["checkpoint"]["uri"]).stat().st_size > 0, name
    evaluate = stages["evaluate"]
    report = Path(evaluate["outputs"]["report"]["uri"])
    text = report.read_text()
    assert "## Results" in text
    assert "| Model | Accuracy (%) | Blocks | FLOPs | Speed-up | Unique policies |" in text
    assert "| Full ResNet | " in text and "| BlockDrop | " in text
    assert "## Heuristic baselines at the same K" in text
    metrics = json.loads(Path(evaluate["outputs"]["metrics"]["uri"]).read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert 0.0 <= metrics["blocks_mean"] <= num_blocks
    assert metrics["flops_mean"] > 0
    assert metrics["num_blocks"] == num_blocks
    for key in ("accuracy", "blocks_mean", "flops_mean"):
        assert evaluate["metrics"][key] == pytest.approx(metrics[key]), key
    return metrics


@pytest.mark.parametrize(("recipe", "make", "classes"), [
    ("blockdrop-cifar10-resnet110.yaml", make_cifar10, 10),
    ("blockdrop-cifar100-resnet110.yaml", make_cifar100, 100),
], ids=["cifar10", "cifar100"])
def test_cifar_recipe_smoke(recipe, make, classes, tmp_path):
    src = make(tmp_path / "downloads")
    st, took = run_recipe(PIPELINES / recipe, [f"storage.root={tmp_path / 'runs'}",
                                               f"stages.data.params.src={src}"])
    metrics = check_evaluation(st, num_blocks=54)
    stages = {s["stage"]: s for s in st["stages"]}
    assert Path(stages["data"]["outputs"]["train"]["uri"]).is_relative_to(tmp_path / "runs" / "data")
    print(f"{recipe} smoke: {took:.0f}s, accuracy {metrics['accuracy']:.3f}, "
          f"{metrics['blocks_mean']:.1f} of 54 blocks ({classes} classes)")


def test_imagenet_recipe_smoke(tmp_path):
    src = make_imagenet(tmp_path / "datasets")
    root = tmp_path / "runs"
    weights = root / "weights"  # where the recipe reads them: ${storage.root}/weights/
    weights.mkdir(parents=True)
    torch.manual_seed(0)
    resnet101 = torchvision.models.resnet101(weights=None).state_dict()
    resnet18 = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(resnet101, weights / "resnet101-63fe2227.pth")
    torch.save(resnet18, weights / "resnet18-f37072fd.pth")
    st, took = run_recipe(PIPELINES / "blockdrop-imagenet-resnet101.yaml",
                          [f"storage.root={root}", f"stages.data.params.src={src}"])
    metrics = check_evaluation(st, num_blocks=33)
    stages = {s["stage"]: s for s in st["stages"]}
    assert set(stages["data"]["outputs"]) == {"train", "val"}
    # pretrain (epochs: 0) checkpoints torchvision's ResNet-101 as read, every tensor
    pretrained = read_state(stages["pretrain"]["outputs"]["checkpoint"]["uri"])
    assert pretrained["preprocess"]["augment"] == "imagenet" and pretrained["preprocess"]["image_size"] == 224
    assert sorted(pretrained["resnet"]) == sorted(resnet101)
    for k, v in resnet101.items():
        assert torch.equal(pretrained["resnet"][k], v), k
    # the policy started from ResNet-18's stem and first blocks: 2 Adam steps at lr 1e-4 move a weight by < 1e-3
    policy = read_state(stages["curriculum"]["outputs"]["checkpoint"]["uri"])["policy"]
    convs = [k for k in policy if "conv" in k or k.endswith("downsample.0.weight")]
    assert len(convs) == 1 + 4 * 2 + 3
    for k in convs:
        assert torch.allclose(policy[k], resnet18[k], atol=1e-3), k
    print(f"imagenet smoke: {took:.0f}s, accuracy {metrics['accuracy']:.3f}, "
          f"{metrics['blocks_mean']:.1f} of 33 blocks")


def test_digits_resnet110_recipe_smoke(tmp_path):
    """The ResNet-110 recipe on scikit-learn's digits (the masks of benchmarks/blockdrop_inference.py)."""
    stages = ["digits", "pretrain", "curriculum", "finetune", "evaluate"]
    st, took = run_recipe(PIPELINES / "blockdrop-digits-resnet110.yaml", [f"storage.root={tmp_path / 'runs'}"],
                          stages)
    assert st["status"] == "finished", st
    assert {s["stage"]: s["state"] for s in st["stages"]} == dict.fromkeys(stages, "finished"), st
    evaluate = {s["stage"]: s for s in st["stages"]}["evaluate"]
    assert "| BlockDrop" in Path(evaluate["outputs"]["report"]["uri"]).read_text()
    metrics = json.loads(Path(evaluate["outputs"]["metrics"]["uri"]).read_text())
    assert metrics["num_blocks"] == 54 and 0.0 <= metrics["blocks_mean"] <= 54
    print(f"blockdrop-digits-resnet110 smoke: {took:.0f}s, {metrics['blocks_mean']:.1f} of 54 blocks")
