"""Runner, stage registry and executors with tiny fake stages (fast; no MLflow)."""

import json
import os
from pathlib import Path

import pytest
import torch

from frugalcv.errors import ConfigError
from frugalcv.workflows import kit
from frugalcv.workflows.engine.trainer import HookBase
from frugalcv.workflows.pipeline import runner
from frugalcv.workflows.pipeline.config import pipeline_from_dict
from frugalcv.workflows.pipeline.stages import StageResult, get_stage, register_stage

# ------------------------------------------------------------------------------------ fake stages


@register_stage("fake.source", replace=True)
def fake_source(ctx):
    text = str(ctx.param("text"))
    path = ctx.path("data.txt")
    if ctx.is_main:
        with open(path, "w") as f:
            f.write(text + "\n")
    return StageResult(metrics={"length": len(text)}, outputs={"data": path})


@register_stage("fake.upper", replace=True)
def fake_upper(ctx):
    with open(ctx.input("src")) as f:
        text = f.read().strip().upper() + str(ctx.param("suffix", ""))
    path = ctx.path("data.txt")
    with open(path, "w") as f:
        f.write(text + "\n")
    return StageResult(metrics={"length": len(text)}, outputs={"data": path})


@register_stage("fake.fail", replace=True)
def fake_fail(ctx):
    for i in range(40):
        print(f"log line {i}")
    raise RuntimeError("boom in the fake stage")


class _StopOnce(HookBase):
    """Create the stage's STOP file once, at step ``at`` (a simulated preemption)."""

    def __init__(self, ctx, at):
        self.ctx, self.at = ctx, at

    def after_step(self):
        marker = self.ctx.path("stopped-once")
        if self.trainer.step == self.at and not os.path.exists(marker):
            open(marker, "w").close()
            open(self.ctx.path("STOP"), "w").close()


@register_stage("fake.train", replace=True)
def fake_train(ctx):
    """Least squares y = 3x + noise with SGD, resumable; the output is the state dict."""
    torch.manual_seed(int(ctx.param("seed", 0)))
    model = torch.nn.Linear(4, 1)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g)
    y = x.sum(1, keepdim=True) * 3 + 0.1 * torch.randn(64, 1, generator=g)

    class Task:
        def training_step(self, batch):
            xb, yb = batch
            noise = 1e-3 * torch.randn(xb.shape[0], 1)  # global RNG: must be restored on resume
            return {"loss": ((model(xb) + noise - yb) ** 2).mean()}

    data = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 64, 8)]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    hooks = []
    if ctx.param("stop_at", None) is not None:
        hooks.append(_StopOnce(ctx, int(ctx.param("stop_at"))))
    kit.fit(ctx, Task(), opt, data, state=model, hooks=hooks, epochs=int(ctx.param("epochs", 3)))
    path = ctx.path("model.pt")
    if ctx.is_main:
        kit.save_state(path, model.state_dict())
    return StageResult(metrics={"weight_sum": float(model.weight.detach().sum())}, outputs={"model": path})


# ------------------------------------------------------------------------------------ helpers


def pipeline(root, stages, kind="inline"):
    return pipeline_from_dict({"name": "fake", "storage": {"root": str(root)}, "executor": {"kind": kind},
                               "stages": stages})


def chain(suffix="!"):
    return [
        {"name": "a", "uses": "fake.source", "params": {"text": "hello"}},
        {"name": "b", "uses": "fake.upper", "inputs": {"src": "${stages.a.outputs.data}"}, "params": {"suffix": suffix}},
        {"name": "c", "uses": "fake.upper", "inputs": {"src": "${stages.b.outputs.data}"}},
        {"name": "d", "uses": "fake.upper", "inputs": {"src": "${stages.a.outputs.data}"}},
    ]


def run(cfg, executor=None, out=None):
    lines = []
    rid = runner.run_pipeline(cfg, executor, track=False, printer=lines.append)
    if out is not None:
        out.extend(lines)
    return rid


def states(rid, root):
    return {s["stage"]: s["state"] for s in runner.status(rid, str(root))["stages"]}


# ------------------------------------------------------------------------------------ tests


