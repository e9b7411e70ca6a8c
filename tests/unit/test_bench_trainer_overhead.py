"""Smoke test of benchmarks/trainer_overhead.py with tiny arguments (a few seconds on CPU)."""

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "trainer_overhead.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("trainer_overhead", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trainer_overhead_prints_json_last(capsys):
    threads = torch.get_num_threads()
    try:
        result = load_benchmark().main(["--debug", "--batch", "2", "--steps", "4", "--rounds", "1",
                                        "--checkpoint-every", "2", "--log-every", "2", "--pool", "2"])
    finally:
        torch.set_num_threads(threads)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == result
    for key in ("overhead_ratio", "overhead_ratio_no_checkpoint", "checkpoint_s", "checkpoint_bytes", "steps",
                "bare_step_ms", "trainer_step_ms"):
        assert key in result, key
    assert result["steps"] == 4
    assert result["overhead_ratio"] > 0 and result["bare_step_ms"] > 0 and result["trainer_step_ms"] > 0
    assert result["checkpoint_s"] > 0 and result["checkpoint_bytes"] > 0  # two saves in the measured round
    assert result["max_weight_diff"] == 0.0  # the trainer and the bare loop compute the same steps
