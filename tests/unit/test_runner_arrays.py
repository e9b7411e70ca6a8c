"""Array stages (N tasks, then a final step in the driver) and sweeps that advance stage by stage."""

import json
import os
import re

import array_stages  # noqa: F401  (registers fake.parts)
import pytest
import synthetic  # noqa: F401  (registers the synthetic-test source)
import test_runner  # noqa: F401  (registers the fake stages)

from frugalcv.errors import ConfigError
from frugalcv.slurm.executors import InlineExecutor
from frugalcv.workflows.pipeline import runner, sweep
from frugalcv.workflows.pipeline.config import load_pipeline, pipeline_from_dict


def read(path) -> str:
    with open(path) as f:
        return f.read()


def shard_pipeline(root, tasks):
    return pipeline_from_dict({
        "name": "arr", "storage": {"root": str(root)},
        "stages": [{"name": "data", "uses": "shard",
                    "params": {"kind": "synthetic-test", "src": "23", "split": "train", "max_shard_samples": 4,
                               "tasks": tasks, "dst": str(root / f"data{tasks}")}}],
    })


def test_shard_stage_as_array_tasks_gives_the_same_dataset(tmp_path):
    one = runner.status(runner.run_pipeline(shard_pipeline(tmp_path, 1), "inline", track=False), str(tmp_path))
    three = runner.status(runner.run_pipeline(shard_pipeline(tmp_path, 3), "inline", track=False), str(tmp_path))
    a, b = one["stages"][0], three["stages"][0]
    assert b["state"] == "finished" and b["metrics"] == a["metrics"] == {"train_samples": 23.0, "train_shards": 6.0}
    assert a["outputs"]["train"]["sha256"] == b["outputs"]["train"]["sha256"]  # the manifest's digest
    folder = three["run_folder"]
    assert sorted(f for f in os.listdir(os.path.join(folder, "logs")) if "task" in f) == \
        ["data.task0.log", "data.task1.log", "data.task2.log"]
    assert "shards 2..3: 2 written" in read(os.path.join(folder, "logs", "data.task1.log"))


def test_a_rerun_rewrites_a_deleted_shard_of_a_finished_dataset(tmp_path):
    cfg = shard_pipeline(tmp_path, 3)
    first = runner.status(runner.run_pipeline(cfg, "inline", track=False), str(tmp_path))["stages"][0]
    shard = tmp_path / "data3" / "train" / "train-000004.tar"
    before = shard.read_bytes()
    again = runner.status(runner.run_pipeline(cfg, "inline", track=False), str(tmp_path))["stages"][0]
    assert again["state"] == "cached"
    shard.unlink()
    repaired = runner.status(runner.run_pipeline(cfg, "inline", track=False), str(tmp_path))["stages"][0]
    assert repaired["state"] == "finished" and shard.read_bytes() == before
    assert repaired["outputs"]["train"]["sha256"] == first["outputs"]["train"]["sha256"]


def test_shard_tasks_param_is_checked(tmp_path):
    cfg = shard_pipeline(tmp_path, 2)
    cfg.stages[0].params.pop("max_shard_samples")
    with pytest.raises(ConfigError, match="stages.data.params.tasks: 2: needs params.max_shard_samples"):
        runner.run_pipeline(cfg, "inline", track=False)


def parts_pipeline(root, tasks, **params):
    return pipeline_from_dict({"name": "parts", "storage": {"root": str(root)},
                               "stages": [{"name": "p", "uses": "fake.parts", "params": {"tasks": tasks, **params}}]})


def test_local_executor_runs_each_task_in_its_own_process(tmp_path):
    st = runner.status(runner.run_pipeline(parts_pipeline(tmp_path, 2), "local", track=False), str(tmp_path))
    out = st["stages"][0]
    assert out["state"] == "finished" and out["metrics"] == {"parts": 2.0}
    assert read(out["outputs"]["data"]["uri"]) == "0,1\n"
    pids = {read(os.path.join(os.path.dirname(out["outputs"]["data"]["uri"]), f"part-{i}.txt")).split()[2]
            for i in range(2)}
    assert len(pids) == 2 and str(os.getpid()) not in pids
    assert len(json.loads(read(os.path.join(st["run_folder"], "run.json")))["pids"]["p"]) == 2


