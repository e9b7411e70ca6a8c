"""Tracker against a local sqlite MLflow store; outbox + sync against an unreachable URI."""

import json
import logging
import time
import uuid
from pathlib import Path

import pytest
from synthetic import synthetic_image  # noqa: F401  (registers the synthetic-test kind)
from tests_helpers_port import closed_port_url

from frugalcv.sharding import write_shards
from frugalcv.sharding.manifest import load_manifest
from frugalcv.workflows.pipeline.lineage import RunStore, new_run_id, run_url
from frugalcv.workflows.pipeline.outbox import Outbox, is_placeholder
from frugalcv.workflows.pipeline.redact import flatten, scrub
from frugalcv.workflows.pipeline.tracking import Tracker, is_unreachable, sync_run

SECRET = "s3cr3t-value-xyz"


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory):
    """One sqlite store per module: creating MLflow's tables takes seconds."""
    return "sqlite:///" + str(tmp_path_factory.mktemp("mlflow") / "mlflow.db")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    write_shards("synthetic-test", "12", str(root), split="train", max_shard_samples=5, progress=False)
    return str(root / "train")


@pytest.fixture
def experiment():
    return f"exp-{uuid.uuid4().hex[:8]}"


def children(client, parent):
    exp = client.get_run(parent).info.experiment_id
    runs = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent}'")
    return {r.data.tags["frugalcv.stage"]: r for r in runs}


def lifecycle(t: Tracker, run_id: str, experiment: str, dataset: str, tmp_path) -> dict:
    """A two-stage pipeline run as the runner drives it; returns the ids it got."""
    parent = t.start_pipeline("demo", experiment, run_id, {"name": "demo", "stages": {"pretrain": {"lr": 0.1}}})
    pre = t.start_stage(parent, "pretrain", "a" * 64, {"frugalcv.stage_uses": "blockdrop.pretrain"}, slurm_job_id="101")
    t.log_params({"lr": 0.1, "optim": {"name": "sgd", "momentum": 0.9}})
    t.log_input(dataset, "train")
    for step in range(3):
        t.log_metrics({"loss": 1.0 / (step + 1), "acc": {"top1": 0.1 * step}}, step=step)
    report = tmp_path / "report.json"
    report.write_text('{"acc": 0.2}')
    t.log_artifact(str(report), "reports")
    report.unlink()  # the outbox must have kept a copy
    t.log_config({"params": {"lr": 0.1}}, "config/stage.yaml")
    t.log_checkpoint("last", "file:///ck/pretrain.pt", "c" * 64)
    t.log_outputs({"checkpoint": {"uri": "file:///ck/pretrain.pt", "sha256": "c" * 64}})
    t.end_stage("finished")
    cur = t.start_stage(parent, "curriculum", "b" * 64, parent_stage_runs=[pre])
    t.log_input(dataset, "train")
    t.log_checkpoint_input("file:///ck/pretrain.pt", "c" * 64)
    t.log_metrics({"reward": 0.5}, step=0)
    t.register_model(cur, "file:///ck/pretrain.pt", f"{experiment}-policy")
    t.end_stage("failed")
    t.end_pipeline("failed")
    return {"parent": parent, "pretrain": pre, "curriculum": cur}


