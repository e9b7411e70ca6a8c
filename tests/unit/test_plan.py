"""Dry-run plan and the sbatch script (golden files; FRUGALCV_UPDATE_GOLDEN=1 rewrites them)."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest
from submitit.slurm.slurm import _get_default_parameters

from frugalcv.errors import ConfigError
from frugalcv.workflows.pipeline.config import load_pipeline
from frugalcv.workflows.pipeline.plan import (
    check_executor_storage,
    job_folder,
    render_plan,
    render_sbatch,
    run_folder,
    sbatch_parameters,
)

ROOT = Path(__file__).parents[2]
GOLDEN = ROOT / "tests" / "golden"

CASES = {
    "blockdrop-demo-pretrain": ("blockdrop-demo", "pretrain", ["executor.kind=slurm"]),
    "blockdrop-cifar10-resnet110-curriculum": ("blockdrop-cifar10-resnet110", "curriculum",
                                               ["executor.slurm.partition=gpu"]),
    "blockdrop-imagenet-resnet101-curriculum": (
        "blockdrop-imagenet-resnet101", "curriculum",
        ["executor.slurm.partition=gpu", "executor.slurm.account=my lab's account", "executor.slurm.qos=high",
         "executor.slurm.constraint=a100|h100", "executor.slurm.additional.mail-type=END",
         # setup lines are shell, written verbatim: the user quotes them
         """executor.slurm.setup=[module load cuda/12.1, "source '/opt/venvs/frugal cv/bin/activate'"]"""]),
    # a shard stage as a job array of 16 tasks, at most 4 at once
    "blockdrop-imagenet-resnet101-data-array": (
        "blockdrop-imagenet-resnet101", "data",
        ["executor.slurm.partition=gpu", "stages.data.params.tasks=16", "stages.data.params.max_shard_samples=5000",
         "executor.slurm.array_parallelism=4", "executor.slurm.account=my lab's account"]),
}


def normalise(text: str, folder: Path) -> str:
    return text.replace(str(folder), "<RUN>").replace(shlex.quote(sys.executable), "<PYTHON>")


@pytest.mark.parametrize("golden", sorted(CASES))
def test_sbatch_matches_golden(golden, tmp_path):
    pipeline, stage, overrides = CASES[golden]
    cfg = load_pipeline(ROOT / "pipelines" / f"{pipeline}.yaml", overrides)
    folder = tmp_path / "run folder"  # a space: every path must be quoted
    text = normalise(render_sbatch(cfg, stage, folder), folder)
    path = GOLDEN / f"{golden}.sbatch"
    if os.environ.get("FRUGALCV_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"missing {path}; run with FRUGALCV_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{path} differs; rerun with FRUGALCV_UPDATE_GOLDEN=1 if intended"


def test_sbatch_basics():
    cfg = load_pipeline(ROOT / "pipelines" / "blockdrop-imagenet-resnet101.yaml")
    text = render_sbatch(cfg, "finetune", "/runs/abc", python="python3")
    lines = text.splitlines()
    assert "#SBATCH --job-name=frugalcv-blockdrop-imagenet-resnet101-finetune" in lines
    assert "#SBATCH --signal=USR2@120" in lines
    assert "#SBATCH --requeue" in lines and "#SBATCH --open-mode=append" in lines
    assert "#SBATCH --nodes=2" in lines and "#SBATCH --ntasks-per-node=4" in lines
    assert "#SBATCH --gpus-per-node=4" in lines and "#SBATCH --mem=256GB" in lines
    assert "#SBATCH --output=/runs/abc/slurm/%j/%j_0_log.out" in lines
    assert lines[-1].endswith("python3 -u -m submitit.core._submit /runs/abc/slurm/%j")
    assert not any("partition" in line for line in lines)  # null: the cluster default


def test_cpu_stage_has_no_gpu_line_and_stage_overrides_apply():
    cfg = load_pipeline(ROOT / "pipelines" / "blockdrop-imagenet-resnet101.yaml")
    text = render_sbatch(cfg, "data", "/r")
    assert "gpus-per-node" not in text and "#SBATCH --cpus-per-task=32" in text and "#SBATCH --time=720" in text


def test_parameters_are_valid_submitit_executor_parameters():
    cfg = load_pipeline(ROOT / "pipelines" / "blockdrop-imagenet-resnet101.yaml",
                        ["executor.slurm.partition=gpu", "executor.slurm.setup=[echo hi]"])
    for stage in cfg.stages:
        assert set(sbatch_parameters(cfg, stage.name)) <= set(_get_default_parameters())


def test_odd_run_folder_is_quoted(odd_tmp):
    cfg = load_pipeline(ROOT / "pipelines" / "blockdrop-demo.yaml")
    folder = odd_tmp / 'run "x" $HOME `id`'
    text = render_sbatch(cfg, "pretrain", folder)
    expected = f"{folder}/slurm/%j"
    options = dict(shlex.split(line[len("#SBATCH "):])[0].split("=", 1)
                   for line in text.splitlines() if line.startswith("#SBATCH --") and "=" in line)
    assert options["--output"] == f"{expected}/%j_0_log.out"
    assert options["--error"] == f"{expected}/%j_0_log.err"
    srun = shlex.split(text.splitlines()[-1])
    assert srun[srun.index("--output") + 1] == f"{expected}/%j_%t_log.out"
    assert srun[-1] == expected


@pytest.mark.parametrize("bad", ["/tmp/a\nb", "/tmp/a\rb", "/tmp/50%"])
def test_unsafe_run_folder_is_rejected(bad):
    cfg = load_pipeline(ROOT / "pipelines" / "blockdrop-demo.yaml")
    with pytest.raises(ConfigError, match="run folder"):
        render_sbatch(cfg, "pretrain", bad)


def test_unsafe_sbatch_values_are_rejected_at_load():
    demo = ROOT / "pipelines" / "blockdrop-demo.yaml"
    for override in ['executor.slurm.account="a\\nb"', 'stages.pretrain.resources.qos="x\\ny"',
                     'executor.slurm.additional.comment="c\\nd"']:
        with pytest.raises(ConfigError, match="newlines"):
            load_pipeline(demo, [override])


def test_run_and_job_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_pipeline(ROOT / "pipelines" / "blockdrop-demo.yaml")
    assert run_folder(cfg, "r1") == f"{tmp_path}/frugalcv-runs/runs/r1"
    assert job_folder("rel") == f"{tmp_path}/rel/slurm/%j"
    remote = load_pipeline(ROOT / "pipelines" / "blockdrop-demo.yaml",
                           ["storage.root=s3://b/x", "tracking.uri=http://127.0.0.1:5000"])
    assert run_folder(remote, "r1") == "s3://b/x/runs/r1"  # inline and local run there
    check_executor_storage(remote, "local")
    with pytest.raises(ConfigError, match="s3://b/x: the slurm executor needs a folder on a shared filesystem"):
        check_executor_storage(remote, "slurm")


def test_unknown_stage():
    cfg = load_pipeline(ROOT / "pipelines" / "blockdrop-demo.yaml")
    with pytest.raises(ConfigError, match="no stage 'pretrian'; stages: digits, pretrain"):
        render_sbatch(cfg, "pretrian", "/r")


def test_render_plan_lists_stages_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = render_plan(load_pipeline(ROOT / "pipelines" / "blockdrop-imagenet-resnet101.yaml"))
    order = [plan.index(f". {name}  uses=") for name in ("data", "pretrain", "curriculum", "finetune", "evaluate")]
    assert order == sorted(order)
    assert "input  checkpoint <- output 'checkpoint' of stage pretrain" in plan
    assert f"param  dst = {tmp_path}/frugalcv-runs/data/imagenet" in plan
    assert "nodes=2 tasks_per_node=4 gpus_per_node=4" in plan
    assert "job=frugalcv-blockdrop-imagenet-resnet101-curriculum" in plan
    assert "engine=ddp" in plan
    demo = render_plan(load_pipeline(ROOT / "pipelines" / "blockdrop-demo.yaml", ["stages.finetune.engine=deepspeed"]))
    assert "executor  inline" in demo and "job=" not in demo
    assert "4. finetune  uses=blockdrop.finetune  engine=deepspeed" in demo and "zero_stage=0" in demo


def test_array_stage_lines_and_quoting(odd_tmp):
    cfg = load_pipeline(ROOT / "pipelines" / "blockdrop-imagenet-resnet101.yaml",
                        ["stages.data.params.tasks=3", "stages.data.params.max_shard_samples=100"])
    folder = odd_tmp / 'run "x" $HOME'
    text = render_sbatch(cfg, "data", folder)
    options = dict(shlex.split(line[len("#SBATCH "):])[0].split("=", 1)
                   for line in text.splitlines() if line.startswith("#SBATCH --") and "=" in line)
    assert options["--array"] == "0-2%3"  # array_parallelism (256) above the task count: all at once
    assert options["--output"] == f"{folder}/slurm/%A_%a/%A_%a_0_log.out"
    assert options["--job-name"] == "frugalcv-blockdrop-imagenet-resnet101-data"
    assert "--array" not in render_sbatch(cfg, "pretrain", folder)
    assert "#SBATCH --array=0-9%10" in render_sbatch(cfg, "pretrain", folder, array=10).splitlines()  # a sweep
    plan = render_plan(load_pipeline(ROOT / "pipelines" / "blockdrop-imagenet-resnet101.yaml",
                                     ["stages.data.params.tasks=3", "stages.data.params.max_shard_samples=100",
                                      "executor.slurm.array_parallelism=2"]))
    assert "job=frugalcv-blockdrop-imagenet-resnet101-data array=3%2" in plan


def test_shard_tasks_without_max_shard_samples_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"override -o stages.data.params.tasks=4\): stages.data.params.tasks: 4: needs params.max_shard_samples"):
        load_pipeline(ROOT / "pipelines" / "blockdrop-imagenet-resnet101.yaml", ["stages.data.params.tasks=4"])
    with pytest.raises(ConfigError, match="array_parallelism"):
        load_pipeline(ROOT / "pipelines" / "blockdrop-demo.yaml", ["executor.slurm.array_parallelism=0"])
