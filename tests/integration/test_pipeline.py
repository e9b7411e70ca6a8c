"""Whole pipelines: the BlockDrop demo inline through the CLI, and stages as Slurm jobs on the
local 2-node cluster (2 nodes x 1 task, gloo DDP), including a preemption that requeues."""

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from frugalcv.cli import main
from frugalcv.workflows.pipeline import runner
from frugalcv.workflows.pipeline.config import pipeline_from_dict
from frugalcv.workflows.pipeline.plan import render_sbatch

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "pipelines" / "blockdrop-demo.yaml")
#: the demo with debug-sized networks and a few epochs: the same stages and code, minutes less
SMALL = ["stages.pretrain.epochs=2", "stages.pretrain.params.debug=true", "stages.curriculum.epochs=2",
         "stages.curriculum.epochs_per_stage=1", "stages.finetune.epochs=1"]


def overrides(items):
    return [a for item in items for a in ("-o", item)]


def test_demo_inline_prints_a_table_and_a_second_run_is_all_cached(tmp_path, capsys):
    args = ["run", DEMO, *overrides([f"storage.root={tmp_path}", *SMALL])]
    t0 = time.monotonic()
    assert main(args) == 0
    took = time.monotonic() - t0
    out = capsys.readouterr().out
    rid = re.search(r"pipeline blockdrop-demo run (\S+)", out).group(1)
    table = out[out.index("stage       state"):]
    for stage in ("digits", "pretrain", "curriculum", "finetune", "evaluate"):
        assert re.search(rf"^{stage}\s+finished", table, re.M), table
    assert f"run {rid}: finished" in out
    report = tmp_path / "runs" / rid / "stages" / "evaluate" / "report.md"
    assert "| BlockDrop, before finetuning |" in report.read_text()
    assert "| BlockDrop, after finetuning (γ=5) |" in report.read_text()
    assert (report.parent / "block_usage.png").exists()

    assert main(args) == 0
    capsys.readouterr()
    assert main(["status", "latest", "--root", str(tmp_path), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert [s["state"] for s in st["stages"]] == ["cached"] * 5
    first = runner.status(rid, str(tmp_path))
    assert [s["outputs"] for s in st["stages"]] == [s["outputs"] for s in first["stages"]]

    from mlflow import MlflowClient

    client = MlflowClient(first["mlflow"]["uri"])
    exp = client.get_experiment_by_name("blockdrop-demo")
    children = client.search_runs([exp.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{first['mlflow']['parent_run_id']}'")
    assert sorted(r.info.run_name for r in children) == sorted(s["stage"] for s in first["stages"])
    pretrain = next(r for r in children if r.info.run_name == "pretrain")
    assert {d.dataset.name for d in pretrain.inputs.dataset_inputs} >= {"digits-train", "digits-test"}
    assert pretrain.data.tags["frugalcv.fingerprint"] == first["stages"][1]["fingerprint"]
    print(f"demo (small) inline: {took:.0f}s")


# ------------------------------------------------------------------------------------ Slurm


def two_node(root, kind, checkpoint_every=5, deepspeed=False, epochs=1, num_workers=2, log_every=20):
    """Shard the digits, then pretrain the debug ResNet on 2 nodes (ranks) with the streaming loader."""
    engine = {"engine": "deepspeed", "deepspeed": {"zero_stage": 2}} if deepspeed else {}
    return pipeline_from_dict({
        "name": "two-node", "storage": {"root": str(root)},
        "executor": {"kind": kind, "slurm": {"timeout_min": 30, "mem_gb": 1, "cpus_per_task": 1}},
        "stages": [
            {"name": "digits", "uses": "shard", "params": {"kind": "digits", "src": "sklearn"}},
            {"name": "pretrain", "uses": "blockdrop.pretrain", "resources": {"nodes": 2}, **engine,
             "checkpoint_every": checkpoint_every, "num_workers": num_workers,
             "inputs": {"train": "${stages.digits.outputs.train}", "val": "${stages.digits.outputs.test}"},
             "params": {"model": "cifar_resnet32", "debug": True, "epochs": epochs, "batch_size": 64,
                        "warmup_epochs": 0, "seed": 0, "drop_path": 0.2, "log_every": log_every}},
        ],
    })


def sha(root, rid, stage="pretrain"):
    return runner.status(rid, str(root))["stages"][[s.name for s in two_node(root, "inline").stages].index(stage)][
        "outputs"]["checkpoint"]["sha256"]


@pytest.fixture(scope="module")
def local_two_rank_sha(tmp_path_factory):
    """The same stage with the local executor: 2 processes, gloo on 127.0.0.1."""
    root = tmp_path_factory.mktemp("local2")
    rid = runner.run_pipeline(two_node(root, "local"), track=False, printer=print)
    return sha(root, rid)


def test_two_node_gloo_stage_matches_the_local_two_rank_run(slurm_cluster, tmp_path, local_two_rank_sha):
    t0 = time.monotonic()
    rid = runner.run_pipeline(two_node(tmp_path, "slurm"), track=False, printer=print)
    took = time.monotonic() - t0
    st = runner.status(rid, str(tmp_path))
    pretrain = st["stages"][1]
    assert pretrain["state"] == "finished" and len(pretrain["slurm_job_ids"]) == 1
    job = pretrain["slurm_job_ids"][0]
    folder = tmp_path / "runs" / rid / "slurm" / job
    logs = sorted(p.name for p in folder.glob("*_log.out"))
    assert logs == [f"{job}_0_log.out", f"{job}_1_log.out"]  # two tasks (ranks), one per node
    assert sha(tmp_path, rid) == local_two_rank_sha
    # what was submitted is what `frugalcv run --dry-run` prints
    submitted = (folder / f"{job}_submission.sh").read_text()
    assert submitted == render_sbatch(two_node(tmp_path, "slurm"), "pretrain", st["run_folder"])
    print(f"slurm 2-node run: {took:.0f}s")


def test_preempted_stage_requeues_and_ends_with_the_same_sha256(slurm_cluster, tmp_path, local_two_rank_sha):
    cfg = two_node(tmp_path, "slurm", checkpoint_every=5)
    result = {}

    def drive():
        try:
            result["rid"] = runner.run_pipeline(cfg, track=False, printer=print)
        except Exception as e:  # reported below
            result["error"] = e

    thread = threading.Thread(target=drive)
    thread.start()
    deadline = time.monotonic() + 300
    job = first = None
    while time.monotonic() < deadline and thread.is_alive():
        runs = list((tmp_path / "runs").glob("*/stages/pretrain/checkpoints/step-*.pt"))
        if runs:  # the first cadence checkpoint (step 5): training runs, the ControlHook owns USR2
            rid, first = runs[0].parts[-5], int(runs[0].stem.split("-")[1])
            job = runner.status(rid, str(tmp_path))["stages"][1]["slurm_job_ids"][0]
            subprocess.run(["scancel", "--signal=USR2", job], check=True)
            break
        time.sleep(0.2)
    thread.join(600)
    assert not thread.is_alive(), "the pipeline did not end within 600s of the USR2"
    assert "error" not in result, result.get("error")
    assert job is not None, "no checkpoint appeared before the stage ended"
    st = runner.status(result["rid"], str(tmp_path))
    # requeued by submitit (the same job id), not failed and resubmitted
    assert st["stages"][1]["state"] == "finished" and st["stages"][1]["slurm_job_ids"] == [job]
    log = (tmp_path / "runs" / result["rid"] / "slurm" / job / f"{job}_0_log.out").read_text()
    assert f"Requeued job {job}" in log, log[-2000:]
    resumed = re.search(r"resumed from \S+step-(\d+)\.pt \(step (\d+), epoch 0\)", log)
    assert resumed and int(resumed.group(1)) == int(resumed.group(2)) >= first, log[-2000:]
    assert sha(tmp_path, result["rid"]) == local_two_rank_sha


def test_deepspeed_zero2_stage_on_two_nodes_matches_the_local_two_rank_run(slurm_cluster, tmp_path):
    pytest.importorskip("deepspeed")
    local = runner.run_pipeline(two_node(tmp_path / "local", "local", deepspeed=True), track=False, printer=print)
    t0 = time.monotonic()
    rid = runner.run_pipeline(two_node(tmp_path / "slurm", "slurm", deepspeed=True), track=False, printer=print)
    took = time.monotonic() - t0
    st = runner.status(rid, str(tmp_path / "slurm"))
    assert st["stages"][1]["state"] == "finished"
    job = st["stages"][1]["slurm_job_ids"][0]
    log = (tmp_path / "slurm" / "runs" / rid / "slurm" / job / f"{job}_0_log.out").read_text()
    assert "pretrain step" in log
    assert sha(tmp_path / "slurm", rid) == sha(tmp_path / "local", local)
    print(f"slurm 2-node DeepSpeed ZeRO-2 run: {took:.0f}s")
