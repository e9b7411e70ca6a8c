"""Smoke test of benchmarks/blockdrop_inference.py with a tiny batch (a few seconds on CPU)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "blockdrop_inference.py"
KEYS = ("full_ms", "dynamic_ms", "masked_ms", "policy_ms", "flops_full", "flops_dynamic",
        "speedup_over_flops_ratio", "speedup_over_flops_ratio_blocks", "page_faults")


def run(*args):
    # a subprocess: --malloc keep changes the process's malloc settings for good
    proc = subprocess.run([sys.executable, str(SCRIPT), "--batch", "6", "--warmup", "0", "--repeats", "1", *args],
                          capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "dynamic vs masked max |diff|" in proc.stdout
    return result


def test_prints_json_last_with_the_documented_keys():
    result = run("--threads", "1", "--malloc", "default")
    for key in KEYS:
        assert key in result, key
    assert result["flops_full"] == 505_775_360  # ResNet-110, as in the dissertation
    assert 0 < result["flops_dynamic"] < result["flops_full"]
    assert result["speedup_over_flops_ratio"] > 0 and result["speedup_over_flops_ratio_paired"] > 0
    # the definition in the script's docstring, from the line's own fields; times are printed to 0.01 ms, the ratio to 0.001
    full, dynamic = result["full_ms"], result["dynamic_ms"]
    formula = (full / dynamic) * result["flops_dynamic"] / result["flops_full"]
    rounding = 5e-4 + formula * (0.005 / full + 0.005 / dynamic) + 1e-9
    assert abs(result["speedup_over_flops_ratio"] - formula) <= rounding
    assert result["channels_last"] and result["fuse_bn"]  # the full network's fastest form is the default


def test_plain_layout_and_bn_modules_on_request():
    result = run("--threads", "1", "--no-channels-last", "--no-fuse-bn")
    assert not result["channels_last"] and not result["fuse_bn"]
    assert result["flops_full"] == 505_775_360


def test_row_shard_workers_and_kept_memory():
    result = run("--workers", "2")
    assert result["workers"] == 2 and result["malloc"] == "keep"
    assert set(result["page_faults"]) == {"full", "dynamic", "masked"}
