"""LiteEval through the pipeline: the demo in smoke mode end to end under every executor (inline, local,
slurm); the FCVID and ActivityNet recipes in smoke mode on tiny frame folders in their real on-disk
layout (``<split>/<class>/<video>/<frame>.jpg``) with ImageNet-weight files saved from torchvision's
own (randomly initialised) MobileNetV2 and ResNet-101, overriding only data paths, weights, sizes and
the number of extraction tasks; and ``liteeval.train`` stopped by SIGTERM mid-epoch, resumed to the
uninterrupted run's sha256; both gates under DDP on two local ranks."""

import json
import os
import re
import signal
import sys
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
from frugalcv.workflows.pipeline.runner import PipelineFailed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "pipelines" / "liteeval-demo.yaml"
DEMO_STAGES = ["frames", "features", "val_features", "train", "train_dense", "train_sparse", "always_fine",
               "evaluate"]
WEIGHTS = {"mobilenet_v2-b0353104.pth": torchvision.models.mobilenet_v2,
           "resnet101-63fe2227.pth": torchvision.models.resnet101}


def stages_of(root: Path, rid: str) -> dict:
    st = runner.status(rid, str(root))
    assert st["status"] == "finished", st
    return {s["stage"]: s for s in st["stages"]}


def check_report(evaluate: dict, budgets: list[int]) -> dict:
    metrics = json.loads(Path(evaluate["outputs"]["metrics"]["uri"]).read_text())
    for key in ("map", "top1", "fine_fraction", "gflops_mean", "always_fine_map", "uniform_k_map", "seq_k_map"):
        assert key in metrics and np.isfinite(metrics[key]), (key, sorted(metrics))
    for k in budgets:
        for key in (f"online_top1_k{k}", f"seq_online_top1_k{k}", f"uniform_k{k}_map", f"seq_k{k}_map"):
            assert key in metrics, (key, sorted(metrics))
    assert 0.0 <= metrics["fine_fraction"] <= 1.0 and metrics["always_fine_fine_fraction"] == 1.0
    report = Path(evaluate["outputs"]["report"]["uri"])
    text = report.read_text()
    assert "| Method | mAP (%) | Top-1 (%) | Fine reads / video |" in text and "| Always fine |" in text
    assert "| K (fine reads) | LiteEval, online (%) | SEQ-K (%) |" in text
    for figure in ("map_vs_gflops.png", "online_accuracy.png", "fine_reads.png"):
        assert (report.parent / figure).stat().st_size > 0, figure
    return metrics


@pytest.mark.parametrize("kind", ["inline", "local", "slurm"])
def test_the_demo_runs_in_smoke_mode_under_every_executor(kind, tmp_path, request):
    if kind == "slurm":
        request.getfixturevalue("slurm_cluster")
    cfg = load_pipeline(DEMO, [f"storage.root={tmp_path}", f"executor.kind={kind}", "smoke_steps=2"])
    assert [s.name for s in cfg.stages] == DEMO_STAGES
    rid = runner.run_pipeline(cfg, track=False, printer=print)
    stages = stages_of(tmp_path, rid)
    if kind == "slurm":
        assert all(s["slurm_job_ids"] for s in stages.values())
    assert {name: s["state"] for name, s in stages.items()} == dict.fromkeys(DEMO_STAGES, "finished")
    metrics = check_report(stages["evaluate"], list(range(1, 17)))
    assert "extra_1_map" in metrics and "extra_2_map" in metrics and "informative_precision" in metrics
    model = torch.load(stages["train"]["outputs"]["checkpoint"]["uri"], weights_only=True)
    assert model["format"] == "liteeval" and model["gate"] == "learned" and model["features"]["max_frames"] == 16
    assert torch.load(stages["always_fine"]["outputs"]["checkpoint"]["uri"], weights_only=True)["gate"] == "always_fine"


# ------------------------------------------------------------------------------------ recipes


def write_frames(base: Path, splits: dict[str, int], classes=("archery", "bowling", "surfing")) -> None:
    """``base/<split>/<class>/<video>/<frame>.jpg``: videos of 3..5 frames of 48x64 (one per second)."""
    rng = np.random.default_rng(0)
    for split, per_class in splits.items():
        for c, name in enumerate(classes):
            for v in range(per_class):
                folder = base / split / name / f"v_{split}_{c}_{v:03d}"
                folder.mkdir(parents=True)
                for t in range(3 + (v + c) % 3):
                    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
                    frame[..., c] = 255  # a class colour
                    Image.fromarray(frame).save(folder / f"{t + 1:05d}.jpg", quality=90)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("liteeval-datasets")
    weights = root / "weights"
    weights.mkdir()
    for name, build in WEIGHTS.items():
        torch.save(build(weights=None).state_dict(), weights / name)
    write_frames(root / "fcvid" / "frames", {"train": 3, "test": 2})
    write_frames(root / "activitynet" / "frames", {"train": 3, "val": 2})
    return {"root": root, "weights": weights}


