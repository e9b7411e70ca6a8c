"""The ten mistakes new users make most, through the real ``frugalcv`` command: each gives one
message that says what is wrong and what to do, and no traceback.

(The out-of-memory case needs a stage that runs out of memory on demand: it is in
``tests/unit/test_stage_out_of_memory.py``.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

pytestmark = pytest.mark.integration


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def frugalcv(*argv: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLURM_"))}
    return subprocess.run([sys.executable, "-m", "frugalcv.cli", *argv], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env={**base, "OMP_NUM_THREADS": "1", **(env or {})})


def one_error(out: subprocess.CompletedProcess) -> str:
    """The single ``error:`` line of a failed command (and no traceback)."""
    assert out.returncode != 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr
    return errors[0]


@pytest.fixture
def tiny(tmp_path) -> Path:
    """A folder with a one-image imagefolder dataset and a one-stage pipeline that shards it."""
    (tmp_path / "img" / "train" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "train" / "cat" / "a.png")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({
        "name": "tiny", "stages": [{"name": "data", "uses": "shard",
                                    "params": {"kind": "imagefolder", "src": "img", "split": "train"}}]}))
    return tmp_path


def test_an_unknown_pipeline_key_names_file_line_and_the_key_meant(tiny):
    (tiny / "typo.yaml").write_text("name: typo\nstages:\n  - name: data\n    uses: shard\n"
                                    "    parms: {kind: digits, src: sklearn}\n")
    message = one_error(frugalcv("run", "typo.yaml", "--dry-run", cwd=tiny))
    assert "typo.yaml, line 5" in message and "parms" in message and "did you mean 'params'" in message


def test_a_wrong_dataset_layout_names_the_file_the_converter_expected(tiny):
    message = one_error(frugalcv("shard", "cifar10", "img", "out", cwd=tiny))
    assert "cifar10" in message and "batches.meta" in message and "does not exist" in message


def test_shards_without_a_manifest_say_so_and_how_to_make_one(tiny):
    assert frugalcv("shard", "imagefolder", "img", "shards", "--split", "train", cwd=tiny).returncode == 0
    (tiny / "shards" / "train" / "manifest.json").unlink()
    message = one_error(frugalcv("shards", "info", "shards/train", cwd=tiny))
    assert "shards/train" in message and "manifest" in message


def test_an_unreachable_s3_endpoint_is_retried_then_named(tiny):
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "s", "FRUGALCV_IO_ATTEMPTS": "2", "FRUGALCV_IO_BACKOFF_S": "0.05",
           "AWS_MAX_ATTEMPTS": "1"}
    message = one_error(frugalcv("shards", "info", "s3://bucket/data/train", cwd=tiny, env=env))
    assert "s3://bucket/data/train" in message and "giving up after 2 attempts" in message


def test_missing_credentials_say_where_to_set_them(tiny):
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}", "AWS_SHARED_CREDENTIALS_FILE": str(tiny / "none"),
           "AWS_CONFIG_FILE": str(tiny / "none"), "AWS_EC2_METADATA_DISABLED": "true", "FRUGALCV_IO_ATTEMPTS": "1"}
    message = one_error(frugalcv("shards", "info", "s3://bucket/data/train", cwd=tiny, env=env))
    assert "s3://bucket/data" in message and "no usable credentials" in message
    assert "AWS_ACCESS_KEY_ID" in message and "storage.options" in message


def test_mlflow_down_does_not_stop_the_run_and_says_how_to_send_the_records_later(tiny):
    out = frugalcv("run", "tiny.yaml", "-o", f"tracking.uri=http://127.0.0.1:{closed_port()}", cwd=tiny)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    warning = next(line for line in out.stderr.splitlines() if "is unreachable" in line)
    assert "connection refused" in warning and "training goes on" in warning and "frugalcv sync" in warning
    assert any(line.startswith("run ") and ": finished" in line for line in out.stdout.splitlines()), out.stdout


def test_the_slurm_executor_without_slurm_says_what_to_do(tiny):
    bin_dir = tiny / "bin"  # a PATH with python but no sbatch
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    message = one_error(frugalcv("run", "tiny.yaml", "--executor", "slurm", cwd=tiny, env={"PATH": str(bin_dir)}))
    assert "sbatch" in message and "frugalcv cluster up" in message and "--executor inline" in message


def test_an_unknown_partition_names_it(tiny, slurm_cluster):
    env = {"SLURM_CONF": os.environ["SLURM_CONF"]}
    out = frugalcv("run", "tiny.yaml", "--executor", "slurm", "-o", "executor.slurm.partition=nosuchpart",
                   cwd=tiny, env=env)
    message = one_error(out)
    assert "nosuchpart" in message and "partition" in message.lower() and "data" in message


def test_resuming_a_run_that_does_not_exist_lists_the_runs_there(tiny):
    assert frugalcv("run", "tiny.yaml", "--no-track", cwd=tiny).returncode == 0
    message = one_error(frugalcv("resume", "20990101-000000-abcd", cwd=tiny))
    assert "20990101-000000-abcd" in message and "runs there:" in message

