"""Job arrays on the local 2-node Slurm cluster: a ``shard`` stage with ``tasks: 2`` and a 2-value sweep.

Without accounting (no sacct on the dev cluster) the array shows in the job ids submitit gives
its tasks: ``<array id>_<task>``, recorded per stage in the run's lineage.
"""

import json
import re
from pathlib import Path

import pytest
import yaml

from frugalcv.cli import main
from frugalcv.workflows.pipeline import runner
from frugalcv.workflows.pipeline.config import pipeline_from_dict
from frugalcv.workflows.pipeline.stages import StageResult, register_stage

pytestmark = pytest.mark.integration

SLURM = {"timeout_min": 10, "signal_delay_s": 30, "mem_gb": 1, "cpus_per_task": 1}


@register_stage("test.scaled_count", replace=True)
def scaled_count(ctx):
    """A cheap stage to sweep: the input dataset's sample count times ``scale``."""
    from frugalcv.sharding import load_manifest

    return StageResult(metrics={"scaled": load_manifest(ctx.input("train")).num_samples * float(ctx.param("scale"))})


def one_array(job_ids: list[str]) -> set[str]:
    """The array ids of ``<array id>_<task>`` job ids (asserting that form); one element for one array."""
    assert all(re.fullmatch(r"\d+_\d+", j) for j in job_ids), job_ids
    return {j.split("_")[0] for j in job_ids}


def shard_pipeline(root: Path, kind: str, tasks: int):
    return pipeline_from_dict({
        "name": "arrays", "storage": {"root": str(root)}, "executor": {"kind": kind, "slurm": SLURM},
        "stages": [{"name": "digits", "uses": "shard",
                    "params": {"kind": "digits", "src": "sklearn", "max_shard_samples": 400, "tasks": tasks,
                               "dst": str(root / f"data-{kind}-{tasks}")}}],
    })


def test_shard_stage_with_two_tasks_is_one_job_array_and_matches_one_process(slurm_cluster, odd_tmp):
    rid = runner.run_pipeline(shard_pipeline(odd_tmp, "slurm", 2), track=False, printer=print)
    st = runner.status(rid, str(odd_tmp))["stages"][0]
    assert st["state"] == "finished", st["error"]
    assert len(st["slurm_job_ids"]) == 2 and len(one_array(st["slurm_job_ids"])) == 1
    assert sorted(j.split("_")[1] for j in st["slurm_job_ids"]) == ["0", "1"]

    ref_id = runner.run_pipeline(shard_pipeline(odd_tmp, "inline", 1), track=False, printer=print)
    ref = runner.status(ref_id, str(odd_tmp))["stages"][0]
    assert st["metrics"] == ref["metrics"] and st["metrics"]["train_shards"] == 4
    for split in ("train", "test"):
        assert st["outputs"][split]["sha256"] == ref["outputs"][split]["sha256"]  # the manifest's digest
        a, b = Path(st["outputs"][split]["uri"]), Path(ref["outputs"][split]["uri"])
        assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
        assert not (a / "_progress").exists()


def test_sweep_submits_the_swept_stage_as_one_job_array(slurm_cluster, tmp_path, capsys):
    pipeline = tmp_path / "sweep.yaml"
    pipeline.write_text(yaml.safe_dump({
        "name": "arrays-sweep", "storage": {"root": str(tmp_path / "root")},
        "executor": {"kind": "slurm", "slurm": SLURM},
        "stages": [
            {"name": "digits", "uses": "shard",
             "params": {"kind": "digits", "src": "sklearn", "split": "train", "max_shard_samples": 1000}},
            {"name": "count", "uses": "test.scaled_count", "inputs": {"train": "${stages.digits.outputs.train}"},
             "params": {"scale": 1}},
        ],
    }))
    assert main(["sweep", str(pipeline), "-o", "stages.count.scale=2,3", "--no-track"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^  (\S+)\s+stages\.count\.scale=(\d)\s+finished\s+scaled=(\S+)", out, re.M)
    assert [(scale, float(v)) for _, scale, v in rows] == [("2", 2 * 1437.0), ("3", 3 * 1437.0)], out
    runs = [runner.status(rid, str(tmp_path / "root")) for rid, _, _ in rows]
    digits = [r["stages"][0] for r in runs]
    assert [d["state"] for d in digits] == ["finished", "cached"]  # upstream of the swept stage: once
    assert len(digits[0]["slurm_job_ids"]) == 1 and "_" not in digits[0]["slurm_job_ids"][0]
    count_ids = [r["stages"][1]["slurm_job_ids"] for r in runs]
    assert [len(ids) for ids in count_ids] == [1, 1]
    assert len(one_array([ids[0] for ids in count_ids])) == 1  # one array for both values
    assert sorted(ids[0].split("_")[1] for ids in count_ids) == ["0", "1"]
    assert "Slurm job array" in out
    meta = json.loads((Path(runs[1]["run_folder"]) / "run.json").read_text())
    assert meta["status"] == "finished" and meta["executor"] == "slurm"
