"""Credentials in a tracking URL, a storage URL and ``storage.options`` reach no output, file or MLflow record."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow_server import mlflow_server

pytestmark = pytest.mark.integration

TRACKING_SECRET = "trk-Secret-2718"
URL_SECRET = "url-Secret-3141"


def cli(*args, env):
    out = subprocess.run([sys.executable, "-m", "frugalcv.cli", *args], capture_output=True, text=True,
                         timeout=300, env=env)
    return out.returncode, out.stdout + out.stderr


def test_no_secret_in_any_sink(s3_bucket, tmp_path):
    import s3fs
    from mlflow import MlflowClient

    storage_secret = os.environ["AWS_SECRET_ACCESS_KEY"]  # moto's: given only through storage.options
    secrets = (TRACKING_SECRET, URL_SECRET, storage_secret)
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    root = f"s3://{s3_bucket}/root"
    with mlflow_server(tmp_path / "mlflow") as url:
        pipeline = tmp_path / "secret.yaml"
        pipeline.write_text(yaml.safe_dump({
            "name": "secret", "storage": {"root": root, "options": {"key": "testing", "secret": storage_secret}},
            "tracking": {"uri": url.replace("http://", f"http://user:{TRACKING_SECRET}@")},
            "stages": [{"name": "digits", "uses": "shard", "params": {
                "kind": "digits", "src": "sklearn", "splits": ["test"], "max_shard_samples": 200}}],
        }))
        outputs = {}
        outputs["dry-run"] = cli("run", str(pipeline), "--dry-run", env=env)
        outputs["run"] = cli("run", str(pipeline), env=env)
        assert outputs["run"][0] == 0, outputs["run"][1]
        url_root = f"s3://testing:{URL_SECRET}@{s3_bucket}/root"
        outputs["status"] = cli("status", "latest", "--root", url_root, "--json", env=env)
        outputs["sync"] = cli("sync", "latest", "--pipeline", str(pipeline), env=env)
        for name, (code, text) in outputs.items():
            assert code == 0 or name == "sync", (name, text)
            for secret in secrets:
                assert secret not in text, (name, text)
        st = json.loads(outputs["status"][1])
        assert st["stages"][0]["state"] == "finished" and st["mlflow"]["uri"].startswith("http://***@")

        fs = s3fs.S3FileSystem(key="testing", secret=storage_secret, endpoint_url=os.environ["AWS_ENDPOINT_URL"])
        files = fs.find(f"{s3_bucket}/root/runs/{st['run_id']}")
        assert any(f.endswith("run.json") for f in files) and any(f.endswith("digits.log") for f in files)
        assert fs.exists(f"{s3_bucket}/root/runs/{st['run_id']}/stages/digits/data/test/manifest.json")
        for f in files:
            data = fs.cat_file(f).decode(errors="replace")
            for secret in secrets:
                assert secret not in data, f

        client = MlflowClient(url)
        exp = client.get_experiment_by_name("secret")
        runs = client.search_runs([exp.experiment_id])
        assert len(runs) == 2  # the pipeline run and its stage
        for run in runs:
            recorded = json.dumps({"params": run.data.params, "tags": run.data.tags,
                                   "inputs": str(run.inputs)})
            for secret in secrets:
                assert secret not in recorded
        for path in Path(tmp_path / "mlflow").rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for secret in secrets:
                    assert secret.encode() not in data, path