def check_store(client, ids: dict, dataset: str, experiment: str) -> None:
    parent = client.get_run(ids["parent"])
    assert client.get_experiment(parent.info.experiment_id).name == experiment
    assert parent.data.params["stages.pretrain.lr"] == "0.1"
    assert parent.data.tags["frugalcv.pipeline_run"] and parent.info.status == "FAILED"
    assert "config/pipeline.yaml" in [a.path for a in client.list_artifacts(ids["parent"], "config")]
    kids = children(client, ids["parent"])
    assert set(kids) == {"pretrain", "curriculum"}
    pre, cur = kids["pretrain"], kids["curriculum"]
    assert pre.info.status == "FINISHED" and cur.info.status == "FAILED"
    assert pre.data.params == {"lr": "0.1", "optim.name": "sgd", "optim.momentum": "0.9"}
    assert [m.value for m in client.get_metric_history(pre.info.run_id, "loss")] == [1.0, 0.5, 1 / 3]
    assert len(client.get_metric_history(pre.info.run_id, "acc.top1")) == 3
    tags = pre.data.tags
    assert tags["frugalcv.stage"] == "pretrain" and tags["frugalcv.fingerprint"] == "a" * 64
    assert tags["frugalcv.slurm_job_id"] == "101" and tags["frugalcv.stage_uses"] == "blockdrop.pretrain"
    assert tags["frugalcv.pipeline_run"] == parent.data.tags["frugalcv.pipeline_run"]
    assert tags["frugalcv.output.checkpoint.sha256"] == "c" * 64
    assert tags["frugalcv.checkpoint.last.uri"] == "file:///ck/pretrain.pt"
    assert cur.data.tags["frugalcv.parent_stage_runs"] == pre.info.run_id
    arts = {a.path for a in client.list_artifacts(pre.info.run_id, "reports")}
    assert arts == {"reports/report.json"}
    [inp] = pre.inputs.dataset_inputs
    m = load_manifest(dataset)
    assert inp.dataset.name == "synthetic-test-train" and inp.dataset.digest == m.digest()[:36]
    assert json.loads(inp.dataset.source)["uri"] == dataset
    itags = {t.key: t.value for t in inp.tags}
    assert itags["mlflow.data.context"] == "train" and itags["frugalcv.sha256"] == m.digest()
    assert itags["frugalcv.samples"] == "12"
    contexts = {next(t.value for t in i.tags if t.key == "mlflow.data.context") for i in cur.inputs.dataset_inputs}
    assert contexts == {"train", "parent_checkpoint"}
    [mv] = client.search_model_versions(f"name='{experiment}-policy'")
    assert mv.run_id == cur.info.run_id and mv.source == "file:///ck/pretrain.pt"


def test_lifecycle_logs_parent_children_params_metrics_tags_inputs_artifacts(store_uri, experiment, dataset, tmp_path):
    run_id = new_run_id()
    t = Tracker(store_uri, root=str(tmp_path / "root"), run_id=run_id, experiment=experiment, system_metrics=False)
    ids = lifecycle(t, run_id, experiment, dataset, tmp_path)
    assert not any(is_placeholder(v) for v in ids.values())
    check_store(t.client, ids, dataset, experiment)
    assert not Outbox(run_url(str(tmp_path / "root"), run_id)).records()


def test_credentials_never_logged(store_uri, experiment, tmp_path):
    t = Tracker(store_uri, experiment=experiment, system_metrics=False)
    config = {
        "storage": {"root": "s3://bucket/x", "options": {"aws_secret_access_key": SECRET, "key": "AKIAXXXX",
                                                         "aws_access_key_id": SECRET, "session_token": SECRET}},
        "tracking": {"uri": f"https://alice:{SECRET}@mlflow.example.com"},
        "db": {"password": SECRET, "apiKey": SECRET},
        "params": {"max_tokens": 7, "num_keys": 3},
    }
    parent = t.start_pipeline("demo", experiment, new_run_id(), config)
    t.set_tags({"frugalcv.source": f"s3://user:{SECRET}@host/b"})
    run = t.client.get_run(parent)
    everything = json.dumps([run.data.params, run.data.tags])
    text = t.client.download_artifacts(parent, "config/pipeline.yaml", str(tmp_path))
    everything += Path(text).read_text()
    assert SECRET not in everything
    assert run.data.params["params.max_tokens"] == "7" and run.data.params["params.num_keys"] == "3"
    assert run.data.params["storage.options.aws_secret_access_key"] == "***"
    assert run.data.params["tracking.uri"] == "https://***@mlflow.example.com"


def test_scrub_and_flatten():
    assert scrub({"a": [{"client_secret": "x"}, "http://u:p@h/x"], "token": "", "tokenizer": "bpe"}) == \
        {"a": [{"client_secret": "***"}, "http://***@h/x"], "token": "", "tokenizer": "bpe"}
    assert flatten({"a": {"b": {"c": 1}, "d": []}, "e": {}}) == {"a.b.c": 1, "a.d": [], "e": {}}


