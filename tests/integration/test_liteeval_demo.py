"""The shipped LiteEval demo, unchanged, end to end: LiteEval must match the network that always reads
the fine features (mAP within 1 point) reading at most half of them, and its online predictions must
beat SEQ-K at every budget K = 1..16; the run must print its results tables."""

import re
import time
from pathlib import Path

import pytest

from frugalcv.cli import main
from frugalcv.workflows.pipeline import runner

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.acceptance, pytest.mark.timeout(2400)]

DEMO = str(Path(__file__).resolve().parents[2] / "pipelines" / "liteeval-demo.yaml")
FRAMES = 16


def test_demo_pipeline_meets_the_liteeval_targets(tmp_path, capsys):
    root = tmp_path / "runs with space"
    t0 = time.monotonic()
    assert main(["run", DEMO, "-o", f"storage.root={root}"]) == 0
    took = time.monotonic() - t0
    out = capsys.readouterr().out
    rid = re.search(r"pipeline liteeval-demo run (\S+)", out).group(1)
    assert "| Always fine |" in out and "| K (fine reads) | LiteEval, online (%) | SEQ-K (%) |" in out

    stages = {s["stage"]: s for s in runner.status(rid, str(root))["stages"]}
    m = stages["evaluate"]["metrics"]
    online = [m[f"online_top1_k{k}"] for k in range(1, FRAMES + 1)]
    seq = [m[f"seq_online_top1_k{k}"] for k in range(1, FRAMES + 1)]
    summary = (f"LiteEval mAP {m['map']:.4f} top-1 {m['top1']:.4f} reading {m['fine_fraction']:.3f} of the fine "
               f"frames ({m['gflops_mean']:.4g} GFLOPs); always fine mAP {m['always_fine_map']:.4f} top-1 "
               f"{m['always_fine_top1']:.4f} ({m['always_fine_gflops_mean']:.4g} GFLOPs); UNIFORM-K "
               f"{m['uniform_k_map']:.4f}, SEQ-K {m['seq_k_map']:.4f} at K={m['baseline_k']:.0f}; online "
               f"{[round(x, 3) for x in online]} vs SEQ-K {[round(x, 3) for x in seq]}; {took:.0f}s")
    print(summary)
    # within 1 point of always computing the fine features, with at most half of them
    assert m["map"] >= m["always_fine_map"] - 0.01, summary
    assert m["fine_fraction"] <= 0.5, summary
    assert m["gflops_mean"] < m["always_fine_gflops_mean"], summary
    # online: above SEQ-K after every number of fine reads
    for k, (a, b) in enumerate(zip(online, seq, strict=True), start=1):
        assert a > b, (k, summary)
    report = Path(stages["evaluate"]["outputs"]["report"]["uri"])
    assert "| UNIFORM-" in report.read_text()
    for png in ("map_vs_gflops.png", "online_accuracy.png", "fine_reads.png"):
        assert (report.parent / png).stat().st_size > 0, png