RECIPES = {"liteeval-fcvid.yaml": ("fcvid", "test"), "liteeval-activitynet.yaml": ("activitynet", "val")}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_runs_in_smoke_mode_on_the_real_layout(recipe, datasets, tmp_path):
    dataset, held_out = RECIPES[recipe]
    frames = datasets["root"] / dataset / "frames"
    extract = {"features": frames / "train", f"{held_out}_features": frames / held_out}
    overrides = [f"storage.root={tmp_path}", "executor.kind=inline", "smoke_steps=2"]
    for stage, folder in extract.items():
        overrides += [f"stages.{stage}.inputs.frames={folder}",
                      f"stages.{stage}.params.fine.weights={datasets['weights'] / 'resnet101-63fe2227.pth'}",
                      f"stages.{stage}.params.coarse.weights={datasets['weights'] / 'mobilenet_v2-b0353104.pth'}",
                      f"stages.{stage}.params.fine.size=64", f"stages.{stage}.params.coarse.size=32",
                      # 2 array tasks, not 16: the shards are byte-identical for any count, and each task
                      # builds ResNet-101 and MobileNetV2 (seconds apiece on a CPU) even with no shard to write
                      f"stages.{stage}.params.tasks=2"]
    for stage in ("train", "always_fine"):
        overrides += [f"stages.{stage}.params.max_frames=6"]
    overrides += ["stages.evaluate.params.budgets=[1,2,3,6]"]
    cfg = load_pipeline(REPO / "pipelines" / recipe, overrides)
    assert [s.name for s in cfg.stages] == [*extract, "train", "always_fine", "evaluate"]
    rid = runner.run_pipeline(cfg, track=False, printer=print)
    stages = stages_of(tmp_path, rid)
    assert stages["features"]["metrics"]["fine_dim"] == 2048 and stages["features"]["metrics"]["coarse_dim"] == 1280
    model = torch.load(stages["train"]["outputs"]["checkpoint"]["uri"], weights_only=True)
    expected = (512, 2048) if dataset == "fcvid" else (64, 512)  # the recipes' networks, not shrunk
    assert (model["dims"]["coarse_hidden"], model["dims"]["fine_hidden"]) == expected
    assert model["dims"]["num_classes"] == 3 and model["features"]["normalize"] == "l2"
    metrics = check_report(stages["evaluate"], [1, 2, 3, 6])
    # the backbones' cost dominates: at least the coarse network on every frame
    assert metrics["gflops_mean"] > stages["test_features" if held_out == "test" else "val_features"][
        "metrics"]["coarse_gflops"]


# ------------------------------------------------------------------------------------ resume

STEP_LINE = re.compile(r"^train step (\d+) epoch (\d+) ", re.M)
RESUMED = re.compile(r"resumed from (\S+) \(step (\d+), epoch (\d+)\)")
#: 1200 training videos // 64 per batch
STEPS = 18


def resumable(root: Path) -> object:
    """Digit videos, small pixel features, then ``liteeval.train`` for 2 epochs with a checkpoint every 5
    steps, 2 loader workers and a log line per step."""
    features = {"fine": {"model": "pixels", "size": 16}, "coarse": {"model": "pixels", "size": 8}}
    return pipeline_from_dict({
        "name": "liteeval-resume", "storage": {"root": str(root)}, "executor": {"kind": "inline"},
        "stages": [
            {"name": "frames", "uses": "shard", "params": {"kind": "video-digits", "src": "sklearn",
                                                           "splits": ["train"]}},
            {"name": "features", "uses": "video.extract", "inputs": {"frames": "${stages.frames.outputs.train}"},
             "params": features},
            {"name": "train", "uses": "liteeval.train", "checkpoint_every": 5, "num_workers": 2,
             "inputs": {"train": "${stages.features.outputs.features}"},
             "params": {"coarse_hidden": 8, "fine_hidden": 16, "gamma": 0.3, "epochs": 2, "batch_size": 64,
                        "lr": 1e-3, "log_every": 1, "seed": 0}},
        ],
    })


