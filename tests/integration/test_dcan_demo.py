"""The shipped DCAN demo, unchanged, end to end: on the generated street scenes DCAN end to end must
beat source-only on target mIoU by at least 5 points, and two-stage training (Ch. 6, Table 6.3)."""

import time
from pathlib import Path

import pytest

from frugalcv.workflows.pipeline import runner
from frugalcv.workflows.pipeline.config import load_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.acceptance, pytest.mark.timeout(2400)]

DEMO = Path(__file__).resolve().parents[2] / "pipelines" / "dcan-demo.yaml"


def test_demo_pipeline_meets_the_dcan_targets(tmp_path):
    t0 = time.monotonic()
    rid = runner.run_pipeline(load_pipeline(DEMO, [f"storage.root={tmp_path}"]), printer=print)
    took = time.monotonic() - t0
    m = {s["stage"]: s for s in runner.status(rid, str(tmp_path))["stages"]}["evaluate"]["metrics"]
    summary = (f"target mIoU: source-only {100 * m['source_only_miou']:.1f}, two-stage {100 * m['two_stage_miou']:.1f}, "
               f"DCAN end to end {100 * m['miou']:.1f} (gain {100 * m['gain']:+.1f}); {took:.0f}s")
    print(summary)
    assert m["gain"] >= 0.05, summary
    assert m["miou"] >= m["two_stage_miou"], summary
