"""Shard to, verify and train-read from a real S3 endpoint served on 127.0.0.1."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from synthetic import synthetic_image  # noqa: F401  (registers the synthetic-test kind)

from frugalcv.errors import FrugalError
from frugalcv.sharding import ShardLoader, iter_samples, storage, summary, verify, write_shards

pytestmark = pytest.mark.integration


def test_shard_verify_and_train_from_s3(s3_bucket, caplog):
    caplog.set_level(logging.DEBUG)
    url = f"s3://{s3_bucket}/datasets/synth"
    m = write_shards("synthetic-test", "45", url, split="train", max_shard_samples=8, workers=2, progress=False)["train"]
    assert m.num_samples == 45 and len(m.shards) == 6
    assert verify(f"{url}/train").ok
    assert summary(f"{url}/train")["num_shards"] == 6
    assert len(list(iter_samples(f"{url}/train"))) == 45

    def to_tensor(s):
        return {"x": torch.from_numpy(s["image"]).permute(2, 0, 1).float() / 255, "y": s["label"]}

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 7))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = 0
    counts = []
    for rank in range(2):
        loader = ShardLoader(f"{url}/train", 5, rank=rank, world_size=2, num_workers=2, seed=0, transform=to_tensor)
        n = 0
        for batch in loader:
            loss = torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += len(batch["y"])
        counts.append(n)
        seen += n
    assert counts == [22, 22] and torch.isfinite(loss)
    assert "testing-secret-xyz" not in caplog.text


def test_a_shard_deleted_on_s3_is_noticed_and_written_again(s3_bucket):
    url = f"s3://{s3_bucket}/datasets/gap"
    m = write_shards("synthetic-test", "20", url, split="train", max_shard_samples=6, progress=False)["train"]
    assert m.changed_shards() == []
    storage.remove(f"{url}/train/train-000002.tar")
    assert m.changed_shards() == ["train-000002.tar"]
    again = write_shards("synthetic-test", "20", url, split="train", max_shard_samples=6, progress=False)["train"]
    assert again.digest() == m.digest() and again.changed_shards() == []
    assert verify(f"{url}/train").ok


def test_cli_against_s3_and_no_credentials_in_output(s3_bucket):
    url = f"s3://{s3_bucket}/cli"
    run = [sys.executable, "-m", "frugalcv.cli"]
    out = subprocess.run(
        [*run, "shard", "digits", "sklearn", url, "--split", "test", "--max-shard-samples", "100", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    if "unknown dataset kind 'digits'" in out.stderr:
        pytest.fail("digits kind missing")
    assert out.returncode == 0, out.stderr
    info = subprocess.run([*run, "shards", "info", f"{url}/test", "--json"], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    assert '"num_samples": 360' in info.stdout
    ver = subprocess.run([*run, "shards", "verify", f"{url}/test"], capture_output=True, text=True, timeout=120)
    assert ver.returncode == 0 and "OK" in ver.stdout
    for text in (out.stdout + out.stderr, info.stdout + info.stderr, ver.stdout + ver.stderr):
        assert "testing-secret-xyz" not in text


def test_unreachable_s3_names_the_url(monkeypatch, s3_endpoint):
    from tests_helpers_port import closed_port_url

    monkeypatch.setenv("AWS_ENDPOINT_URL", closed_port_url())
    monkeypatch.setenv("FRUGALCV_IO_ATTEMPTS", "2")
    import fsspec

    fsspec.filesystem("s3").clear_instance_cache()
    with pytest.raises((FrugalError, OSError)) as exc:
        summary("s3://no-such-bucket/ds/train")
    assert "s3://no-such-bucket/ds/train" in str(exc.value) or "no-such-bucket" in str(exc.value)
    fsspec.filesystem("s3").clear_instance_cache()


def test_pipeline_with_an_s3_root_runs_inline_end_to_end(s3_bucket, tmp_path):
    """The demo pipeline (smoke mode) with an s3:// storage root and the inline executor: shards,
    checkpoints, records, logs and the evaluate stage's report and figures all land on S3."""
    import json

    import s3fs

    root = f"s3://{s3_bucket}/runs-root"
    run = [sys.executable, "-m", "frugalcv.cli"]
    demo = str(Path(__file__).resolve().parents[2] / "pipelines" / "blockdrop-demo.yaml")
    out = subprocess.run([*run, "run", demo, "--smoke", "2", "-o", f"storage.root={root}",
                          "-o", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"],
                         capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    st = subprocess.run([*run, "status", "latest", "--root", root, "--json"], capture_output=True, text=True,
                        timeout=120)
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    stages = {s["stage"]: s for s in status["stages"]}
    assert {s["state"] for s in stages.values()} == {"finished"}, stages
    fs = s3fs.S3FileSystem(endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    folder = f"{s3_bucket}/runs-root/runs/{status['run_id']}"
    checkpoint = stages["pretrain"]["outputs"]["checkpoint"]
    assert checkpoint["uri"].startswith(f"{root}/runs/{status['run_id']}/stages/pretrain/")
    assert fs.exists(checkpoint["uri"].removeprefix("s3://"))
    report = stages["evaluate"]["outputs"]["report"]["uri"]
    assert report.startswith(f"{root}/runs/{status['run_id']}/stages/evaluate/")
    assert b"| DistributeK |" in fs.cat_file(report.removeprefix("s3://"))
    for png in ("accuracy_vs_flops.png", "block_usage.png", "policies_per_class.png"):
        assert fs.size(report.removeprefix("s3://").rsplit("/", 1)[0] + "/" + png) > 0, png
    assert fs.size(f"{folder}/logs/pretrain.log") > 0
    assert not list(tmp_path.glob("frugalcv-runs")), "nothing may be written to a local default root"
    assert "testing-secret-xyz" not in out.stdout + out.stderr + st.stdout
