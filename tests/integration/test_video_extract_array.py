"""``video.extract`` as a Slurm job array on the local 2-node cluster: 3 tasks over disjoint shard ranges;
when one task's shard is lost the resumed run writes only that shard, and the result is byte for
byte what one local task writes.

Without accounting (no sacct on the dev cluster) the array shows in the job ids submitit gives its
tasks, ``<array id>_<task>``, recorded per stage in the run's lineage.
"""

import hashlib
import re
from pathlib import Path

import pytest

from frugalcv.sharding import load_manifest
from frugalcv.workflows.pipeline import lineage, runner
from frugalcv.workflows.pipeline.config import pipeline_from_dict
from frugalcv.workflows.pipeline.runner import PipelineFailed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SLURM = {"timeout_min": 10, "signal_delay_s": 30, "mem_gb": 1, "cpus_per_task": 1}
TASK_LINE = re.compile(r"video\.extract task (\d+)/3: shards (\d+)\.\.(\d+): (\d+) written, (\d+) already there")


def extraction(root: Path, kind: str, tasks: int) -> object:
    """The 300 validation digit videos, then their pixel features in shards of 100 videos."""
    return pipeline_from_dict({
        "name": "extract-array", "storage": {"root": str(root)}, "executor": {"kind": kind, "slurm": SLURM},
        "stages": [
            {"name": "videos", "uses": "shard", "params": {"kind": "video-digits", "src": "sklearn",
                                                           "splits": ["val"]}},
            {"name": "features", "uses": "video.extract", "inputs": {"frames": "${stages.videos.outputs.val}"},
             "params": {"fine": {"model": "pixels", "size": 16}, "coarse": {"model": "pixels", "size": 8},
                        "max_shard_samples": 100, "tasks": tasks}},
        ],
    })


def stage_record(root: Path, rid: str) -> dict:
    return {s["stage"]: s for s in runner.status(rid, str(root))["stages"]}["features"]


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file of an output split (shards and manifest)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def task_lines(root: Path, rid: str, jobs: list[str]) -> dict[int, tuple[int, int, int, int]]:
    """Per array task, from the Slurm log of its job: (first shard, last shard, written, already there)."""
    out = {}
    for job in jobs:
        found = TASK_LINE.findall((root / "runs" / rid / "slurm" / job / f"{job}_0_log.out").read_text())
        assert len(found) == 1, (job, found)
        index, *rest = (int(v) for v in found[0])
        assert job.endswith(f"_{index}"), (job, index)  # task i is array task i
        out[index] = tuple(rest)
    return out


def test_extraction_as_a_three_task_array_matches_one_local_task_and_a_rerun_writes_only_a_lost_shard(
        slurm_cluster, tmp_path):
    # task 1 cannot store its shard (a folder in the way, as a broken disk would): the array's other
    # tasks write theirs, the stage fails without a manifest and shard 1 is missing
    rid = lineage.new_run_id()
    out = tmp_path / "runs" / rid / "stages" / "features" / "features"
    lost = out / "val-000001.tar"
    lost.mkdir(parents=True)
    with pytest.raises(PipelineFailed, match="stage features failed"):
        runner.run_pipeline(extraction(tmp_path, "slurm", 3), track=False, printer=print, run_id=rid)
    stage = stage_record(tmp_path, rid)
    assert stage["state"] == "failed" and "val-000001.tar" in stage["error"], stage["error"]
    jobs = stage["slurm_job_ids"]
    assert all(re.fullmatch(r"\d+_\d+", j) for j in jobs), jobs  # <array id>_<task>
    assert len({j.split("_")[0] for j in jobs}) == 1 and sorted(j.split("_")[1] for j in jobs) == ["0", "1", "2"]
    assert task_lines(tmp_path, rid, [j for j in jobs if not j.endswith("_1")]) == {0: (0, 0, 1, 0),
                                                                                    2: (2, 2, 1, 0)}
    assert not (out / "manifest.json").exists()
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar") if p != lost}
    assert sorted(kept) == ["val-000000.tar", "val-000002.tar"]

    lost.rmdir()
    assert runner.resume_run(rid, str(tmp_path), printer=print) == rid
    stage = stage_record(tmp_path, rid)
    assert stage["state"] == "finished", stage["error"]
    assert stage["metrics"]["videos"] == 300.0 and stage["metrics"]["shards"] == 3.0
    again = stage["slurm_job_ids"][len(jobs):]  # the lineage keeps every attempt's job ids
    assert stage["slurm_job_ids"][:len(jobs)] == jobs and len(again) == 3
    assert len({j.split("_")[0] for j in again} - {j.split("_")[0] for j in jobs}) == 1  # one new array
    assert task_lines(tmp_path, rid, again) == {0: (0, 0, 0, 1), 1: (1, 1, 1, 0), 2: (2, 2, 0, 1)}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar") if p != lost} == kept

    ref_id = runner.run_pipeline(extraction(tmp_path, "local", 1), track=False, printer=print)
    ref = stage_record(tmp_path, ref_id)
    assert ref["state"] == "finished" and not ref["slurm_job_ids"]
    expected = digests(Path(ref["outputs"]["features"]["uri"]))
    assert sorted(expected) == ["manifest.json", "val-000000.tar", "val-000001.tar", "val-000002.tar"]
    assert digests(out) == expected and not (out / "_progress").exists()
    assert stage["outputs"]["features"]["sha256"] == ref["outputs"]["features"]["sha256"]
    assert [s.sha256 for s in load_manifest(str(out)).shards] == [expected[f"val-{i:06d}.tar"] for i in range(3)]
