"""A real ``mlflow server`` on 127.0.0.1 for integration tests (sqlite backend, local artifacts)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from realparts import skip_or_fail


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_executable() -> str | None:
    exe = Path(sys.executable).parent / "mlflow"
    return str(exe) if exe.exists() else shutil.which("mlflow")


@contextlib.contextmanager
def mlflow_server(folder: Path, timeout_s: float = 180.0) -> Iterator[str]:
    """Start ``mlflow server`` storing under ``folder``; yields its http URL; stops it after."""
    exe = mlflow_executable()
    if exe is None:
        skip_or_fail("the `mlflow` executable is missing (pip install mlflow, the full package with the server)")
    port = _free_port()
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
           "--artifacts-destination", str(folder / "artifacts")]
    log_path = folder / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.time() > deadline:
                raise TimeoutError(f"mlflow server on {url} not healthy in {timeout_s}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        # the server runs gunicorn/uvicorn workers: stop its whole process group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait(10)
