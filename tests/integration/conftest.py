"""Real parts for integration tests: an S3 endpoint (moto's server) on 127.0.0.1, a local Slurm cluster."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from realparts import skip_or_fail

from frugalcv.slurm import cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """moto_server on a free loopback port; yields the endpoint URL and sets AWS_* for the session."""
    exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not os.path.exists(exe):
        skip_or_fail("moto_server not installed (pip install 'moto[server]')")
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    try:
        wait_http(url, 30, proc)
        os.environ.update(
            AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing-secret-xyz", AWS_DEFAULT_REGION="us-east-1"
        )
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_endpoint):
    import uuid

    import boto3

    name = f"frugal-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    import fsspec

    fsspec.filesystem("s3").invalidate_cache()
    return name


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A 2-node cluster for the session; sets SLURM_CONF so that submitit's sbatch/squeue find it."""
    try:
        cluster.preflight()
    except cluster.SlurmClusterError as e:
        skip_or_fail(str(e))
    root = tmp_path_factory.mktemp("slurm")
    hosts_before = cluster.HOSTS.read_text()
    saved = os.environ.get("SLURM_CONF")
    status = cluster.cluster_up(nodes=2, root=root)
    os.environ.update(cluster.cluster_env(root))
    try:
        yield status
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        cluster.cluster_down(root)
        assert not cluster.cluster_status(root)["running"]
        assert cluster.HOSTS.read_text() == hosts_before
