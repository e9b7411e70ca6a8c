"""The six DCAN paper recipes end to end inline in smoke mode (2 optimizer steps per training stage on
batches of at most 8, 2 evaluation batches), on tiny datasets in the real GTA5 / SYNTHIA / Cityscapes
on-disk layouts. Overridden: data paths, image sizes (the recipes' 512x1024 crops take minutes a
step on a CPU) and, for speed, the networks' debug flavours without weights files; one recipe also
runs with its full-size networks and ImageNet-weight files saved from torchvision's own (randomly
initialised) models, as the recipe reads them."""

import json
from pathlib import Path

import numpy as np
import png
import pytest
import torch
import torchvision
from PIL import Image

from frugalcv.sharding.sources._common import CITYSCAPES_ID_TO_TRAIN_ID
from frugalcv.sharding.sources.street_scenes import street_scene
from frugalcv.sharding.sources.synthia import SYNTHIA_ID_TO_TRAIN_ID
from frugalcv.workflows.pipeline import runner
from frugalcv.workflows.pipeline.config import load_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
STAGES = ["source_data", "cityscapes", "source_only", "generator", "train", "evaluate"]
WEIGHTS = {"vgg16-397923af.pth": torchvision.models.vgg16, "vgg19-dcbb9e9d.pth": torchvision.models.vgg19,
           "resnet101-63fe2227.pth": torchvision.models.resnet101, "resnet50-0676ba61.pth": torchvision.models.resnet50}


def ids_from_train_ids(mask: np.ndarray, table: dict[int, int], dtype) -> np.ndarray:
    """A dataset's own label ids for a train-id mask (the converters map them back)."""
    inverse = np.zeros(256, dtype=np.int64)
    inverse[255] = 0  # "unlabeled" in every table
    for label_id, train_id in sorted(table.items(), reverse=True):
        inverse[train_id] = label_id
    return inverse[mask].astype(dtype)


def scene(domain: str, i: int, size=(128, 64)) -> tuple[Image.Image, np.ndarray]:
    image, mask = street_scene(domain, i)
    if image.shape[1::-1] != size:
        return Image.fromarray(image).resize(size), np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
    return Image.fromarray(image), mask


def make_gta5(root: Path) -> Path:
    """images/NNNNN.png + labels/NNNNN.png (palette PNGs of Cityscapes ids); one frame of another size."""
    base = root / "gta5"
    (base / "images").mkdir(parents=True)
    (base / "labels").mkdir()
    for n in range(5):
        image, mask = scene("source", n, (120, 60) if n == 3 else (128, 64))
        image.save(base / "images" / f"{n + 1:05d}.png")
        label = Image.fromarray(ids_from_train_ids(mask, CITYSCAPES_ID_TO_TRAIN_ID, np.uint8)).convert("P")
        label.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
        label.save(base / "labels" / f"{n + 1:05d}.png")
    return base


def make_synthia(root: Path) -> Path:
    """RGB/*.png + GT/LABELS/*.png: 16-bit, the SYNTHIA class id in the first channel."""
    base = root / "synthia"
    (base / "RGB").mkdir(parents=True)
    (base / "GT" / "LABELS").mkdir(parents=True)
    for n in range(5):
        image, mask = scene("source", n)
        image.save(base / "RGB" / f"{n:07d}.png")
        ids = ids_from_train_ids(mask, SYNTHIA_ID_TO_TRAIN_ID, np.uint16)
        h, w = ids.shape
        with open(base / "GT" / "LABELS" / f"{n:07d}.png", "wb") as f:
            png.Writer(w, h, greyscale=False, bitdepth=16).write(f, np.dstack([ids, ids, ids]).reshape(h, w * 3))
    return base