def test_resume_same_child_run_across_requeues(store_uri, experiment, tmp_path):
    root, run_id = str(tmp_path / "root"), new_run_id()
    t = Tracker(store_uri, root=root, run_id=run_id, experiment=experiment, system_metrics=False)
    parent = t.start_pipeline("demo", experiment, run_id)
    child = t.start_stage(parent, "pretrain", "a" * 64, slurm_job_id="7")
    t.log_params({"lr": 0.1})
    t.log_metrics({"loss": 1.0}, step=0)
    store = RunStore(root, run_id)
    store.update("pretrain", state="running", mlflow_run_id=child)
    # the job is preempted and requeued: a fresh process resumes the same child run
    t2 = Tracker(store_uri, root=root, run_id=run_id, experiment=experiment, system_metrics=False)
    assert t2.start_pipeline("demo", experiment, run_id) == parent  # the driver restarting finds it too
    assert t2.resume_stage(store.read("pretrain").mlflow_run_id, slurm_job_id="8") == child
    t2.log_params({"lr": 0.1})  # same value again is fine
    t2.log_params({"lr": 0.2})  # a changed value is refused by MLflow: warned, not raised
    t2.log_metrics({"loss": 0.5}, step=1)
    t2.end_stage("finished")
    run = t2.client.get_run(child)
    assert run.info.status == "FINISHED" and run.data.tags["frugalcv.slurm_job_id"] == "8"
    assert [m.step for m in t2.client.get_metric_history(child, "loss")] == [0, 1]
    assert set(children(t2.client, parent)) == {"pretrain"}


def test_register_model_from_artifact_path(store_uri, experiment, tmp_path):
    t = Tracker(store_uri, experiment=experiment, system_metrics=False)
    parent = t.start_pipeline("demo", experiment, new_run_id())
    child = t.start_stage(parent, "evaluate", "e" * 64)
    (tmp_path / "model.txt").write_text("weights")
    t.log_artifact(str(tmp_path / "model.txt"), "model")
    assert t.register_model(child, "model", f"m-{experiment}") == "1"
    assert t.register_model(child, "model", f"m-{experiment}") == "2"
    [v1, v2] = sorted(t.client.search_model_versions(f"name='m-{experiment}'"), key=lambda v: int(v.version))
    assert v1.source == f"runs:/{child}/model" and v2.run_id == child


def test_unreachable_store_goes_to_outbox_then_sync_sends_everything_once(store_uri, experiment, dataset,
                                                                        tmp_path, caplog):
    root, run_id = str(tmp_path / "root"), new_run_id()
    dead = closed_port_url()
    t = Tracker(dead, root=root, run_id=run_id, experiment=experiment, timeout_s=2)
    caplog.set_level(logging.WARNING, logger="frugalcv.workflows.pipeline.tracking")
    start = time.time()
    ids = lifecycle(t, run_id, experiment, dataset, tmp_path)
    assert time.time() - start < 30
    assert all(is_placeholder(v) for v in ids.values())
    assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1
    box = Outbox(run_url(root, run_id))
    records = box.records()
    assert len({r["id"] for r in records}) == len(records) > 10
    assert all(r["uri"] == dead for r in records)

    # sync to the unreachable store: nothing sent, nothing lost
    report = sync_run(box.run_dir, timeout_s=2)
    assert report.sent == 0 and report.remaining == len(records)

    report = sync_run(box.run_dir, uri=store_uri)
    assert report.sent == len(records) and not report.failed and report.remaining == 0
    real = {k: box.ids()[v] for k, v in ids.items()}
    from mlflow import MlflowClient

    check_store(MlflowClient(store_uri), real, dataset, experiment)

    again = sync_run(box.run_dir, uri=store_uri)
    assert again.sent == 0 and again.already_sent == len(records)
    check_store(MlflowClient(store_uri), real, dataset, experiment)  # still exactly one of each

    # a later process that can reach the store maps the placeholders and logs live
    t2 = Tracker(store_uri, root=root, run_id=run_id, experiment=experiment, system_metrics=False)
    t2.resume_stage(ids["curriculum"])
    t2.log_metrics({"reward": 0.7}, step=1)
    assert len(box.records()) == len(records)
    assert [m.value for m in t2.client.get_metric_history(real["curriculum"], "reward")] == [0.5, 0.7]


