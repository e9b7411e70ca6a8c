"""The shipped demo pipeline, unchanged, end to end: BlockDrop's metrics must move the way
Ch. 2 says on the digits, and the run must print its results tables."""

import re
import time
from pathlib import Path

import pytest

from frugalcv.cli import main
from frugalcv.workflows.pipeline import runner

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.acceptance, pytest.mark.timeout(2400)]

DEMO = str(Path(__file__).resolve().parents[2] / "pipelines" / "blockdrop-demo.yaml")


def test_demo_pipeline_meets_the_blockdrop_targets(tmp_path, capsys):
    root = tmp_path / "runs with space"
    t0 = time.monotonic()
    assert main(["run", DEMO, "-o", f"storage.root={root}"]) == 0
    took = time.monotonic() - t0
    out = capsys.readouterr().out
    rid = re.search(r"pipeline blockdrop-demo run (\S+)", out).group(1)
    assert "| BlockDrop, after finetuning |" in out and "| RandomK |" in out  # the printed tables

    stages = {s["stage"]: s for s in runner.status(rid, str(root))["stages"]}
    pretrained = stages["pretrain"]["metrics"]["val_accuracy"]
    m = stages["evaluate"]["metrics"]
    summary = (f"pretrained {pretrained:.4f}; before finetuning {m['before_accuracy']:.4f} with "
               f"{m['before_blocks_mean']:.2f} blocks (FirstK {m['before_firstk_accuracy']:.4f}, RandomK "
               f"{m['before_randomk_accuracy']:.4f}, DistributeK {m['before_distributek_accuracy']:.4f}); after "
               f"{m['accuracy']:.4f} with {m['blocks_mean']:.2f} of 15 blocks, full {m['full_accuracy']:.4f}; "
               f"{took:.0f}s")
    print(summary)
    # the pretrained cifar_resnet32 learned the digits
    assert pretrained >= 0.95, summary
    # after curriculum + finetuning at gamma = 5: within 1.5 points of the full ResNet, <= 60% of the blocks
    assert m["accuracy"] >= m["full_accuracy"] - 0.015, summary
    assert m["blocks_mean"] <= 0.6 * 15, summary
    assert m["flops_speedup"] > 1.0, summary
    # before finetuning, the learned policy beats every heuristic at the same K (Table 2.1)
    for name in ("firstk", "randomk", "distributek"):
        assert m["before_accuracy"] > m[f"before_{name}_accuracy"], (name, summary)
    report = Path(stages["evaluate"]["outputs"]["report"]["uri"])
    assert "| DistributeK |" in report.read_text()
    for png in ("accuracy_vs_flops.png", "block_usage.png", "policies_per_class.png"):
        assert (report.parent / png).stat().st_size > 0, png
