"""Smoke test of benchmarks/video_features.py with tiny arguments (a few seconds on CPU)."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "video_features.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("video_features", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_video_features_prints_json_last(capsys):
    result = load_benchmark().main(["--model", "mobilenet_v2", "--size", "32", "--videos", "2", "--frames", "4",
                                    "--frame-size", "16", "--batch", "8", "--rounds", "1", "--device", "cpu"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == result
    assert result["frames"] == 8 and result["device"] == "cpu" and result["gflops_per_frame"] > 0
    for key in ("stage_frames_per_s", "bare_frames_per_s", "ratio_vs_bare_forward", "stage_wall_s"):
        assert result[key] > 0, key
