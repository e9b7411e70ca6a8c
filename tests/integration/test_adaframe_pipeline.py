"""AdaFrame through the pipeline: the demo in smoke mode end to end under every executor (inline, local,
slurm), and the FCVID and ActivityNet recipes in smoke mode (2 optimizer steps per training stage on
batches of at most 8, 2 evaluation batches) on tiny frame folders in their real layout
(``<split>/<class>/<video>/<frame>.jpg``) with weights files saved from torchvision's own randomly
initialised ResNet-101 and MobileNetV2. Only data paths, weight paths and frame sizes are overridden
(224x224 ResNet-101 frames would take minutes on a CPU). And ``adaframe.train`` preempted on the local
Slurm cluster (USR2, requeued under the same job id), resumed to the uninterrupted run's sha256."""

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from frugalcv.workflows.pipeline import runner
from frugalcv.workflows.pipeline.config import load_pipeline, pipeline_from_dict

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "pipelines" / "adaframe-demo.yaml"
DEMO_STAGES = ["videos", "train_features", "test_features", "train", "avgpool", "lstm", "evaluate"]
RECIPE_STAGES = ["features", "test_features", "train", "baselines", "evaluate"]
WEIGHTS = {"resnet101-63fe2227.pth": torchvision.models.resnet101,
           "mobilenet_v2-b0353104.pth": torchvision.models.mobilenet_v2}
HEADER = "| Method | Frames | mAP (%) | Top-1 (%) | GFLOPs |"


def check_run(root: Path, rid: str, stages: list[str]) -> dict:
    st = runner.status(rid, str(root))
    assert st["status"] == "finished", st
    assert {s["stage"]: s["state"] for s in st["stages"]} == dict.fromkeys(stages, "finished")
    evaluate = {s["stage"]: s for s in st["stages"]}["evaluate"]
    metrics = evaluate["metrics"]
    for key in ("map", "top1", "frames_mean", "gflops_mean", "avgpool_map", "lstm_map", "frames_fraction"):
        assert key in metrics, sorted(metrics)
    report = Path(evaluate["outputs"]["report"]["uri"])
    text = report.read_text()
    assert HEADER in text and "| AVGPOOLING |" in text and "| LSTM |" in text and "| AdaFrame-" in text
    for png in ("map_vs_gflops.png", "stop_steps_per_class.png"):
        assert (report.parent / png).stat().st_size > 0, png
    saved = json.loads(Path(evaluate["outputs"]["metrics"]["uri"]).read_text())
    assert saved["metrics"]["map"] == pytest.approx(metrics["map"]) and saved["curve"]
    return metrics


@pytest.mark.parametrize("kind", ["inline", "local", "slurm"])
def test_the_demo_runs_in_smoke_mode_under_every_executor(kind, tmp_path, request):
    if kind == "slurm":
        request.getfixturevalue("slurm_cluster")
    cfg = load_pipeline(DEMO, [f"storage.root={tmp_path}", f"executor.kind={kind}", "smoke_steps=2"])
    assert [s.name for s in cfg.stages] == DEMO_STAGES
    rid = runner.run_pipeline(cfg, track=False, printer=print)
    metrics = check_run(tmp_path, rid, DEMO_STAGES)
    assert 1 <= metrics["frames_mean"] <= 10 and 0 <= metrics["map"] <= 1
    for k in (2, 4, 6, 8, 10):
        assert f"lstm_u{k}_map" in metrics and f"avgpool_r{k}_map" in metrics
    if kind == "slurm":
        assert all(s["slurm_job_ids"] for s in runner.status(rid, str(tmp_path))["stages"])


def make_frames(root: Path, splits: dict[str, int], classes=("bowling", "cooking", "skiing")) -> Path:
    """``root/frames/<split>/<class>/<video>/<frame>.jpg``: 48x64 JPEG frames, 3 to 5 a video; one
    training video of 27 frames (longer than the recipes' 25, so it is cut)."""
    base = root / "frames"
    rng = np.random.default_rng(0)
    for split, per_class in splits.items():
        for c, name in enumerate(classes):
            for v in range(per_class):
                folder = base / split / name / f"v_{split}_{c}{v}"
                folder.mkdir(parents=True)
                count = 27 if (split == "train" and c == v == 0) else 3 + (c + v) % 3
                for t in range(count):
                    pixels = np.clip(rng.normal(50 + 70 * c, 30, (48, 64, 3)), 0, 255).astype(np.uint8)
                    Image.fromarray(pixels).save(folder / f"{t + 1:05d}.jpg", quality=90)
    return base


@pytest.mark.parametrize(("recipe", "test_split"), [("adaframe-fcvid.yaml", "test"),
                                                     ("adaframe-activitynet.yaml", "val")])
