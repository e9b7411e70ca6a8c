"""Smoke test of benchmarks/stage_streaming.py with tiny sizes, in a subprocess (the targets are not checked)."""

import json
import math
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "stage_streaming.py"
KEYS = ("streaming_over_memory", "streaming_images_per_s", "memory_images_per_s", "rss_ratio_10x", "rss_mb_n",
        "rss_mb_10n", "rss_mb_import", "maxrss_ratio_10x", "maxrss_mb_n", "maxrss_mb_10n", "n_images",
        "throughput_images", "throughput_steps", "batch", "workers")


def test_stage_streaming_prints_json_last():
    args = ["--debug", "--images", "16", "--batch", "4", "--rounds", "1", "--image-size", "8", "--jpeg-size", "8",
            "--rss-images", "10", "--rss-jpeg-size", "8", "--workers", "1", "--cpus", "1"]
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in KEYS:
        assert key in result, key
        assert isinstance(result[key], (int, float)) and math.isfinite(result[key]) and result[key] > 0, key
    assert result["throughput_steps"] == 4 and result["n_images"] == 10
    assert len(result["streaming_over_memory_per_round"]) == 1 and result["threads"] == 1
