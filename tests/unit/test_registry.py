"""The pipeline's final model in the registry (live and through the outbox), models:/ and runs:/
inputs resolved back to checkpoints, the HTML report, and which settings become params."""

import hashlib
import uuid
from dataclasses import dataclass

import pytest
from tests_helpers_port import closed_port_url

from frugalcv.errors import ConfigError
from frugalcv.workflows import kit
from frugalcv.workflows.pipeline.config import pipeline_from_dict
from frugalcv.workflows.pipeline.lineage import RunStore, new_run_id, run_url, stage_fingerprint
from frugalcv.workflows.pipeline.params import pipeline_params
from frugalcv.workflows.pipeline.redact import drop_unset, flatten
from frugalcv.workflows.pipeline.registry import register_final_model, resolve_registry_uri
from frugalcv.workflows.pipeline.report_html import markdown_html
from frugalcv.workflows.pipeline.tracking import Tracker, sync_run


@dataclass(kw_only=True)
class TrainParams:
    lr: float = 0.1


@kit.register_stage("regtest.train", params=TrainParams, optional_inputs=("checkpoint",), outputs=("checkpoint",),
                    model="checkpoint", replace=True)
def train(ctx):  # pragma: no cover - never run: the tests write its records
    return kit.StageResult()


@kit.register_stage("regtest.evaluate", outputs=("report",), replace=True)
def evaluate(ctx):  # pragma: no cover
    return kit.StageResult()


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory):
    return "sqlite:///" + str(tmp_path_factory.mktemp("mlflow") / "mlflow.db")


def config(root, store_uri, name, inputs=None):
    return pipeline_from_dict({
        "name": name, "storage": {"root": str(root)}, "tracking": {"uri": store_uri, "experiment": name},
        "stages": [{"name": "train", "uses": "regtest.train", "inputs": inputs or {}},
                   {"name": "evaluate", "uses": "regtest.evaluate"}]})


def finished_train(store: RunStore, tracker: Tracker, parent: str, tmp_path) -> str:
    """The train stage as the runner leaves it: finished, its checkpoint and run recorded."""
    ck = tmp_path / f"model-{uuid.uuid4().hex[:6]}.pt"
    ck.write_bytes(b"weights " + ck.name.encode())
    sha = hashlib.sha256(ck.read_bytes()).hexdigest()
    child = tracker.start_stage(parent, "train", "f" * 64)
    tracker.log_outputs({"checkpoint": {"uri": str(ck), "sha256": sha}}, run_id=child)
    tracker.end_stage("finished", run_id=child)
    store.update("train", state="finished", fingerprint="f" * 64, mlflow_run_id=child,
                 outputs={"checkpoint": {"uri": str(ck), "sha256": sha}})
    return child


def test_final_model_is_registered_once_with_lineage_tags_and_resolves_back(store_uri, tmp_path):
    name = f"reg-{uuid.uuid4().hex[:6]}"
    cfg = config(tmp_path, store_uri, name)
    run_id = new_run_id()
    store, t = RunStore(str(tmp_path), run_id), Tracker(store_uri, root=str(tmp_path), run_id=run_id, experiment=name)
    parent = t.start_pipeline(name, name, run_id)
    child = finished_train(store, t, parent, tmp_path)
    lines: list[str] = []
    registered = register_final_model(cfg, store, t, parent, lines.append)
    assert registered["version"] == "1" and registered["stage"] == "train"
    assert lines == [f"[train] registered model {name} version 1 (checkpoint sha256 {registered['sha256'][:12]})"]
    assert register_final_model(cfg, store, t, parent, lines.append) == registered  # once per pipeline run
    mv = t.client.get_model_version(name, "1")
    ck = store.read("train").outputs["checkpoint"]
    assert mv.run_id == child and mv.source == f"runs:/{child}/model"
    assert {k: mv.tags[f"frugalcv.{k}"] for k in ("pipeline_run", "pipeline_mlflow_run", "stage_run")} == \
        {"pipeline_run": run_id, "pipeline_mlflow_run": parent, "stage_run": child}
    assert mv.tags["frugalcv.checkpoint.uri"] == ck["uri"] and mv.tags["frugalcv.checkpoint.sha256"] == ck["sha256"]
    assert [a.path for a in t.client.list_artifacts(child, "model")] == ["model/checkpoint.json"]

    for uri in (f"models:/{name}/1", f"models:/{name}/latest", f"runs:/{child}/checkpoint"):
        got = resolve_registry_uri(uri, store_uri)
        assert (got["uri"], got["sha256"], got["run_id"]) == (ck["uri"], ck["sha256"], child), uri
    assert resolve_registry_uri(f"models:/{name}/1", store_uri)["version"] == "1"
    # a stage reading models:/ is fingerprinted by the sha256 of the checkpoint it resolves to
    cfg2 = config(tmp_path, store_uri, name, {"checkpoint": f"models:/{name}/1"})
    assert cfg2.stage("train").inputs["checkpoint"] == f"models:/{name}/1"  # not made a path
    other = RunStore(str(tmp_path), new_run_id())
    fp = stage_fingerprint(cfg2, "train", other)
    assert fp == stage_fingerprint(cfg2, "train", other, resolved={"checkpoint": {"sha256": ck["sha256"]}})
    assert fp != stage_fingerprint(cfg2, "train", other, resolved={"checkpoint": {"sha256": "0" * 64}})


