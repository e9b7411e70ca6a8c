"""A stage that runs out of memory fails with one message: which stage, which memory, what to lower."""

from dataclasses import dataclass

import pytest
import torch
import yaml

from frugalcv.cli import main
from frugalcv.workflows import kit


@dataclass(kw_only=True)
class _Params:
    batch_size: int = 4096
    cuda: bool = False


@kit.register_stage("test.out_of_memory", params=_Params, replace=True)
def _out_of_memory(ctx):
    if ctx.params.cuda:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    torch.empty(1 << 62, dtype=torch.uint8)  # the CPU allocator refuses: a real allocation failure


@pytest.mark.parametrize("cuda", [False, True], ids=["cpu-allocator", "torch-out-of-memory"])
def test_out_of_memory_names_the_stage_and_what_to_lower(tmp_path, capsys, cuda):
    pipeline = tmp_path / "oom.yaml"
    pipeline.write_text(yaml.safe_dump({"name": "oom", "storage": {"root": str(tmp_path / "runs")}, "stages": [
        {"name": "train", "uses": "test.out_of_memory", "params": {"cuda": cuda}}]}))
    assert main(["run", str(pipeline), "--no-track"]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = next(x for x in err.splitlines() if "ran out of" in x)
    assert "stage train ran out of host memory" in line  # the stage ran on the CPU here
    assert "stages.train.params.batch_size" in line and "precision: bf16" in line and "frugalcv resume" in line