def test_a_failed_task_fails_the_stage_and_skips_the_final_step(tmp_path):
    with pytest.raises(runner.PipelineFailed, match="task 1 of 2"):
        runner.run_pipeline(parts_pipeline(tmp_path, 2, fail_task=1), "inline", track=False)
    st = runner.status("latest", str(tmp_path))
    stage = st["stages"][0]
    assert stage["state"] == "failed" and "fails on purpose" in stage["error"]
    folder = os.path.join(st["run_folder"], "stages", "p")
    assert os.path.exists(os.path.join(folder, "part-0.txt"))
    assert not os.path.exists(os.path.join(folder, "joined.txt"))  # no final step


class RecordingExecutor(InlineExecutor):
    """Inline, but remembers what each ``run``/``run_array`` call got."""

    def __init__(self):
        self.calls, self.in_array = [], False

    def run(self, spec, cfg, on_job=None):
        if not self.in_array:
            self.calls.append(("run", spec["stage"], spec["run_id"]))
        return super().run(spec, cfg, on_job)

    def run_array(self, specs, cfg, on_job=None):
        self.calls.append(("array", specs[0]["stage"], [(s["run_id"], (s.get("array") or {}).get("index"))
                                                        for s in specs]))
        self.in_array = True
        try:
            return super().run_array(specs, cfg, on_job)
        finally:
            self.in_array = False


def fake_sweep(root, suffixes, tasks=1):
    return [pipeline_from_dict({
        "name": "fake", "storage": {"root": str(root)},
        "stages": [{"name": "a", "uses": "fake.source", "params": {"text": "hi"}},
                   {"name": "b", "uses": "fake.upper", "inputs": {"src": "${stages.a.outputs.data}"},
                    "params": {"suffix": s}},
                   {"name": "c", "uses": "fake.parts", "params": {"tasks": tasks}}],
    }) for s in suffixes]


def test_sweep_runs_shared_stages_once_and_the_swept_stage_as_one_array(tmp_path, monkeypatch):
    ex = RecordingExecutor()
    monkeypatch.setattr(sweep, "make_stage_executor", lambda kind, cfg: ex)
    printed = []
    results = sweep.run_sweep(fake_sweep(tmp_path, ["x", "y", "z"], tasks=2), track=False, printer=printed.append)
    assert [e for _, e in results] == [None, None, None]
    rids = [r for r, _ in results]
    kinds = [(c[0], c[1]) for c in ex.calls]
    # a: once (the other runs reuse it); b: one array over the 3 values; c (same settings in every run,
    # so shared): once, as its own 2 tasks
    assert kinds == [("run", "a"), ("array", "b"), ("array", "c")], ex.calls
    assert ex.calls[0][2] == rids[0]
    assert ex.calls[1][2] == [(rid, None) for rid in rids]
    assert ex.calls[2][2] == [(rids[0], 0), (rids[0], 1)]
    for rid, suffix in zip(rids, "xyz", strict=True):
        st = runner.status(rid, str(tmp_path))
        assert st["status"] == "finished"
        states = [s["state"] for s in st["stages"]]
        assert states == (["finished"] * 3 if rid == rids[0] else ["cached", "finished", "cached"])
        assert read(st["stages"][1]["outputs"]["data"]["uri"]) == f"HI{suffix}\n"
    assert sum(bool(re.match(r"run \S+: finished", line.splitlines()[-1])) for line in printed) == 3


def test_sweep_failure_of_one_value_leaves_the_others(tmp_path, monkeypatch):
    cfgs = fake_sweep(tmp_path, ["x", "y"])
    cfgs[1].stages[2].params.update(tasks=2, fail_task=0)  # c differs (and fails) in the second run only
    monkeypatch.setattr(sweep, "make_stage_executor", lambda kind, cfg: RecordingExecutor())
    results = sweep.run_sweep(cfgs, track=False, printer=lambda text: None)
    assert results[0][1] is None and "task 0 of 2" in results[1][1]
    assert runner.status(results[1][0], str(tmp_path))["status"] == "failed"


def test_sweep_stages_are_the_swept_one_and_its_dependents():
    demo = os.path.join(os.path.dirname(__file__), "..", "..", "pipelines", "blockdrop-demo.yaml")
    cfgs = [load_pipeline(demo, [f"stages.curriculum.gamma={g}"]) for g in (2, 5)]
    assert sweep.sweep_stages(cfgs) == ["curriculum", "finetune", "evaluate"]
    cfgs = [load_pipeline(demo, [f"stages.pretrain.resources.mem_gb={m}"]) for m in (2, 5)]
    assert sweep.sweep_stages(cfgs) == []  # resources are not part of a stage's fingerprint
