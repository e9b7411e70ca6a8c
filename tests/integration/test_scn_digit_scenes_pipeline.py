"""The SCN digit-scenes demo through the pipeline in smoke mode (inline): every stage runs, the
evaluation reports the regression errors and the three probes, and the report holds its table."""

from pathlib import Path

import pytest
import torch

from frugalcv.workflows.pipeline import runner
from frugalcv.workflows.pipeline.config import load_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DEMO = Path(__file__).resolve().parents[2] / "pipelines" / "scn-digit-scenes.yaml"
STAGES = ["digits", "scenes", "pretrain", "train", "train_no_offset", "evaluate"]


def test_the_digit_scenes_demo_runs_in_smoke_mode(tmp_path):
    cfg = load_pipeline(DEMO, [f"storage.root={tmp_path}", "smoke_steps=2"])
    assert [s.name for s in cfg.stages] == STAGES
    assert cfg.stage("scenes").params["kind"] == "scn-digit-scenes"
    rid = runner.run_pipeline(cfg, track=False, printer=print)
    st = runner.status(rid, str(tmp_path))
    assert st["status"] == "finished", st
    assert {s["stage"]: s["state"] for s in st["stages"]} == dict.fromkeys(STAGES, "finished")
    stages = {s["stage"]: s for s in st["stages"]}
    metrics = stages["evaluate"]["metrics"]
    for key in ("test_mse", "no_offset_test_mse", "mse_ratio", "probe_accuracy", "probe_accuracy_original",
                "probe_accuracy_no_offset"):
        assert key in metrics, sorted(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in metrics if k.startswith("probe_"))
    report = Path(stages["evaluate"]["outputs"]["report"]["uri"]).read_text()
    assert "| Model | Test MSE | Linear probe top-1 (%) |" in report
    assert "fitted on" in report and "labelled patches" in report
    model = torch.load(stages["train"]["outputs"]["checkpoint"]["uri"], weights_only=True)
    assert model["scn_args"]["use_offset"] and model["scn_args"]["train_convs"]
