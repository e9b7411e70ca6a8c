"""Eight `frugalcv run` processes started at once share one new tracking store: all finish, all are tracked.

The pipeline is one `shard` stage over a two-image folder, so each process costs its imports and
its MLflow calls. First against a sqlite file that does not exist yet (its creation and schema
migration must happen once), then against a real `mlflow server` on 127.0.0.1 backed by a new
sqlite file.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from mlflow_server import mlflow_server
from PIL import Image

from frugalcv.workflows.pipeline.outbox import is_placeholder
from frugalcv.workflows.pipeline.runner import status

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]
RUNS = 8
EXPERIMENT = "concurrent"


def tiny_pipeline(tmp_path: Path, uri: str) -> tuple[Path, Path]:
    """(pipeline file, storage root): one shard stage over an imagefolder of two 4x4 PNGs."""
    src = tmp_path / "src"
    for cls in ("a", "b"):
        (src / "train" / cls).mkdir(parents=True)
        Image.new("RGB", (4, 4), (10, 20, 30)).save(src / "train" / cls / "img.png")
    root = tmp_path / "root"
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "storage": {"root": str(root)},
        "tracking": {"uri": uri, "experiment": EXPERIMENT}, "executor": {"kind": "inline"},
        "stages": [{"name": "data", "uses": "shard",
                    "params": {"kind": "imagefolder", "src": str(src), "splits": ["train"]}}],
    }))
    return path, root


def run_at_once(pipeline: Path, cwd: Path, timeout_s: float = 300.0) -> list[tuple[int, str]]:
    """Start RUNS `python -m frugalcv.cli run` processes together; (exit code, output) of each.
    Prints the wall time and the CPU time they took together."""
    start, cpu = time.time(), _children_cpu()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
               OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "frugalcv.cli", "run", str(pipeline)], cwd=cwd, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(RUNS)]
    deadline = time.time() + timeout_s
    results = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.time()))
            results.append((p.returncode, out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    print(f"{RUNS} runs at once: {time.time() - start:.1f}s wall, {_children_cpu() - cpu:.1f}s CPU in all")
    return results


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def check_all_tracked(results: list[tuple[int, str]], uri: str, root: Path) -> None:
    failed = [out[-3000:] for rc, out in results if rc != 0]
    assert not failed, "\n-----\n".join(failed)
    assert not any("Traceback" in out for _, out in results)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    pipelines = client.search_runs([exp.experiment_id], "tags.`frugalcv.role` = 'pipeline'")
    stages = client.search_runs([exp.experiment_id], "tags.`frugalcv.role` = 'stage'")
    assert len(pipelines) == RUNS and len(stages) == RUNS
    assert {r.info.status for r in pipelines + stages} == {"FINISHED"}
    run_ids = {r.data.tags["frugalcv.pipeline_run"] for r in pipelines}
    assert run_ids == {p.name for p in (root / "runs").iterdir()}
    by_parent = {r.data.tags["mlflow.parentRunId"]: r.info.run_id for r in stages}
    for run_id in run_ids:  # what `frugalcv status` shows is what the store holds
        st = status(run_id, str(root))
        parent, child = st["mlflow"]["parent_run_id"], st["stages"][0]["mlflow_run_id"]
        assert not is_placeholder(parent) and by_parent[parent] == child


def test_eight_runs_at_once_on_a_new_sqlite_store(tmp_path):
    db = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{db}"
    pipeline, root = tiny_pipeline(tmp_path, uri)
    results = run_at_once(pipeline, tmp_path)
    check_all_tracked(results, uri, root)
    assert not any("could not prepare MLflow experiment" in out for _, out in results)


def test_eight_runs_at_once_against_an_mlflow_server(tmp_path):
    with mlflow_server(tmp_path / "server") as url:
        pipeline, root = tiny_pipeline(tmp_path, url)
        results = run_at_once(pipeline, tmp_path)
        check_all_tracked(results, url, root)
