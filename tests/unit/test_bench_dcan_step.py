"""Smoke test of benchmarks/dcan_step.py with tiny arguments (seconds on CPU)."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "dcan_step.py"


def test_dcan_step_prints_json_last(capsys):
    spec = importlib.util.spec_from_file_location("dcan_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--debug", "--batch", "2", "--size", "32", "32", "--steps", "2", "--rounds", "1"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["overhead_ratio"] > 0
    for key in ("generator_step_ms", "segmentation_step_ms", "end_to_end_step_ms", "ratios"):
        assert key in result