def test_recipe_runs_in_smoke_mode_on_the_frames_layout(recipe, test_split, tmp_path):
    frames = make_frames(tmp_path / "dataset", {"train": 2, test_split: 1})
    weights = tmp_path / "runs" / "weights"
    weights.mkdir(parents=True)
    for name, build in WEIGHTS.items():
        torch.save(build(weights=None).state_dict(), weights / name)
    overrides = [f"storage.root={tmp_path / 'runs'}", "executor.kind=inline", "smoke_steps=2",
                 f"stages.features.inputs.frames={frames / 'train'}",
                 f"stages.test_features.inputs.frames={frames / test_split}"]
    for stage in ("features", "test_features"):
        overrides += [f"stages.{stage}.params.fine.size=32", f"stages.{stage}.params.coarse.size=16"]
    cfg = load_pipeline(REPO / "pipelines" / recipe, overrides)
    assert [s.name for s in cfg.stages] == RECIPE_STAGES
    train = next(s for s in cfg.stages if s.name == "train").params
    assert (train["hidden"], train["batch_size"]) == ((2048, 128) if "fcvid" in recipe else (1024, 64))
    rid = runner.run_pipeline(cfg, "inline", track=False, printer=print)
    metrics = check_run(tmp_path / "runs", rid, RECIPE_STAGES)
    stages = {s["stage"]: s for s in runner.status(rid, str(tmp_path / "runs"))["stages"]}
    assert stages["features"]["metrics"]["fine_dim"] == 2048 and stages["features"]["metrics"]["coarse_dim"] == 1280
    # GFLOPs: ResNet-101 on every frame glimpsed, MobileNetV2 on the 16 memory frames, the LSTM
    fine, coarse = stages["features"]["metrics"]["fine_gflops"], stages["features"]["metrics"]["coarse_gflops"]
    assert metrics["gflops_mean"] > metrics["frames_mean"] * fine + 16 * coarse
    assert metrics["avgpool_gflops_mean"] >= fine


# ------------------------------------------------------------------------------------ preemption


def resumable(root: Path, kind: str) -> object:
    """Digit videos, small pixel features, then ``adaframe.train`` for 3 epochs of 18 steps with a
    checkpoint every 5 steps and a log line per step; 2 CPUs a rank under every executor."""
    features = {"fine": {"model": "pixels", "size": 8}, "coarse": {"model": "pixels", "size": 8}}
    return pipeline_from_dict({
        "name": "adaframe-resume", "storage": {"root": str(root)},
        "executor": {"kind": kind, "slurm": {"timeout_min": 30, "mem_gb": 2, "cpus_per_task": 2}},
        "stages": [
            {"name": "videos", "uses": "shard", "params": {"kind": "video-digits", "src": "sklearn",
                                                           "splits": ["train"]}},
            {"name": "features", "uses": "video.extract", "inputs": {"frames": "${stages.videos.outputs.train}"},
             "params": features},
            {"name": "train", "uses": "adaframe.train", "checkpoint_every": 5, "num_workers": 1,
             "inputs": {"train": "${stages.features.outputs.features}"},
             "params": {"hidden": 32, "steps": 4, "cls_all_steps": True, "normalize": "standardize",
                        "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "epochs": 3, "batch_size": 64,
                        "log_every": 1, "seed": 0}},
        ],
    })


def train_record(root: Path, rid: str) -> dict:
    return {s["stage"]: s for s in runner.status(rid, str(root))["stages"]}["train"]


def test_adaframe_train_preempted_on_slurm_resumes_to_the_same_sha256(slurm_cluster, tmp_path):
    """USR2 (Slurm's warning before preemption) mid-run: the stage checkpoints, the job is requeued
    under the same id and resumes; its model file equals the uninterrupted run's, byte for byte."""
    whole = tmp_path / "whole"
    expected = train_record(whole, runner.run_pipeline(resumable(whole, "inline"), track=False,
                                                       printer=print))["outputs"]["checkpoint"]["sha256"]
    root, result = tmp_path / "preempted", {}

    def drive():
        try:
            result["rid"] = runner.run_pipeline(resumable(root, "slurm"), track=False, printer=print)
        except Exception as e:  # reported below
            result["error"] = e

    thread = threading.Thread(target=drive)
    thread.start()
    deadline, job = time.monotonic() + 300, None
    while time.monotonic() < deadline and thread.is_alive():
        found = list((root / "runs").glob("*/stages/train/checkpoints/step-*.pt"))
        if found:
            job = train_record(root, found[0].parts[-5])["slurm_job_ids"][0]
            subprocess.run(["scancel", "--signal=USR2", job], check=True)
            break
        time.sleep(0.1)
    thread.join(600)
    assert not thread.is_alive() and "error" not in result, result.get("error")
    assert job is not None, "no checkpoint appeared before the stage ended"
    train = train_record(root, result["rid"])
    assert train["state"] == "finished" and train["slurm_job_ids"] == [job]
    log = (root / "runs" / result["rid"] / "slurm" / job / f"{job}_0_log.out").read_text()
    assert f"Requeued job {job}" in log, log[-2000:]
    resumed = re.findall(r"resumed from \S+step-(\d+)\.pt \(step (\d+), epoch \d+\)", log)
    assert resumed and 0 < int(resumed[-1][1]) < 3 * 18, log[-2000:]
    assert train["outputs"]["checkpoint"]["sha256"] == expected
