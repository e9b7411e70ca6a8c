"""A shortened BlockDrop run on digits: the metrics must move the way Ch. 2 says they do."""

import json

import pytest

from frugalcv.workflows.blockdrop.demo import digits_recipe, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_blockdrop_digits_quick(tmp_path):
    out = tmp_path / "run with space"
    metrics = run(digits_recipe(gamma=5.0, seed=0, quick=True), str(out), printer=lambda s: None)
    before, after = metrics["before_finetune"], metrics["after_finetune"]
    k = after["num_blocks"]

    # the ResNet learned the task, and the learned policy drops blocks ...
    assert metrics["pretrained_accuracy"] >= 0.9
    assert after["blocks_mean"] < k and before["blocks_mean"] < k
    assert after["flops_mean"] < after["full_flops"] + after["policy_flops"]
    # ... while staying close to the full network
    assert after["accuracy"] >= metrics["pretrained_accuracy"] - 0.04
    # the learned policy is at least as good as every heuristic at the same K (Table 2.1)
    for m in (before, after):
        for name in ("firstk", "randomk", "distributek"):
            assert m["accuracy"] >= m[f"{name}_accuracy"], (name, m)

    saved = json.loads((out / "metrics.json").read_text())
    assert saved["after_finetune"]["accuracy"] == after["accuracy"]
    for name in ("report.md", "accuracy_vs_flops.png", "block_usage.png", "policies_per_class.png",
                 "resnet_finetuned.pt", "policy_finetuned.pt", "shards/train/manifest.json"):
        assert (out / name).exists(), name
    assert "| RandomK |" in (out / "report.md").read_text()
