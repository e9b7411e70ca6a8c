"""``scn.mine`` on the local Slurm cluster: a 2-task job array, the same pairs as one task, and a resumed
run that writes only the shards that are missing."""

import os
from pathlib import Path

import pytest
from voc_fixtures import make_voc

from frugalcv.workflows.pipeline import runner
from frugalcv.workflows.pipeline.config import pipeline_from_dict

pytestmark = pytest.mark.integration

SLURM = {"timeout_min": 10, "signal_delay_s": 30, "mem_gb": 1, "cpus_per_task": 1}


def mine_pipeline(root: Path, voc: Path, kind: str, tasks: int, dst: str, **params):
    # difficult objects pair too: 2 + 2 + 6 pairs of the train list, 5 shards of 2 (task 0: shards 0-1)
    return pipeline_from_dict({
        "name": "scn-mine", "storage": {"root": str(root)}, "executor": {"kind": kind, "slurm": SLURM},
        "stages": [{"name": "pairs", "uses": "scn.mine",
                    "params": {"src": str(voc), "splits": ["train"], "difficult": True, "max_shard_samples": 2,
                               "tasks": tasks, "dst": str(root / dst), **params}}],
    })


def test_scn_mine_array_matches_one_task_and_a_rerun_writes_only_missing_shards(slurm_cluster, odd_tmp):
    voc = make_voc(odd_tmp)
    ref = runner.status(runner.run_pipeline(mine_pipeline(odd_tmp, voc, "inline", 1, "one"), track=False),
                        str(odd_tmp))["stages"][0]
    assert ref["state"] == "finished" and ref["metrics"] == {"train_samples": 10.0, "train_shards": 5.0}

    # task 1 covers the pairs of image 3: a broken JPEG fails it, after task 0 wrote shards 0 and 1
    jpeg = voc / "JPEGImages" / "2008_000003.jpg"
    good = jpeg.read_bytes()
    jpeg.write_bytes(b"not a jpeg")
    with pytest.raises(runner.PipelineFailed):
        runner.run_pipeline(mine_pipeline(odd_tmp, voc, "slurm", 2, "two"), track=False)
    failed = runner.status("latest", str(odd_tmp))
    assert failed["stages"][0]["state"] == "failed" and "2008_000003.jpg" in failed["stages"][0]["error"]
    out = odd_tmp / "two" / "train"
    assert sorted(p.name for p in out.glob("*.tar")) == ["train-000000.tar", "train-000001.tar"]
    kept = os.stat(out / "train-000000.tar").st_ino
    jpeg.write_bytes(good)
    (out / "train-000001.tar").unlink()

    runner.resume_run(failed["run_id"], str(odd_tmp))
    st = runner.status(failed["run_id"], str(odd_tmp))["stages"][0]
    assert st["state"] == "finished", st["error"]
    assert st["slurm_job_ids"] and all("_" in j for j in st["slurm_job_ids"])  # <array id>_<task>
    assert os.stat(out / "train-000000.tar").st_ino == kept  # complete already: not written again
    assert st["metrics"] == ref["metrics"] and st["outputs"]["train"]["sha256"] == ref["outputs"]["train"]["sha256"]
    one = odd_tmp / "one" / "train"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in one.iterdir())  # no _progress/ left
    for path in one.iterdir():
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name


def test_scn_mine_refuses_image_ids_that_are_paths(odd_tmp):
    voc = make_voc(odd_tmp)
    (voc / "ImageSets" / "Main" / "train.txt").write_text("2008_000001\n../../../etc/passwd\n")
    with pytest.raises(runner.PipelineFailed):
        runner.run_pipeline(mine_pipeline(odd_tmp, voc, "inline", 1, "bad"), track=False)
    error = runner.status("latest", str(odd_tmp))["stages"][0]["error"]
    assert "train.txt:2" in error and "not a plain file" in error
    assert not (odd_tmp / "bad" / "train").exists() or not list((odd_tmp / "bad" / "train").glob("*.tar"))
