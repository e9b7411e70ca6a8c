"""`frugalcv status` of a run tracked while its store was unreachable: placeholders before `frugalcv sync`,
the real MLflow run ids after it."""

import json
import re

import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image
from tests_helpers_port import closed_port_url

from frugalcv.cli import main
from frugalcv.workflows.pipeline.outbox import is_placeholder


@pytest.fixture
def offline_pipeline(tmp_path, monkeypatch):
    """A one-stage `shard` pipeline over two PNGs whose tracking URI has nothing listening."""
    monkeypatch.chdir(tmp_path)
    for cls in ("a", "b"):
        (tmp_path / "src" / "train" / cls).mkdir(parents=True)
        Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / "src" / "train" / cls / "img.png")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "storage": {"root": str(tmp_path / "root")},
        "tracking": {"uri": closed_port_url(), "experiment": "offline-then-synced"}, "executor": {"kind": "inline"},
        "stages": [{"name": "data", "uses": "shard",
                    "params": {"kind": "imagefolder", "src": str(tmp_path / "src"), "splits": ["train"]}}],
    }))
    return path


def status_json(root, rid, capsys) -> dict:
    assert main(["status", rid, "--root", str(root), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_status_shows_real_mlflow_ids_after_sync(offline_pipeline, tmp_path, capsys):
    root, store = tmp_path / "root", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    assert main(["run", str(offline_pipeline)]) == 0  # tracking down never fails the run
    rid = re.match(r"pipeline tiny run (\S+)", capsys.readouterr().out).group(1)
    before = status_json(root, rid, capsys)
    parent, child = before["mlflow"]["parent_run_id"], before["stages"][0]["mlflow_run_id"]
    assert is_placeholder(parent) and is_placeholder(child)
    assert main(["status", rid, "--root", str(root)]) == 0
    assert "mlflow: not all sent yet" in capsys.readouterr().out

    assert main(["sync", rid, "--root", str(root), "--uri", store]) == 0
    assert "0 rejected, 0 left" in capsys.readouterr().out
    after = status_json(root, rid, capsys)
    parent, child = after["mlflow"]["parent_run_id"], after["stages"][0]["mlflow_run_id"]
    assert not is_placeholder(parent) and not is_placeholder(child)
    client = MlflowClient(store)
    assert client.get_run(parent).data.tags["frugalcv.pipeline_run"] == rid
    run = client.get_run(child)
    assert run.data.tags["mlflow.parentRunId"] == parent and run.info.status == "FINISHED"
    assert run.data.metrics["train_samples"] == 2.0
    artifacts = client.get_experiment(run.info.experiment_id).artifact_location
    assert artifacts == str(root / "mlartifacts")  # beside the runs, not ./mlruns of the shell
    assert main(["status", rid, "--root", str(root)]) == 0
    assert f"mlflow: run {parent}, experiment offline-then-synced" in capsys.readouterr().out