def test_run_resolves_references_and_prints_id_and_table(tmp_path):
    cfg = pipeline(tmp_path, chain())
    lines = []
    rid = run(cfg, out=lines)
    assert lines[0].startswith(f"pipeline fake run {rid}")
    assert "stage" in lines[-1] and "finished" in lines[-1] and f"run {rid}: finished" in lines[-1]
    st = runner.status(rid, str(tmp_path))
    outs = {s["stage"]: s["outputs"]["data"] for s in st["stages"]}
    assert outs["b"]["uri"] == str(tmp_path / "runs" / rid / "stages" / "b" / "data.txt")
    assert Path(outs["c"]["uri"]).read_text() == "HELLO!\n"
    assert Path(outs["d"]["uri"]).read_text() == "HELLO\n"
    assert not (tmp_path / "runs" / rid / "stages" / "c" / "spec.json").exists()  # only the local executor writes it


def test_second_run_is_all_cached_and_reuses_outputs(tmp_path):
    cfg = pipeline(tmp_path, chain())
    first = run(cfg)
    second = run(cfg)
    assert first != second
    assert set(states(second, tmp_path).values()) == {"cached"}
    a, b = runner.status(first, str(tmp_path)), runner.status(second, str(tmp_path))
    assert [s["outputs"] for s in a["stages"]] == [s["outputs"] for s in b["stages"]]
    assert all(s["cached_from"] == first for s in b["stages"])


def test_changed_param_reruns_that_stage_and_downstream_only(tmp_path):
    run(pipeline(tmp_path, chain("!")))
    rid = run(pipeline(tmp_path, chain("?")))
    assert states(rid, tmp_path) == {"a": "cached", "b": "finished", "c": "finished", "d": "cached"}
    c = runner.status(rid, str(tmp_path))["stages"][2]
    assert Path(c["outputs"]["data"]["uri"]).read_text() == "HELLO?\n"


def test_status_json_schema_and_latest(tmp_path):
    rid = run(pipeline(tmp_path, chain()))
    st = runner.status("latest", str(tmp_path))
    assert st["run_id"] == rid
    assert set(st) == {"run_id", "pipeline", "root", "run_folder", "status", "executor", "created", "ended",
                       "mlflow", "stages"}
    assert st["status"] == "finished" and st["executor"] == "inline"
    stage = st["stages"][0]
    assert set(stage) == {"stage", "uses", "state", "fingerprint", "mlflow_run_id", "slurm_job_ids", "metrics",
                          "outputs", "error", "cached_from", "model_inputs", "attempts", "started", "ended",
                          "seconds"}
    assert len(stage["fingerprint"]) == 64 and stage["metrics"] == {"length": 5.0}
    assert len(stage["outputs"]["data"]["sha256"]) == 64
    json.dumps(st)  # plain JSON


@pytest.mark.parametrize("kind", ["inline", "local"])
def test_failure_records_the_log_tail(tmp_path, kind):
    stages = [chain()[0], {"name": "bad", "uses": "fake.fail"}, {"name": "after", "uses": "fake.source",
                                                                  "params": {"text": "x"}}]
    cfg = pipeline(tmp_path, stages)
    with pytest.raises(runner.PipelineFailed, match="stage bad failed.*boom"):
        run(cfg, kind)
    st = runner.status("latest", str(tmp_path))
    assert st["status"] == "failed"
    assert [s["state"] for s in st["stages"]] == ["finished", "failed", "pending"]
    error = st["stages"][1]["error"]
    assert "boom in the fake stage" in error and "log line 39" in error and "log line 0\n" not in error


def test_inline_and_local_give_the_same_sha256(tmp_path):
    stages = [{"name": "train", "uses": "fake.train", "params": {"epochs": 3}, "checkpoint_every": 4}]
    shas = {}
    for kind in ("inline", "local"):
        root = tmp_path / kind
        rid = run(pipeline(root, stages, kind))
        st = runner.status(rid, str(root))
        assert st["executor"] == kind
        shas[kind] = st["stages"][0]["outputs"]["model"]["sha256"]
    assert shas["inline"] == shas["local"]
    assert (tmp_path / "local" / "runs" / rid / "stages" / "train" / "spec.json").exists()


