"""DCAN through the pipeline: the demo in smoke mode under every executor, and ``dcan.train`` on the
local 2-node Slurm cluster (gloo DDP), equal to the local 2-rank run, also when preempted mid-run."""

import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from frugalcv.workflows.pipeline import runner
from frugalcv.workflows.pipeline.config import load_pipeline, pipeline_from_dict

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "pipelines" / "dcan-demo.yaml"
STAGES = ["scenes", "source_only", "generator", "two_stage", "train", "evaluate"]


def check_demo(root: Path, rid: str) -> dict:
    st = runner.status(rid, str(root))
    assert st["status"] == "finished", st
    assert {s["stage"]: s["state"] for s in st["stages"]} == dict.fromkeys(STAGES, "finished")
    evaluate = {s["stage"]: s for s in st["stages"]}["evaluate"]
    metrics = evaluate["metrics"]
    for key in ("miou", "pixel_accuracy", "source_only_miou", "two_stage_miou", "gain"):
        assert key in metrics, sorted(metrics)
    assert metrics["gain"] == pytest.approx(metrics["miou"] - metrics["source_only_miou"])
    report = Path(evaluate["outputs"]["report"]["uri"]).read_text()
    assert "| Method | mIoU (%) | Pixel acc. (%) |" in report and "| Source only |" in report
    assert "| Method | road | sidewalk | building |" in report
    for figure in ("predictions.png", "translations.png"):
        assert (Path(evaluate["outputs"]["report"]["uri"]).parent / figure).stat().st_size > 0
    return st


@pytest.mark.parametrize("kind", ["inline", "local", "slurm"])
def test_the_demo_runs_in_smoke_mode_under_every_executor(kind, tmp_path, request):
    if kind == "slurm":
        request.getfixturevalue("slurm_cluster")
    cfg = load_pipeline(DEMO, [f"storage.root={tmp_path}", f"executor.kind={kind}", "smoke_steps=2"])
    rid = runner.run_pipeline(cfg, track=False, printer=print)
    st = check_demo(tmp_path, rid)
    if kind == "slurm":
        assert all(s["slurm_job_ids"] for s in st["stages"])


def two_node(root: Path, kind: str, checkpoint_every: int = 4) -> object:
    """The scenes, then ``dcan.train`` (demo networks, 16 iterations) as 2 ranks on 2 nodes."""
    return pipeline_from_dict({
        "name": "dcan-two-node", "storage": {"root": str(root)},
        "executor": {"kind": kind, "slurm": {"timeout_min": 30, "mem_gb": 2, "cpus_per_task": 1}},
        "stages": [
            {"name": "scenes", "uses": "shard", "params": {"kind": "street-scenes", "src": "sklearn"}},
            {"name": "train", "uses": "dcan.train", "resources": {"nodes": 2}, "checkpoint_every": checkpoint_every,
             "num_workers": 1,
             "inputs": {"source": "${stages.scenes.outputs.source}", "target": "${stages.scenes.outputs.target}"},
             "params": {"model": "fcn8s_vgg16", "width": 0.125, "generator_width": 0.125, "iterations": 16,
                        "batch_size": 4, "crop": [64, 64], "lr": 0.01, "momentum": 0.9, "log_every": 4,
                        "seed": 0}},
        ],
    })


def train_sha(root: Path, rid: str) -> str:
    return runner.status(rid, str(root))["stages"][1]["outputs"]["checkpoint"]["sha256"]


@pytest.fixture(scope="module")
def local_two_rank_sha(tmp_path_factory):
    root = tmp_path_factory.mktemp("dcan-local2")
    return train_sha(root, runner.run_pipeline(two_node(root, "local"), track=False, printer=print))


def test_dcan_train_on_two_nodes_matches_the_local_two_rank_run(slurm_cluster, tmp_path, local_two_rank_sha):
    rid = runner.run_pipeline(two_node(tmp_path, "slurm"), track=False, printer=print)
    st = runner.status(rid, str(tmp_path))
    job = st["stages"][1]["slurm_job_ids"][0]
    logs = sorted(p.name for p in (tmp_path / "runs" / rid / "slurm" / job).glob("*_log.out"))
    assert logs == [f"{job}_0_log.out", f"{job}_1_log.out"]  # two ranks, one per node
    assert train_sha(tmp_path, rid) == local_two_rank_sha


def test_dcan_train_preempted_mid_run_resumes_to_the_same_sha256(slurm_cluster, tmp_path, local_two_rank_sha):
    result = {}

    def drive():
        try:
            result["rid"] = runner.run_pipeline(two_node(tmp_path, "slurm"), track=False, printer=print)
        except Exception as e:  # reported below
            result["error"] = e

    thread = threading.Thread(target=drive)
    thread.start()
    deadline, job = time.monotonic() + 300, None
    while time.monotonic() < deadline and thread.is_alive():
        found = list((tmp_path / "runs").glob("*/stages/train/checkpoints/step-*.pt"))
        if found:
            rid = found[0].parts[-5]
            job = runner.status(rid, str(tmp_path))["stages"][1]["slurm_job_ids"][0]
            subprocess.run(["scancel", "--signal=USR2", job], check=True)
            break
        time.sleep(0.2)
    thread.join(600)
    assert not thread.is_alive() and "error" not in result, result.get("error")
    assert job is not None, "no checkpoint appeared before the stage ended"
    st = runner.status(result["rid"], str(tmp_path))
    assert st["stages"][1]["state"] == "finished" and st["stages"][1]["slurm_job_ids"] == [job]
    log = (tmp_path / "runs" / result["rid"] / "slurm" / job / f"{job}_0_log.out").read_text()
    assert f"Requeued job {job}" in log, log[-2000:]
    assert re.search(r"resumed from \S+step-(\d+)\.pt \(step (\d+), epoch \d+\)", log), log[-2000:]
    assert train_sha(tmp_path, result["rid"]) == local_two_rank_sha