def test_stage_under_an_offline_parent_queues_even_when_store_is_up(store_uri, experiment, tmp_path):
    root, run_id = str(tmp_path / "root"), new_run_id()
    driver = Tracker(closed_port_url(), root=root, run_id=run_id, experiment=experiment, timeout_s=2)
    parent = driver.start_pipeline("demo", experiment, run_id)
    assert is_placeholder(parent)
    # the stage process reaches a (now up) store, but its parent exists only in the outbox
    stage = Tracker(store_uri, root=root, run_id=run_id, system_metrics=False)
    child = stage.start_stage(parent, "pretrain", "a" * 64)
    stage.log_metrics({"loss": 1.0}, step=0)
    stage.end_stage("finished")
    assert is_placeholder(child)
    report = sync_run(run_url(root, run_id), uri=store_uri)
    assert report.sent == 4 and not report.failed
    ids = Outbox(run_url(root, run_id)).ids()
    from mlflow import MlflowClient

    run = MlflowClient(store_uri).get_run(ids[child])
    assert run.data.tags["mlflow.parentRunId"] == ids[parent] and run.info.status == "FINISHED"
    assert MlflowClient(store_uri).get_experiment(run.info.experiment_id).name == experiment


def test_sync_recreates_no_run_twice_after_a_crash_before_marking(store_uri, experiment, tmp_path):
    root, run_id = str(tmp_path / "root"), new_run_id()
    t = Tracker(closed_port_url(), root=root, run_id=run_id, experiment=experiment, timeout_s=2)
    parent = t.start_pipeline("demo", experiment, run_id)
    box = Outbox(run_url(root, run_id))
    assert sync_run(box.run_dir, uri=store_uri).sent == 1
    (tmp_path / "root" / "runs" / run_id / "outbox.sent").unlink()  # as if we crashed before marking
    assert sync_run(box.run_dir, uri=store_uri).sent == 1
    from mlflow import MlflowClient

    client = MlflowClient(store_uri)
    exp = client.get_experiment_by_name(experiment)
    assert [r.info.run_id for r in client.search_runs([exp.experiment_id])] == [box.ids()[parent]]


def test_no_outbox_folder_still_never_raises(tmp_path):
    t = Tracker(closed_port_url(), experiment="x", timeout_s=1)
    parent = t.start_pipeline("demo", "x", new_run_id())
    t.run_id = None  # no run folder: calls are dropped with a warning
    t.start_stage(parent, "s", "f")
    t.log_metrics({"loss": 1.0}, step=0)
    t.end_stage("failed")


def test_is_unreachable_classifies_errors():
    import requests
    from mlflow.exceptions import MlflowException

    try:
        try:
            raise requests.ConnectionError("refused")
        except requests.ConnectionError as e:
            raise MlflowException("API request to x failed with exception ...") from e
    except MlflowException as e:
        assert is_unreachable(e)
    assert not is_unreachable(MlflowException("INVALID_PARAMETER_VALUE: changing param values is not allowed"))
    assert is_unreachable(MlflowException("API request to http://h/api failed with error code 503 != 200"))


