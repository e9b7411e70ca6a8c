"""A pipeline whose finetune stage starts from the model an earlier run registered (models:/...),
and `frugalcv ui` serving the local store those runs wrote (real `mlflow server` processes)."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from frugalcv.cli import main
from frugalcv.workflows.pipeline import runner

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

DEMO = Path(__file__).resolve().parents[2] / "pipelines" / "blockdrop-demo.yaml"


def pipeline(tmp_path: Path, name: str, stages: list[str], **inputs: dict[str, str]) -> str:
    """The demo pipeline cut down to ``stages``, named ``name``, with some stages' inputs replaced."""
    data = yaml.safe_load(DEMO.read_text())
    data["name"], data["tracking"] = name, {"experiment": name}
    data["stages"] = [s for s in data["stages"] if s["name"] in stages]
    for s in data["stages"]:
        s["inputs"] = {**s.get("inputs", {}), **inputs.get(s["name"], {})}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def run(path: str, root: Path, capsys) -> tuple[str, str]:
    assert main(["run", path, "--smoke", "-o", f"storage.root={root}"]) == 0
    out = capsys.readouterr().out
    return re.search(r"run (\d{8}-\d{6}-[0-9a-f]{4})", out).group(1), out


def test_finetune_from_a_registered_model_records_the_model_version(tmp_path, capsys):
    root = tmp_path / "runs"
    first = pipeline(tmp_path, "reg-first", ["digits", "pretrain", "curriculum", "finetune"])
    rid1, out1 = run(first, root, capsys)
    assert "[finetune] registered model reg-first version 1" in out1
    st1 = runner.status(rid1, str(root))
    ck = {s["stage"]: s for s in st1["stages"]}["finetune"]["outputs"]["checkpoint"]
    assert st1["mlflow"]["registered_model"]["version"] == "1"

    second = pipeline(tmp_path, "reg-second", ["digits", "finetune", "evaluate"],
                      finetune={"checkpoint": "models:/reg-first/1"}, evaluate={"before": "models:/reg-first/latest"})
    rid2, out2 = run(second, root, capsys)
    stages = {s["stage"]: s for s in runner.status(rid2, str(root))["stages"]}
    assert stages["digits"]["state"] == "cached" and stages["finetune"]["state"] == "finished"
    got = stages["finetune"]["model_inputs"]["checkpoint"]
    assert (got["model"], got["version"], got["uri"], got["sha256"]) == ("reg-first", "1", ck["uri"], ck["sha256"])
    assert stages["evaluate"]["model_inputs"]["before"]["version"] == "1"

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    tags = client.get_run(stages["finetune"]["mlflow_run_id"]).data.tags
    print({k: v for k, v in tags.items() if k.startswith("frugalcv.input.")})
    assert tags["frugalcv.input.checkpoint.model_version"] == "reg-first/1"
    assert tags["frugalcv.input.checkpoint.source"] == "models:/reg-first/1"
    assert tags["frugalcv.input.checkpoint.sha256"] == ck["sha256"]
    mv = client.get_model_version("reg-first", "1")
    assert tags["frugalcv.input.checkpoint.run"] == mv.run_id
    # the second pipeline's own final model is its finetune stage's
    assert "[finetune] registered model reg-second version 1" in out2

    check_ui_command(root, rid2, stages["finetune"]["mlflow_run_id"])


def check_ui_command(root: Path, rid: str, stage_run: str) -> None:
    """`frugalcv ui RUN` starts the UI on 127.0.0.1 over the run's store and prints the run's URL."""
    from mlflow_server import _free_port

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "frugalcv.cli", "ui", rid, "--root", str(root), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    lines = []
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith(f"run {rid}: "):
                break
        print("\n".join(lines))
        url = lines[-1].split(": ", 1)[1]
        assert re.fullmatch(rf"http://127\.0\.0\.1:{port}/#/experiments/\d+/runs/[0-9a-f]{{32}}\?workflowType=machine_learning", url), lines
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={stage_run}",
                                    timeout=10) as r:
            assert r.status == 200 and stage_run.encode() in r.read()
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: frugalcv stops its server
        proc.wait(60)
    time.sleep(0.5)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3)
