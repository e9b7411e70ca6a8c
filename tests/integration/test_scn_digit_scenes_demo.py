"""The shipped SCN digit-scenes demo, unchanged, end to end: the linear probe on the digits' classes
must be at least as accurate on SCN's h1 as on the original backbone's features; the run prints its
results table and the figures."""

import re
import time
from pathlib import Path

import pytest

from frugalcv.cli import main
from frugalcv.workflows.pipeline import runner

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.acceptance, pytest.mark.timeout(1800)]

DEMO = str(Path(__file__).resolve().parents[2] / "pipelines" / "scn-digit-scenes.yaml")


def test_digit_scenes_demo_probe_beats_the_original_backbone(tmp_path, capsys):
    root = tmp_path / "runs with space"
    t0 = time.monotonic()
    assert main(["run", DEMO, "-o", f"storage.root={root}"]) == 0
    took = time.monotonic() - t0
    out = capsys.readouterr().out
    rid = re.search(r"pipeline scn-digit-scenes run (\S+)", out).group(1)
    assert "| Model | Test MSE | Linear probe top-1 (%) |" in out

    stages = {s["stage"]: s for s in runner.status(rid, str(root))["stages"]}
    m = stages["evaluate"]["metrics"]
    summary = (f"probe on SCN h1 {m['probe_accuracy']:.4f}, without offsets {m['probe_accuracy_no_offset']:.4f}, "
               f"on the original backbone {m['probe_accuracy_original']:.4f}; test MSE with offsets "
               f"{m['test_mse']:.4g}, without {m['no_offset_test_mse']:.4g}; pretrain top-1 "
               f"{stages['pretrain']['metrics'].get('train_top1', float('nan')):.3f}; {took:.0f}s")
    print(summary)
    assert m["probe_accuracy"] >= m["probe_accuracy_original"], summary
    assert m["probe_accuracy"] < 1.0 and m["probe_accuracy_original"] < 1.0, summary