class StepSpy:
    """sys.stdout for the inline run: passes text on and remembers the newest logged training step."""

    def __init__(self, out):
        self.out, self.step, self._line = out, -1, ""

    def write(self, text: str) -> int:
        self._line += text
        *lines, self._line = self._line.split("\n")
        for line in lines:
            if m := STEP_LINE.match(line):
                self.step = max(self.step, int(m.group(1)))
        return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()


def train_sha(root: Path, rid: str) -> str:
    return {s["stage"]: s for s in runner.status(rid, str(root))["stages"]}["train"]["outputs"]["checkpoint"]["sha256"]


def test_train_stopped_by_sigterm_mid_epoch_resumes_to_the_same_sha256(tmp_path, monkeypatch, request):
    expected = train_sha(tmp_path / "whole", runner.run_pipeline(resumable(tmp_path / "whole"), track=False,
                                                                 printer=print))
    at = STEPS + 7  # mid second epoch, off the 5-step checkpoint cadence
    spy = StepSpy(sys.stdout)
    monkeypatch.setattr(sys, "stdout", spy)
    stray: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stray.append(signum))
    request.addfinalizer(lambda: signal.signal(signal.SIGTERM, previous))
    done, sent = threading.Event(), []

    def watch():
        deadline = time.monotonic() + 600
        while not done.is_set() and time.monotonic() < deadline:
            if spy.step >= at:
                sent.append(spy.step)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    root = tmp_path / "stopped"
    with pytest.raises(PipelineFailed):
        runner.run_pipeline(resumable(root), track=False, printer=print)
    done.set()
    watcher.join(30)
    monkeypatch.setattr(sys, "stdout", spy.out)
    assert sent and not stray, (sent, stray)
    rid = sorted((root / "runs").glob("*/run.json"))[-1].parent.name
    train = {s["stage"]: s for s in runner.status(rid, str(root))["stages"]}["train"]
    m = re.match(r"interrupted: preempted by SIGTERM at step (\d+); checkpoint (\S+);", train["error"])
    assert m, train["error"]
    stopped = int(m.group(1))
    assert sent[0] <= stopped <= sent[0] + 3 and stopped % STEPS not in (0,), stopped

    assert runner.resume_run(rid, str(root), printer=print) == rid
    log = (root / "runs" / rid / "logs" / "train.log").read_text()
    resumed = RESUMED.findall(log)
    assert resumed and int(resumed[-1][1]) == stopped and int(resumed[-1][2]) == stopped // STEPS, resumed
    assert train_sha(root, rid) == expected


# ------------------------------------------------------------------------------------ DDP


def test_both_gates_train_on_two_local_ranks(tmp_path):
    """gloo DDP over 2 ranks: LiteEval's gate gets gradients on every rank; the always-fine network's
    unused gate is frozen, so DDP waits for no gradient of it."""
    features = {"fine": {"model": "pixels", "size": 16}, "coarse": {"model": "pixels", "size": 8}}

    def train(gate: str) -> dict:
        return {"name": f"train_{gate}", "uses": "liteeval.train", "resources": {"nodes": 2}, "num_workers": 1,
                "inputs": {"train": "${stages.features.outputs.features}"},
                "params": {"gate": gate, "coarse_hidden": 8, "fine_hidden": 16, "epochs": 1, "batch_size": 64,
                           "lr": 1e-3, "seed": 0}}

    cfg = pipeline_from_dict({
        "name": "liteeval-ddp", "storage": {"root": str(tmp_path)}, "executor": {"kind": "local"},
        "stages": [
            {"name": "frames", "uses": "shard", "params": {"kind": "video-digits", "src": "sklearn",
                                                           "splits": ["train"]}},
            {"name": "features", "uses": "video.extract", "inputs": {"frames": "${stages.frames.outputs.train}"},
             "params": features},
            train("learned"), train("always_fine"),
        ],
    })
    rid = runner.run_pipeline(cfg, track=False, printer=print)
    stages = stages_of(tmp_path, rid)
    assert stages["train_always_fine"]["metrics"]["train_fine_fraction"] == 1.0
    assert 0.0 < stages["train_learned"]["metrics"]["train_fine_fraction"] < 1.0
    for gate in ("learned", "always_fine"):
        model = torch.load(stages[f"train_{gate}"]["outputs"]["checkpoint"]["uri"], weights_only=True)
        assert model["gate"] == gate and all(torch.isfinite(v).all() for v in model["net"].values())
