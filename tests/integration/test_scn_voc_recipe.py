"""The SCN paper recipe (`pipelines/scn-voc.yaml`) end to end inline in smoke mode, on tiny VOC 2012 and
VOC 2007 trees in the real layout and a proposals CSV in the documented format: EdgeBox-style pairs mined
by ``scn.mine`` (a 2-task array), the VOC 2007 image-level shards, ``scn.train`` and the linear-probe
mAP of ``scn.evaluate``. Overridden: the data paths, the patch size and the backbone (its debug flavour
without the ImageNet weights file, for speed)."""

from pathlib import Path

import pytest
from voc_fixtures import VOC_IMAGES, VOC_SETS, make_voc

from frugalcv.workflows.pipeline import runner
from frugalcv.workflows.pipeline.config import load_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

RECIPE = Path(__file__).resolve().parents[2] / "pipelines" / "scn-voc.yaml"


def proposals_csv(path: Path) -> Path:
    """Three boxes per image, scored, in ``image_id,x1,y1,x2,y2,score`` (0-based pixel edges)."""
    lines = ["image_id,x1,y1,x2,y2,score"]
    for image_id, (w, h, _) in VOC_IMAGES.items():
        for k, (fx, fy) in enumerate(((0.0, 0.0), (0.4, 0.1), (0.2, 0.5))):
            x1, y1 = int(fx * w), int(fy * h)
            lines.append(f"{image_id},{x1},{y1},{min(w, x1 + w // 2)},{min(h, y1 + h // 2)},{0.9 - 0.1 * k:.2f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_voc_recipe_runs_in_smoke_mode_on_the_real_layout(tmp_path):
    voc2012 = make_voc(tmp_path / "VOCdevkit2012")
    voc2007 = make_voc(tmp_path / "VOCdevkit2007")
    (voc2007 / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in VOC_SETS["val"]))
    proposals = proposals_csv(tmp_path / "edgeboxes.csv")
    cfg = load_pipeline(RECIPE, [
        f"storage.root={tmp_path / 'runs'}", "executor.kind=inline", "smoke_steps=2",
        f"stages.pairs.params.src={voc2012}", f"stages.pairs.params.proposals={proposals}",
        "stages.pairs.params.patch_size=32", "stages.pairs.params.max_shard_samples=4",
        "stages.pairs.params.tasks=2", "stages.pairs.params.min_size=8",
        f"stages.voc2007.params.src={voc2007}",
        "stages.train.params.weights=null", "stages.train.params.debug=true", "stages.train.params.patch_size=32",
    ])
    rid = runner.run_pipeline(cfg, track=False, printer=print)
    st = runner.status(rid, str(tmp_path / "runs"))
    assert st["status"] == "finished", st
    stages = {s["stage"]: s for s in st["stages"]}
    assert [s["stage"] for s in st["stages"]] == ["pairs", "voc2007", "train", "evaluate"]
    assert stages["pairs"]["metrics"]["train_samples"] > 0 and stages["pairs"]["metrics"]["val_samples"] > 0
    assert stages["voc2007"]["metrics"] == {"trainval_samples": 5.0, "trainval_shards": 1.0,
                                            "test_samples": 2.0, "test_shards": 1.0}
    metrics = stages["evaluate"]["metrics"]
    for key in ("test_mse", "probe_map", "probe_map_original"):
        assert key in metrics, sorted(metrics)
    assert 0.0 <= metrics["probe_map"] <= 1.0 and 0.0 <= metrics["probe_map_original"] <= 1.0
    report = Path(stages["evaluate"]["outputs"]["report"]["uri"]).read_text()
    assert "| Model | Test MSE | Linear probe mAP (%) |" in report
