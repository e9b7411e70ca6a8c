"""The shipped SCN shapes demo, unchanged, end to end: with offsets the test regression error must be
at most a third of the no-offset network's, and the linear probe on SCN's h1 must be at least as
accurate as on the original backbone's features; the run must print its results table."""

import re
import time
from pathlib import Path

import pytest

from frugalcv.cli import main
from frugalcv.workflows.pipeline import runner

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.acceptance, pytest.mark.timeout(1800)]

DEMO = str(Path(__file__).resolve().parents[2] / "pipelines" / "scn-shapes.yaml")


def test_demo_pipeline_meets_the_scn_targets(tmp_path, capsys):
    root = tmp_path / "runs with space"
    t0 = time.monotonic()
    assert main(["run", DEMO, "-o", f"storage.root={root}"]) == 0
    took = time.monotonic() - t0
    out = capsys.readouterr().out
    rid = re.search(r"pipeline scn-shapes run (\S+)", out).group(1)
    assert "| Model | Test MSE | Linear probe top-1 (%) |" in out and "| SCN without offsets |" in out

    stages = {s["stage"]: s for s in runner.status(rid, str(root))["stages"]}
    m = stages["evaluate"]["metrics"]
    summary = (f"test MSE with offsets {m['test_mse']:.4g}, without {m['no_offset_test_mse']:.4g} "
               f"(ratio {m['mse_ratio']:.3f}); probe on SCN h1 {m['probe_accuracy']:.4f}, on the original "
               f"backbone {m['probe_accuracy_original']:.4f}; pretrain top-1 "
               f"{stages['pretrain']['metrics'].get('train_top1', float('nan')):.3f}; {took:.0f}s")
    print(summary)
    assert m["test_mse"] <= m["no_offset_test_mse"] / 3, summary
    assert m["probe_accuracy"] >= m["probe_accuracy_original"], summary
    report = Path(stages["evaluate"]["outputs"]["report"]["uri"])
    assert (report.parent / "test_mse.png").stat().st_size > 0
