"""Fingerprints, stage records and the fingerprint cache."""

import hashlib
import json

import pytest
from synthetic import synthetic_image  # noqa: F401  (registers the synthetic-test kind)

from frugalcv.sharding import write_shards
from frugalcv.workflows.pipeline import lineage
from frugalcv.workflows.pipeline.config import pipeline_from_dict
from frugalcv.workflows.pipeline.lineage import (
    LineageError,
    RunStore,
    StageRecord,
    cached_or_none,
    file_sha256,
    fingerprint,
    input_digest,
    latest_run,
    new_run_id,
    output_ref,
    stage_fingerprint,
)

CODE = {"version": "0.1.0", "git_commit": "abc", "source_sha256": "0" * 64}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    write_shards("synthetic-test", "12", str(root), split="train", max_shard_samples=5, progress=False)
    return str(root / "train")


def pipeline(tmp_path, data_url, lr=0.1, gamma=10, partition=None):
    return pipeline_from_dict({
        "name": "demo",
        "storage": {"root": str(tmp_path / "root")},
        "stages": [
            {"name": "pretrain", "uses": "blockdrop.pretrain", "inputs": {"train": data_url},
             "params": {"lr": lr, "epochs": 2}, "resources": {"partition": partition} if partition else {}},
            {"name": "curriculum", "uses": "blockdrop.curriculum",
             "inputs": {"model": "${stages.pretrain.outputs.checkpoint}", "train": data_url},
             "params": {"gamma": gamma}},
        ],
    })


def test_run_ids_sort_by_time_and_latest_run(tmp_path):
    a, b = new_run_id(now=1_700_000_000), new_run_id(now=1_700_000_100)
    assert lineage.RUN_ID.fullmatch(a) and a < b
    assert latest_run(str(tmp_path)) is None
    for rid in (b, a, "not-a-run"):
        (tmp_path / "runs" / rid).mkdir(parents=True)
    assert latest_run(str(tmp_path)) == b


def test_latest_run_orders_runs_of_the_same_second_by_their_creation_time(tmp_path):
    stamp = new_run_id(now=1_700_000_000)[:15]
    older, newer = f"{stamp}-ffff", f"{stamp}-0000"  # the newer one sorts first by name
    for rid, created in ((older, 1_700_000_000.2), (newer, 1_700_000_000.7)):
        RunStore(str(tmp_path), rid).update_meta(run_id=rid, created=created)
    assert latest_run(str(tmp_path)) == newer


def test_file_sha256_streams_any_url(tmp_path):
    data = b"x" * (9 << 20) + b"tail"
    (tmp_path / "f.bin").write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert file_sha256(str(tmp_path / "f.bin")) == want
    assert file_sha256(f"file://{tmp_path}/f.bin") == want
    import fsspec

    with fsspec.open("memory://lineage/f.bin", "wb") as f:
        f.write(data)
    assert file_sha256("memory://lineage/f.bin") == want


def test_input_digest_uses_manifest_for_datasets_and_sha_for_files(tmp_path, dataset):
    from frugalcv.sharding.manifest import load_manifest

    assert input_digest(dataset) == "manifest:" + load_manifest(dataset).digest()
    assert input_digest(dataset + "/manifest.json") == input_digest(dataset)
    (tmp_path / "ck.pt").write_bytes(b"weights")
    assert input_digest(str(tmp_path / "ck.pt")) == "sha256:" + hashlib.sha256(b"weights").hexdigest()
    (tmp_path / "dsck").mkdir()
    (tmp_path / "dsck" / "a").write_bytes(b"1")
    d1 = input_digest(str(tmp_path / "dsck"))
    (tmp_path / "dsck" / "a").write_bytes(b"2")
    assert input_digest(str(tmp_path / "dsck")) != d1
    with pytest.raises(LineageError, match="does not exist"):
        input_digest(str(tmp_path / "missing.pt"))


def test_fingerprint_changes_with_config_inputs_parents_code_only():
    base = fingerprint({"params": {"lr": 0.1}}, {"train": "manifest:aa"}, {"p": "f1"}, CODE)
    assert base == fingerprint({"params": {"lr": 0.1}}, {"train": "manifest:aa"}, {"p": "f1"}, dict(CODE))
    assert base != fingerprint({"params": {"lr": 0.2}}, {"train": "manifest:aa"}, {"p": "f1"}, CODE)
    assert base != fingerprint({"params": {"lr": 0.1}}, {"train": "manifest:bb"}, {"p": "f1"}, CODE)
    assert base != fingerprint({"params": {"lr": 0.1}}, {"train": "manifest:aa"}, {"p": "f2"}, CODE)
    assert base != fingerprint({"params": {"lr": 0.1}}, {"train": "manifest:aa"}, {"p": "f1"},
                               {**CODE, "source_sha256": "1" * 64})
    # where a stage runs is not what it computes
    assert base == fingerprint({"params": {"lr": 0.1}, "resources": {"partition": "gpu"}},
                               {"train": "manifest:aa"}, {"p": "f1"}, CODE)


def test_code_version_hashes_package_sources():
    cv = lineage.code_version()
    assert cv["version"] and len(cv["source_sha256"]) == 64


def _finish(store, stage, fp, tmp_path, content):
    ck = tmp_path / f"{stage}-{content}.pt"
    ck.write_bytes(content.encode())
    store.update(stage, state="running", fingerprint=fp)
    return store.update(stage, state="finished", outputs={"checkpoint": output_ref(str(ck))}, metrics={"acc": 0.5})