def test_interrupted_stage_resumes_from_its_checkpoint_with_the_same_sha256(tmp_path):
    plain = [{"name": "train", "uses": "fake.train", "params": {"epochs": 3}, "checkpoint_every": 100}]
    reference = run(pipeline(tmp_path / "ref", plain))
    want = runner.status(reference, str(tmp_path / "ref"))["stages"][0]["outputs"]["model"]["sha256"]

    stopped = [{"name": "train", "uses": "fake.train", "params": {"epochs": 3, "stop_at": 5}, "checkpoint_every": 100}]
    cfg = pipeline(tmp_path / "run", stopped)
    with pytest.raises(runner.PipelineFailed, match="interrupted"):
        run(cfg)
    rid = runner.status("latest", str(tmp_path / "run"))["run_id"]
    assert os.listdir(tmp_path / "run" / "runs" / rid / "stages" / "train" / "checkpoints") == ["step-00000005.pt"]
    runner.resume_run(rid, str(tmp_path / "run"), printer=lambda s: None)
    st = runner.status(rid, str(tmp_path / "run"))
    assert st["status"] == "finished" and st["stages"][0]["attempts"] == 2
    assert st["stages"][0]["outputs"]["model"]["sha256"] == want


def test_resume_keeps_finished_stages(tmp_path):
    stages = [chain()[0], {"name": "bad", "uses": "fake.fail"}]
    cfg = pipeline(tmp_path, stages)
    with pytest.raises(runner.PipelineFailed):
        run(cfg)
    rid = runner.status("latest", str(tmp_path))["run_id"]
    before = runner.status(rid, str(tmp_path))["stages"][0]
    with pytest.raises(runner.PipelineFailed):
        runner.resume_run(rid, str(tmp_path), printer=lambda s: None)
    after = runner.status(rid, str(tmp_path))["stages"]
    assert after[0] == before and after[1]["attempts"] == 2


def test_cancel_marks_the_run_cancelled(tmp_path):
    stages = [chain()[0], {"name": "bad", "uses": "fake.fail"}]
    with pytest.raises(runner.PipelineFailed):
        run(pipeline(tmp_path, stages))
    st = runner.cancel("latest", str(tmp_path), printer=lambda s: None)
    assert st["status"] == "cancelled"


def test_unknown_stage_function_lists_the_registered_ones(tmp_path):
    cfg = pipeline(tmp_path, [{"name": "x", "uses": "blockdrop.pretrian"}])
    with pytest.raises(ConfigError, match="did you mean 'blockdrop.pretrain'.*Registered: .*blockdrop.curriculum"):
        run(cfg)
    with pytest.raises(ConfigError, match="unknown stage function 'nope'"):
        get_stage("nope")


def test_unknown_run_is_one_clear_error(tmp_path):
    with pytest.raises(Exception, match="no runs yet"):
        runner.status("latest", str(tmp_path))
    run(pipeline(tmp_path, chain()[:1]))
    with pytest.raises(Exception, match="no run '20990101-000000-abcd'"):
        runner.status("20990101-000000-abcd", str(tmp_path))


def test_tracking_parent_children_inputs_and_step_metrics(tmp_path):
    stages = [chain()[0], {"name": "train", "uses": "fake.train", "inputs": {"data": "${stages.a.outputs.data}"},
                           "params": {"epochs": 3}}]
    cfg = pipeline(tmp_path, stages)
    rid = runner.run_pipeline(cfg, track=True, printer=lambda s: None)
    st = runner.status(rid, str(tmp_path))
    from mlflow import MlflowClient

    client = MlflowClient(cfg.tracking.uri)
    parent = client.get_run(st["mlflow"]["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["frugalcv.pipeline_run"] == rid
    children = {s["stage"]: client.get_run(s["mlflow_run_id"]) for s in st["stages"]}
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children.values())
    train = children["train"]
    assert train.data.tags["frugalcv.fingerprint"] == st["stages"][1]["fingerprint"]
    assert train.data.tags["frugalcv.output.model.sha256"] == st["stages"][1]["outputs"]["model"]["sha256"]
    assert [d.dataset.digest for d in train.inputs.dataset_inputs] == [st["stages"][0]["outputs"]["data"]["sha256"][:36]]
    assert [m.step for m in client.get_metric_history(train.info.run_id, "loss")] == [10, 20]
    assert not (Path.cwd() / "mlruns").exists() or (tmp_path / "mlartifacts").exists()
