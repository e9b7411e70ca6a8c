"""The Tracker against a real `mlflow server` over REST: parent + stage children, inputs, tags, outbox sync."""

import time

import pytest
from mlflow_server import mlflow_server
from synthetic import synthetic_image  # noqa: F401  (registers the synthetic-test kind)

from frugalcv.sharding import write_shards
from frugalcv.sharding.manifest import load_manifest
from frugalcv.workflows.pipeline.lineage import new_run_id, run_url
from frugalcv.workflows.pipeline.outbox import Outbox, is_placeholder
from frugalcv.workflows.pipeline.tracking import Tracker, sync_run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    start = time.time()
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        print(f"mlflow server healthy after {time.time() - start:.1f}s")
        yield url


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    write_shards("synthetic-test", "12", str(root), split="train", max_shard_samples=5, progress=False)
    return str(root / "train")


def run_pipeline(t: Tracker, run_id: str, dataset: str, tmp_path) -> tuple[str, dict[str, str]]:
    parent = t.start_pipeline("demo", "itest", run_id, {"stages": {"pretrain": {"lr": 0.1}}})
    kids = {}
    upstream: list[str] = []
    for i, stage in enumerate(("pretrain", "curriculum")):
        kids[stage] = t.start_stage(parent, stage, f"{i}" * 64, parent_stage_runs=upstream, slurm_job_id=str(100 + i))
        t.log_params({"lr": 0.1, "stage": {"index": i}})
        t.log_input(dataset, "train")
        if upstream:
            t.log_checkpoint_input("file:///ck/pretrain.pt", "c" * 64)
        t.log_metrics({"loss": 1.0, "acc": 0.5}, step=0)
        (tmp_path / f"{stage}.txt").write_text(stage)
        t.log_artifact(str(tmp_path / f"{stage}.txt"), "reports")
        t.log_outputs({"checkpoint": {"uri": f"file:///ck/{stage}.pt", "sha256": "c" * 64}})
        t.end_stage("finished")
        upstream = [kids[stage]]
    t.end_pipeline("finished")
    return parent, kids


def check(client, parent: str, kids: dict[str, str], dataset: str) -> None:
    exp = client.get_run(parent).info.experiment_id
    found = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert {r.data.tags["frugalcv.stage"]: r.info.run_id for r in found} == kids
    digest = load_manifest(dataset).digest()
    for r in found:
        stage = r.data.tags["frugalcv.stage"]
        assert r.info.status == "FINISHED"
        assert r.data.tags["frugalcv.fingerprint"] in ("0" * 64, "1" * 64)
        assert r.data.tags["frugalcv.pipeline_run"] == client.get_run(parent).data.tags["frugalcv.pipeline_run"]
        assert r.data.tags["frugalcv.slurm_job_id"] in ("100", "101")
        assert r.data.params["stage.index"] in ("0", "1") and r.data.metrics == {"loss": 1.0, "acc": 0.5}
        datasets = {i.dataset.name: i for i in r.inputs.dataset_inputs}
        assert datasets["synthetic-test-train"].dataset.digest == digest[:36]
        assert {t.key: t.value for t in datasets["synthetic-test-train"].tags}["frugalcv.sha256"] == digest
        assert [a.path for a in client.list_artifacts(r.info.run_id, "reports")] == [f"reports/{stage}.txt"]
        if stage == "curriculum":
            assert r.data.tags["frugalcv.parent_stage_runs"] == kids["pretrain"]
            assert "pretrain.pt" in datasets


def test_tracker_over_rest(server, dataset, tmp_path):
    run_id = new_run_id()
    t = Tracker(server, root=str(tmp_path / "root"), run_id=run_id, experiment="itest")
    start = time.time()
    parent, kids = run_pipeline(t, run_id, dataset, tmp_path)
    print(f"logged a parent and 2 stages over REST in {time.time() - start:.1f}s")
    assert not t.offline and not any(is_placeholder(k) for k in kids.values())
    check(t.client, parent, kids, dataset)


def test_outbox_synced_into_server(server, dataset, tmp_path):
    from tests_helpers_port import closed_port_url

    root, run_id = str(tmp_path / "root"), new_run_id()
    t = Tracker(closed_port_url(), root=root, run_id=run_id, experiment="itest", timeout_s=2)
    parent, kids = run_pipeline(t, run_id, dataset, tmp_path)
    assert t.offline and is_placeholder(parent)
    report = sync_run(run_url(root, run_id), uri=server)
    assert report.remaining == 0 and not report.failed and report.sent > 10
    ids = Outbox(run_url(root, run_id)).ids()
    check(Tracker(server).client, ids[parent], {k: ids[v] for k, v in kids.items()}, dataset)
    assert sync_run(run_url(root, run_id), uri=server).sent == 0
