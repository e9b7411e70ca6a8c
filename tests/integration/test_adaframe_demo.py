"""The shipped AdaFrame demo, unchanged, end to end: on the generated digit videos AdaFrame must come
within 1 point of AVGPOOLING over every frame (mAP) while looking at no more than 60% of the frames
on average (Ch. 3, Table 3.1)."""

import time
from pathlib import Path

import pytest

from frugalcv.workflows.pipeline import runner
from frugalcv.workflows.pipeline.config import load_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.acceptance, pytest.mark.timeout(2400)]

DEMO = Path(__file__).resolve().parents[2] / "pipelines" / "adaframe-demo.yaml"


def test_demo_pipeline_meets_the_adaframe_targets(tmp_path):
    t0 = time.monotonic()
    rid = runner.run_pipeline(load_pipeline(DEMO, [f"storage.root={tmp_path}"]), printer=print)
    took = time.monotonic() - t0
    stages = {s["stage"]: s for s in runner.status(rid, str(tmp_path))["stages"]}
    m = stages["evaluate"]["metrics"]
    summary = (f"AdaFrame mAP {100 * m['map']:.1f} with {m['frames_mean']:.2f} of {m['video_frames_mean']:.0f} "
               f"frames ({100 * m['frames_fraction']:.0f}%), {m['gflops_mean']:.3g} GFLOPs; AVGPOOLING (all frames) "
               f"{100 * m['avgpool_map']:.1f}, LSTM (all frames) {100 * m['lstm_map']:.1f}, AdaFrame without the "
               f"early stop {100 * m['nostop_map']:.1f}; {took:.0f}s")
    print(summary)
    assert m["map"] >= m["avgpool_map"] - 0.01, summary
    assert m["frames_fraction"] <= 0.6, summary
    report = Path(stages["evaluate"]["outputs"]["report"]["uri"])
    assert "| AdaFrame-10 (μ=" in report.read_text()
    for png in ("map_vs_gflops.png", "stop_steps_per_class.png"):
        assert (report.parent / png).stat().st_size > 0, png