def test_cached_stage_gets_a_closed_child_run_pointing_at_its_source(store_uri, experiment, tmp_path):
    root = str(tmp_path / "root")
    t = Tracker(store_uri, root=root, run_id=new_run_id(), experiment=experiment, system_metrics=False)
    parent = t.start_pipeline("demo", experiment, t.run_id)
    src = RunStore(root, "20260101-000000-aaaa").update(
        "pretrain", state="finished", fingerprint="f" * 64, mlflow_run_id="offline-" + "0" * 32,  # made offline elsewhere
        metrics={"acc": 0.9}, outputs={"checkpoint": {"uri": "file:///ck.pt", "sha256": "c" * 64}})
    hit = RunStore(root, t.run_id).mark_cached("pretrain", src)
    child = t.record_cached_stage(parent, "pretrain", hit)
    assert not is_placeholder(child)  # a placeholder of another run's outbox must not hold it back
    run = t.client.get_run(child)
    assert run.info.status == "FINISHED" and run.data.metrics == {"acc": 0.9}
    assert run.data.tags["frugalcv.cached_from"] == "20260101-000000-aaaa"
    assert run.data.tags["frugalcv.output.checkpoint.sha256"] == "c" * 64
    assert "frugalcv.cached_from_run" not in run.data.tags


def test_outbox_on_an_object_store_root(store_uri, experiment, tmp_path):
    root, run_id = f"memory://frugal-outbox-{uuid.uuid4().hex[:8]}", new_run_id()
    t = Tracker(closed_port_url(), root=root, run_id=run_id, experiment=experiment, timeout_s=1)
    parent = t.start_pipeline("demo", experiment, run_id)
    (tmp_path / "plot.txt").write_text("plot")
    (tmp_path / "figs" / "sub").mkdir(parents=True)
    (tmp_path / "figs" / "sub" / "a.txt").write_text("a")
    t.log_artifact(str(tmp_path / "plot.txt"), "plots", run_id=parent)
    t.log_artifact(str(tmp_path / "figs"), "figs", run_id=parent)
    t.log_metrics({"x": 1.0}, run_id=parent)
    report = sync_run(run_url(root, run_id), uri=store_uri)
    assert report.sent == 4 and not report.failed
    from mlflow import MlflowClient

    real = Outbox(run_url(root, run_id)).ids()[parent]
    assert [a.path for a in MlflowClient(store_uri).list_artifacts(real, "plots")] == ["plots/plot.txt"]
    assert [a.path for a in MlflowClient(store_uri).list_artifacts(real, "figs/sub")] == ["figs/sub/a.txt"]
    assert sync_run(run_url(root, run_id), uri=store_uri).sent == 0


def test_resumed_pipeline_reuses_the_parent_queued_offline(store_uri, experiment, tmp_path):
    root, run_id = str(tmp_path / "root"), new_run_id()
    parent = Tracker(closed_port_url(), root=root, run_id=run_id, experiment=experiment,
                     timeout_s=1).start_pipeline("demo", experiment, run_id)
    live = Tracker(store_uri, root=root, run_id=run_id, experiment=experiment)
    assert live.start_pipeline("demo", experiment, run_id) == parent  # still queued: stays a placeholder
    sync_run(run_url(root, run_id), uri=store_uri)
    real = Tracker(store_uri, root=root, run_id=run_id, experiment=experiment).start_pipeline("demo", experiment, run_id)
    assert real == Outbox(run_url(root, run_id)).ids()[parent]


def test_bad_values_and_missing_runs_never_raise(store_uri, experiment):
    t = Tracker(store_uri, experiment=experiment)
    t.log_metrics({"loss": 1.0})  # no run yet: warned, skipped
    t.end_stage("finished")
    parent = t.start_pipeline("demo", experiment, new_run_id())
    t.log_metrics({"loss": "n/a", "acc": 0.5, "epoch": 1}, step=2, run_id=parent)
    assert t.client.get_run(parent).data.metrics == {"acc": 0.5, "epoch": 1.0}
    with pytest.raises(ValueError, match="run status"):
        t.end_pipeline("exploded")


def test_system_metrics_labelled_by_node(store_uri, experiment):
    pytest.importorskip("psutil")
    t = Tracker(store_uri, experiment=experiment)
    parent = t.start_pipeline("demo", experiment, new_run_id())
    child = t.start_stage(parent, "pretrain", "a" * 64)
    t.start_system_metrics(child, node_id="node-a", sampling_interval_s=0.5)
    time.sleep(2.5)
    t.end_stage("finished")
    names = t.client.get_run(child).data.metrics
    assert any(k.startswith("system/node-a/") for k in names), names