def test_stage_fingerprints_chain_downstream_and_cache_hits(tmp_path, dataset):
    cfg = pipeline(tmp_path, dataset)
    root = cfg.storage.root
    run1 = RunStore(root, "20260101-000000-aaaa")
    fp_pre = stage_fingerprint(cfg, "pretrain", run1, CODE)
    with pytest.raises(LineageError, match="needs stage 'pretrain' done"):
        stage_fingerprint(cfg, "curriculum", run1, CODE)
    _finish(run1, "pretrain", fp_pre, tmp_path, "w1")
    fp_cur = stage_fingerprint(cfg, "curriculum", run1, CODE)
    _finish(run1, "curriculum", fp_cur, tmp_path, "p1")

    # same config, new run: both stages are cache hits and reuse the outputs
    run2 = RunStore(root, "20260101-000001-bbbb")
    assert stage_fingerprint(cfg, "pretrain", run2, CODE) == fp_pre
    hit = cached_or_none(run2, "pretrain", fp_pre)
    assert hit.state == "cached" and hit.cached_from == run1.run_id
    assert hit.outputs == run1.read("pretrain").outputs and hit.metrics == {"acc": 0.5}
    assert stage_fingerprint(cfg, "curriculum", run2, CODE) == fp_cur
    assert cached_or_none(run2, "curriculum", fp_cur).state == "cached"

    # Slurm resources do not change fingerprints
    assert stage_fingerprint(pipeline(tmp_path, dataset, partition="gpu"), "pretrain", run2, CODE) == fp_pre

    # a downstream-only change reruns only that stage
    cfg_g = pipeline(tmp_path, dataset, gamma=5)
    run3 = RunStore(root, "20260101-000002-cccc")
    assert stage_fingerprint(cfg_g, "pretrain", run3, CODE) == fp_pre
    cached_or_none(run3, "pretrain", fp_pre)
    assert stage_fingerprint(cfg_g, "curriculum", run3, CODE) != fp_cur

    # an upstream hyper-parameter changes that stage and everything downstream
    cfg_lr = pipeline(tmp_path, dataset, lr=0.05)
    run4 = RunStore(root, "20260101-000003-dddd")
    fp_pre4 = stage_fingerprint(cfg_lr, "pretrain", run4, CODE)
    assert fp_pre4 != fp_pre and cached_or_none(run4, "pretrain", fp_pre4) is None
    # even if retraining happened to give identical bytes, the chained parent fingerprint differs
    _finish(run4, "pretrain", fp_pre4, tmp_path, "w1")
    assert stage_fingerprint(cfg_lr, "curriculum", run4, CODE) != fp_cur


def test_cache_miss_when_outputs_are_gone_or_changed(tmp_path):
    store = RunStore(str(tmp_path / "root"), "20260101-000000-aaaa")
    rec = _finish(store, "s", "f" * 64, tmp_path, "w")
    assert store.cache_lookup("f" * 64) is not None
    ck = tmp_path / "s-w.pt"
    ck.write_bytes(b"tampered")
    assert store.cache_lookup("f" * 64) is not None
    assert store.cache_lookup("f" * 64, verify=True) is None
    ck.unlink()
    assert store.cache_lookup("f" * 64) is None
    assert rec.outputs["checkpoint"]["uri"].endswith("s-w.pt")
    assert store.cache_lookup("e" * 64) is None


def test_cache_miss_when_a_shard_of_a_dataset_output_is_gone(tmp_path):
    write_shards("synthetic-test", "12", str(tmp_path / "ds"), split="train", max_shard_samples=5, progress=False)
    store = RunStore(str(tmp_path / "root"), "20260101-000000-aaaa")
    store.update("shard", state="running", fingerprint="d" * 64)
    store.update("shard", state="finished", outputs={"train": output_ref(str(tmp_path / "ds" / "train"))})
    assert store.cache_lookup("d" * 64) is not None
    (tmp_path / "ds" / "train" / "train-000001.tar").unlink()
    assert store.cache_lookup("d" * 64) is None


def test_records_round_trip_with_states_jobs_and_error_tail(tmp_path):
    store = RunStore(str(tmp_path / "root"), "20260101-000000-aaaa")
    store.update("pretrain", state="running", fingerprint="ab", mlflow_run_id="m1")
    store.add_slurm_job("pretrain", "101")
    store.add_slurm_job("pretrain", "101")
    store.update("pretrain", state="pending")
    store.update("pretrain", state="running")  # a requeue
    store.add_slurm_job("pretrain", "102")
    rec = store.update("pretrain", state="failed", error=lineage.tail("\n".join(f"line {i}" for i in range(100)), 5))
    assert rec.attempts == 2 and rec.slurm_job_ids == ["101", "102"] and rec.mlflow_run_id == "m1"
    assert rec.error.splitlines() == [f"line {i}" for i in range(95, 100)] and rec.ended
    on_disk = json.loads((tmp_path / "root/runs/20260101-000000-aaaa/stages/pretrain.json").read_text())
    assert on_disk["state"] == "failed"
    assert set(store.records()) == {"pretrain"}
    assert not (tmp_path / "root/cache").exists()  # failed records are never cached
    with pytest.raises(LineageError, match="state 'done'"):
        store.update("pretrain", state="done")
    with pytest.raises(LineageError, match="no field"):
        store.update("pretrain", colour="red")
    store.update_meta(mlflow_parent_run_id="p1", pipeline="demo")
    assert store.read_meta() == {"mlflow_parent_run_id": "p1", "pipeline": "demo"}
    assert StageRecord.from_json(rec.to_json()) == rec


def test_run_dir_latest(tmp_path):
    with pytest.raises(LineageError, match="no runs yet"):
        lineage.run_dir(str(tmp_path))
    (tmp_path / "runs" / "20260101-000000-aaaa").mkdir(parents=True)
    assert lineage.run_dir(str(tmp_path)).endswith("runs/20260101-000000-aaaa")