def test_unresolvable_references_name_the_input_and_what_exists(store_uri, tmp_path):
    name = f"reg-{uuid.uuid4().hex[:6]}"
    with pytest.raises(ConfigError, match=rf"stages.train.inputs.checkpoint: models:/{name}/3: not found"):
        resolve_registry_uri(f"models:/{name}/3", store_uri, "stages.train.inputs.checkpoint")
    run_id = new_run_id()
    t = Tracker(store_uri, root=str(tmp_path), run_id=run_id, experiment=name)
    child = finished_train(RunStore(str(tmp_path), run_id), t, t.start_pipeline(name, name, run_id), tmp_path)
    with pytest.raises(ConfigError, match="no frugalcv.output.weights.uri tag; its outputs: checkpoint"):
        resolve_registry_uri(f"runs:/{child}/weights", store_uri)
    with pytest.raises(ConfigError, match="is unreachable"):
        resolve_registry_uri(f"models:/{name}/1", closed_port_url())


def test_registration_waits_in_the_outbox_while_the_store_is_down(store_uri, tmp_path):
    name = f"reg-{uuid.uuid4().hex[:6]}"
    cfg = config(tmp_path, store_uri, name)
    run_id = new_run_id()
    store = RunStore(str(tmp_path), run_id)
    t = Tracker(closed_port_url(), root=str(tmp_path), run_id=run_id, experiment=name, timeout_s=1)
    parent = t.start_pipeline(name, name, run_id)
    finished_train(store, t, parent, tmp_path)
    lines: list[str] = []
    registered = register_final_model(cfg, store, t, parent, lines.append)
    assert t.offline and registered["version"] is None and "queued in the outbox" in lines[0]
    report = sync_run(run_url(str(tmp_path), run_id), uri=store_uri)
    assert report.remaining == 0 and not report.failed
    mv = Tracker(store_uri).client.get_model_version(name, "1")
    real_parent = Tracker(store_uri).client.get_run(mv.run_id).data.tags["mlflow.parentRunId"]
    assert mv.tags["frugalcv.stage_run"] == mv.run_id and mv.tags["frugalcv.pipeline_mlflow_run"] == real_parent
    assert not mv.tags["frugalcv.stage_run"].startswith("offline-")


def test_report_html_embeds_relative_images_and_renders_tables(tmp_path):
    (tmp_path / "fig.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    md = "# Title\n\n## Results\n\n| Model | Acc (%) |\n|---|---:|\n| **BlockDrop** | 91.2 |\n\n- a note\n\n![fig.png](fig.png)\n"
    page = markdown_html(md, str(tmp_path))
    assert "<h1>Title</h1>" in page and "<h2>Results</h2>" in page and "<li>a note</li>" in page
    assert "<th>Acc (%)</th>" in page and "<td><b>BlockDrop</b></td><td class=num>91.2</td>" in page
    assert '<img alt="fig.png" src="data:image/png;base64,' in page and "fig.png\"" not in page.split("src=")[1][:20]


def test_params_hold_what_was_set_not_unset_defaults():
    flat = drop_unset(flatten({"executor": {"slurm": {"account": None, "additional": {}, "setup": [], "nodes": 2}},
                               "description": "", "lr": 0.0}))
    assert flat == {"executor.slurm.nodes": 2, "lr": 0.0}
    keyed = pipeline_params({"name": "p", "stages": [{"name": "a", "uses": "x.y", "inputs": {}, "params": {"lr": 1},
                                                       "precision": "fp32", "engine": "ddp", "num_workers": 3}]})
    assert keyed["stages"] == {"a": {"uses": "x.y", "inputs": {}, "params": {"lr": 1}, "num_workers": 3}}
