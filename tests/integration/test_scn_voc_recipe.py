"""The SCN paper recipe (`pipelines/scn-voc.yaml`) end to end in smoke mode under every executor, on tiny VOC 2012 and
VOC 2007 trees in the real layout and a proposals CSV in the documented format: EdgeBox-style pairs mined
by ``scn.mine`` (a 2-task array), the VOC 2007 image-level shards, ``scn.train`` and the linear-probe
mAP of ``scn.evaluate``. Overridden: the data paths, the patch size, the backbone (its debug flavour
without the ImageNet weights file, for speed) and, on the local Slurm cluster, the recipe's GPU and
memory requests."""

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


# what the local Slurm cluster has: no GPUs, a few GB
SLURM_SIZES = ["executor.slurm.gpus_per_node=0", "executor.slurm.cpus_per_task=1", "executor.slurm.mem_gb=2",
               "executor.slurm.timeout_min=20", "stages.pairs.resources.cpus_per_task=1",
               "stages.pairs.resources.mem_gb=1", "stages.voc2007.resources.cpus_per_task=1",
               "stages.voc2007.resources.mem_gb=1"]


@pytest.mark.parametrize("kind", ["inline", "local", "slurm"])
def test_the_voc_recipe_runs_in_smoke_mode_on_the_real_layout(kind, tmp_path, request):
    if kind == "slurm":
        request.getfixturevalue("slurm_cluster")
    voc2012 = make_voc(tmp_path / "VOCdevkit2012")
    voc2007 = make_voc(tmp_path / "VOCdevkit2007")
    (voc2007 / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in VOC_SETS["val"]))
    proposals = proposals_csv(tmp_path / "edgeboxes.csv")
    cfg = load_pipeline(RECIPE, [
        f"storage.root={tmp_path / 'runs'}", f"executor.kind={kind}", "smoke_steps=2",
        f"stages.pairs.params.src={voc2012}", f"stages.pairs.params.proposals={proposals}",
        "stages.pairs.params.patch_size=32", "stages.pairs.params.max_shard_samples=4",
        "stages.pairs.params.tasks=2", "stages.pairs.params.min_size=8",
        f"stages.voc2007.params.src={voc2007}",
        "stages.train.params.weights=null", "stages.train.params.debug=true", "stages.train.params.patch_size=32",
        *(SLURM_SIZES if kind == "slurm" else []),
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
    if kind == "slurm":
        assert all(s["slurm_job_ids"] for s in st["stages"])
        assert all("_" in j for j in stages["pairs"]["slurm_job_ids"])  # the mining ran as a job array
