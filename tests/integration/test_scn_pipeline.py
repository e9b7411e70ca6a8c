"""SCN through the pipeline: the shapes demo in smoke mode under every executor, and ``scn.train`` on
the local 2-node Slurm cluster (gloo DDP), equal to the local 2-rank run, also when preempted mid-run."""

import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

from frugalcv.workflows.pipeline import runner
from frugalcv.workflows.pipeline.config import load_pipeline, pipeline_from_dict

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "pipelines" / "scn-shapes.yaml"
STAGES = ["digits", "shapes", "pretrain", "train", "train_no_offset", "evaluate"]


def check_demo(root: Path, rid: str) -> dict:
    st = runner.status(rid, str(root))
    assert st["status"] == "finished", st
    assert {s["stage"]: s["state"] for s in st["stages"]} == dict.fromkeys(STAGES, "finished")
    stages = {s["stage"]: s for s in st["stages"]}
    metrics = stages["evaluate"]["metrics"]
    for key in ("test_mse", "no_offset_test_mse", "mse_ratio", "probe_accuracy", "probe_accuracy_original",
                "probe_accuracy_no_offset"):
        assert key in metrics, sorted(metrics)
    assert metrics["mse_ratio"] == pytest.approx(metrics["test_mse"] / metrics["no_offset_test_mse"])
    report = Path(stages["evaluate"]["outputs"]["report"]["uri"])
    text = report.read_text()
    assert "| Model | Test MSE | Linear probe top-1 (%) |" in text and "| SCN without offsets |" in text
    assert (report.parent / "test_mse.png").stat().st_size > 0
    model = torch.load(stages["train"]["outputs"]["checkpoint"]["uri"], weights_only=True)
    assert model["format"] == "scn" and model["scn_args"]["use_offset"] and model["history"]
    blind = torch.load(stages["train_no_offset"]["outputs"]["checkpoint"]["uri"], weights_only=True)
    assert blind["scn_args"]["use_offset"] is False
    return st


@pytest.mark.parametrize("kind", ["inline", "local", "slurm"])
def test_the_demo_runs_in_smoke_mode_under_every_executor(kind, tmp_path, request):
    if kind == "slurm":
        request.getfixturevalue("slurm_cluster")
    cfg = load_pipeline(DEMO, [f"storage.root={tmp_path}", f"executor.kind={kind}", "smoke_steps=2"])
    assert [s.name for s in cfg.stages] == STAGES
    rid = runner.run_pipeline(cfg, track=False, printer=print)
    st = check_demo(tmp_path, rid)
    if kind == "slurm":
        assert all(s["slurm_job_ids"] for s in st["stages"])


def test_pixel_targets_record_reconstructions_per_epoch(tmp_path):
    cfg = load_pipeline(DEMO, [f"storage.root={tmp_path}", "smoke_steps=2", "stages.train.params.target=pixels",
                               "stages.train.params.target_size=8"])
    rid = runner.run_pipeline(cfg, track=False, printer=print)
    stages = {s["stage"]: s for s in runner.status(rid, str(tmp_path))["stages"]}
    model = torch.load(stages["train"]["outputs"]["checkpoint"]["uri"], weights_only=True)
    recon = model["reconstructions"]
    assert recon["kinds"] == [1, 2, 3] and tuple(recon["frames"].shape[1:]) == (3, 3, 8, 8)
    report = Path(stages["evaluate"]["outputs"]["report"]["uri"])
    assert (report.parent / "reconstructions.png").stat().st_size > 0


def two_node(root: Path, kind: str, checkpoint_every: int = 4) -> object:
    """The shapes, then ``scn.train`` (a demo-sized CNN_M, 16 iterations) as 2 ranks on 2 nodes."""
    return pipeline_from_dict({
        "name": "scn-two-node", "storage": {"root": str(root)},
        "executor": {"kind": kind, "slurm": {"timeout_min": 30, "mem_gb": 2, "cpus_per_task": 1}},
        "stages": [
            {"name": "shapes", "uses": "shard", "params": {"kind": "scn-shapes", "src": "-"}},
            {"name": "train", "uses": "scn.train", "resources": {"nodes": 2}, "checkpoint_every": checkpoint_every,
             "num_workers": 1,
             "inputs": {"train": "${stages.shapes.outputs.train}"},
             "params": {"backbone": "cnn_m", "width": 0.125, "pool": 1, "patch_size": 32, "dropout": 0.5,
                        "iterations": 16, "batch_size": 8, "log_every": 4, "seed": 0}},
        ],
    })


def train_sha(root: Path, rid: str) -> str:
    return runner.status(rid, str(root))["stages"][1]["outputs"]["checkpoint"]["sha256"]


@pytest.fixture(scope="module")
def local_two_rank_sha(tmp_path_factory):
    root = tmp_path_factory.mktemp("scn-local2")
    return train_sha(root, runner.run_pipeline(two_node(root, "local"), track=False, printer=print))


def test_scn_train_on_two_nodes_matches_the_local_two_rank_run(slurm_cluster, tmp_path, local_two_rank_sha):
    rid = runner.run_pipeline(two_node(tmp_path, "slurm"), track=False, printer=print)
    st = runner.status(rid, str(tmp_path))
    job = st["stages"][1]["slurm_job_ids"][0]
    logs = sorted(p.name for p in (tmp_path / "runs" / rid / "slurm" / job).glob("*_log.out"))
    assert logs == [f"{job}_0_log.out", f"{job}_1_log.out"]  # two ranks, one per node
    assert train_sha(tmp_path, rid) == local_two_rank_sha


def test_scn_train_preempted_mid_run_resumes_to_the_same_sha256(slurm_cluster, tmp_path, local_two_rank_sha):
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
