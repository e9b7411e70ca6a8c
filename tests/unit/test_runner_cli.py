"""``frugalcv run/status/resume/cancel/sweep`` on a fake pipeline, and ``run --dry-run`` vs the goldens."""

import json
import os
import re
import shlex
import sys
from pathlib import Path

import pytest
import test_runner  # noqa: F401  (registers the fake stages)
import yaml

from frugalcv.cli import main

ROOT = Path(__file__).parents[2]


@pytest.fixture
def pipeline_file(tmp_path):
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump({
        "name": "fake", "storage": {"root": str(tmp_path / "root")},
        "stages": [{"name": "a", "uses": "fake.source", "params": {"text": "hi"}},
                   {"name": "b", "uses": "fake.upper", "inputs": {"src": "${stages.a.outputs.data}"},
                    "params": {"suffix": "!"}}],
    }))
    return path


def test_run_prints_the_run_id_and_a_table_then_status(pipeline_file, tmp_path, capsys):
    assert main(["run", str(pipeline_file), "--no-track"]) == 0
    out = capsys.readouterr().out
    rid = re.match(r"pipeline fake run (\S+)", out).group(1)
    assert re.search(r"^b\s+finished", out, re.M) and f"run {rid}: finished" in out

    assert main(["status", "latest", "--pipeline", str(pipeline_file), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["run_id"] == rid and [s["state"] for s in st["stages"]] == ["finished", "finished"]

    assert main(["status", rid, "--root", str(tmp_path / "root")]) == 0
    assert "b" in capsys.readouterr().out


def test_sweep_runs_once_per_value(pipeline_file, tmp_path, capsys):
    assert main(["sweep", str(pipeline_file), "-o", "stages.b.suffix=x,y", "--no-track"]) == 0
    out = capsys.readouterr().out
    assert "sweep: 2 run(s)" in out
    assert re.search(r"stages\.b\.suffix=x\s+finished", out) and re.search(r"stages\.b\.suffix=y\s+finished", out)
    runs = sorted(p.name for p in (tmp_path / "root" / "runs").iterdir())
    assert len(runs) == 2


def test_errors_are_one_line(pipeline_file, tmp_path, capsys):
    assert main(["status", "latest", "--root", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no runs yet") and err.count("\n") == 1
    assert main(["run", str(pipeline_file), "-o", "stages.b.sufix=1", "--no-track"]) == 2


def test_resume_and_cancel(pipeline_file, capsys):
    assert main(["run", str(pipeline_file), "--no-track"]) == 0
    capsys.readouterr()
    assert main(["resume", "latest", "--pipeline", str(pipeline_file)]) == 0
    assert "resumed" in capsys.readouterr().out
    assert main(["cancel", "latest", "--pipeline", str(pipeline_file)]) == 0
    assert "cancelled" in capsys.readouterr().out


def test_dry_run_prints_the_plan_and_the_golden_sbatch(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    demo = ROOT / "pipelines" / "blockdrop-demo.yaml"
    assert main(["run", str(demo), "-o", "executor.kind=slurm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pipeline blockdrop-demo") and "executor  slurm" in out
    assert not (tmp_path / "frugalcv-runs" / "runs").exists()  # nothing submitted, no run folder
    scripts = dict(re.findall(r"--- sbatch for stage (\S+) ---\n(.*?)(?=\n--- sbatch|\Z)", out, re.S))
    assert list(scripts) == ["digits", "pretrain", "curriculum", "finetune", "evaluate"]
    run = str(tmp_path / "frugalcv-runs" / "runs" / "<run-id>")
    pretrain = scripts["pretrain"].replace(run, "<RUN>").replace(shlex.quote(sys.executable), "<PYTHON>")
    assert pretrain.strip() == (ROOT / "tests" / "golden" / "blockdrop-demo-pretrain.sbatch").read_text().strip()


def test_sweep_dry_run_on_slurm_shows_one_job_array_per_swept_stage(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    demo = ROOT / "pipelines" / "blockdrop-demo.yaml"
    assert main(["sweep", str(demo), "-o", "executor.kind=slurm", "-o", "stages.curriculum.gamma=2,5,10",
                 "-o", "executor.slurm.array_parallelism=2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sweep: 3 run(s)" in out and out.count("\n=== ") == 3 and "param  gamma = 10" in out
    scripts = dict(re.findall(r"--- sbatch for stage (\S+) [^\n]*---\n(.*?)(?=\n--- sbatch|\Z)", out, re.S))
    assert list(scripts) == ["digits", "pretrain", "curriculum", "finetune", "evaluate"]
    assert "--- sbatch for stage pretrain (once, shared by every value) ---" in out
    assert "--- sbatch for stage curriculum (job array: 3 value(s), 3 task(s)) ---" in out
    for stage in ("digits", "pretrain"):
        assert "--array" not in scripts[stage]
    for stage in ("curriculum", "finetune", "evaluate"):
        assert "#SBATCH --array=0-2%2" in scripts[stage].splitlines()
        assert f"#SBATCH --job-name=frugalcv-blockdrop-demo-{stage}" in scripts[stage].splitlines()
    run = str(tmp_path / "frugalcv-runs" / "runs" / "<run-id>")
    curriculum = scripts["curriculum"].replace(run, "<RUN>").replace(shlex.quote(sys.executable), "<PYTHON>")
    golden = ROOT / "tests" / "golden" / "blockdrop-demo-sweep-curriculum.sbatch"
    if os.environ.get("FRUGALCV_UPDATE_GOLDEN") == "1":
        golden.write_text(curriculum.strip() + "\n")
    assert curriculum.strip() == golden.read_text().strip()
    assert not (tmp_path / "frugalcv-runs" / "runs").exists()