def make_cityscapes(root: Path) -> Path:
    """leftImg8bit/{split}/{city}/*_leftImg8bit.png + gtFine/{split}/{city}/*_gtFine_labelIds.png."""
    base = root / "cityscapes"
    for split, cities in (("train", ["aachen", "bochum"]), ("val", ["frankfurt"])):
        for c, city in enumerate(cities):
            (base / "leftImg8bit" / split / city).mkdir(parents=True)
            (base / "gtFine" / split / city).mkdir(parents=True)
            for n in range(3):
                image, mask = scene("target" if split == "train" else "val", 10 * c + n)
                stem = f"{city}_{c:06d}_{n:06d}"
                image.save(base / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
                ids = ids_from_train_ids(mask, CITYSCAPES_ID_TO_TRAIN_ID, np.uint8)
                Image.fromarray(ids).save(base / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    return base


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("dcan-datasets")
    return {"gta5": make_gta5(root), "synthia": make_synthia(root), "cityscapes": make_cityscapes(root)}


def weights_files(folder: Path, names: list[str]) -> Path:
    folder.mkdir(exist_ok=True)
    for name in names:
        torch.save(WEIGHTS[name](weights=None).state_dict(), folder / name)
    return folder


RECIPES = sorted(p.name for p in (REPO / "pipelines").glob("dcan-*-cityscapes-*.yaml"))


def test_there_are_six_recipes():
    assert len(RECIPES) == 6, RECIPES


def run_recipe(recipe: str, datasets: dict, root: Path, weights: Path | None) -> None:
    source = "gta5" if "-gta5-" in recipe else "synthia"
    overrides = [f"storage.root={root}", "executor.kind=inline", "smoke_steps=2",
                 f"stages.source_data.params.src={datasets[source]}",
                 f"stages.cityscapes.params.src={datasets['cityscapes']}",
                 "stages.evaluate.params.size=[32,64]", "stages.evaluate.params.batch_size=2"]
    cfg0 = load_pipeline(REPO / "pipelines" / recipe, overrides)
    for stage in ("source_only", "generator", "train"):
        overrides += [f"stages.{stage}.params.crop=[64,128]"]
        spec = next(s for s in cfg0.stages if s.name == stage)
        if spec.params.get("source_resize") is not None:
            overrides += [f"stages.{stage}.params.source_resize=[64,128]"]
        for key in ("weights", "generator_weights"):
            if key in spec.params:
                value = "null" if weights is None else str(weights / Path(spec.params[key]).name)
                overrides += [f"stages.{stage}.params.{key}={value}"]
        if weights is None:
            overrides += [f"stages.{stage}.params.debug=true"]
    cfg = load_pipeline(REPO / "pipelines" / recipe, overrides)
    assert [s.name for s in cfg.stages] == STAGES
    rid = runner.run_pipeline(cfg, "inline", track=False, printer=print)
    st = runner.status(rid, str(root))
    assert st["status"] == "finished", st
    evaluate = {s["stage"]: s for s in st["stages"]}["evaluate"]
    metrics = json.loads(Path(evaluate["outputs"]["metrics"]["uri"]).read_text())
    assert set(metrics) == {"Source only", "DCAN"}
    report = Path(evaluate["outputs"]["report"]["uri"]).read_text()
    header = next(line for line in report.splitlines() if line.startswith("| Method | road"))
    assert header.count("|") - 3 == (16 if source == "synthia" else 19)  # classes scored, then mIoU
    assert 0.0 <= metrics["DCAN"]["pixel_accuracy"] <= 1.0


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_in_smoke_mode_on_the_real_layouts(recipe, datasets, tmp_path):
    run_recipe(recipe, datasets, tmp_path, None)


def test_a_recipe_runs_with_its_full_size_networks_and_weights_files(datasets, tmp_path):
    weights = weights_files(tmp_path / "weights", ["resnet50-0676ba61.pth", "vgg19-dcbb9e9d.pth"])
    run_recipe("dcan-synthia-cityscapes-pspnet.yaml", datasets, tmp_path / "root", weights)
