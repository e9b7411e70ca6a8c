"""``frugalcv ui [RUN|PIPELINE] [--port N]``: browse runs in the MLflow UI.

For a local tracking store (the default ``sqlite:///<storage.root>/mlflow.db``) it starts
``mlflow server`` on 127.0.0.1 over that store and prints the URL of the run (the latest one
unless a run id is given); Ctrl-C stops it. For a tracking server (``http(s)://``) it only
prints the URL there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from frugalcv.errors import FrugalError

HOST = "127.0.0.1"


class UIError(FrugalError):
    """The UI could not be started."""


def _target(args):
    """(cfg, run id or None) for the RUN or PIPELINE argument."""
    from frugalcv import cli_workflows
    from frugalcv.workflows.pipeline import lineage
    from frugalcv.workflows.pipeline.config import load_pipeline
    from frugalcv.workflows.pipeline.runner import load_run

    target = args.target or "latest"
    if target.endswith((".yaml", ".yml")) or os.path.isfile(target):
        cfg = load_pipeline(target, args.override or [])
        rid = lineage.latest_run(cfg.storage.root)
        return cfg, rid
    rid, cfg, _ = load_run(target, cli_workflows._root(args))
    return cfg, rid


def mlflow_command() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "mlflow")
    if os.path.exists(exe):
        return [exe]
    found = shutil.which("mlflow")
    return [found] if found else [sys.executable, "-m", "mlflow"]


def server_command(tracking_uri: str, port: int, artifacts: str) -> list[str]:
    return [*mlflow_command(), "server", "--host", HOST, "--port", str(port), "--workers", "1",
            "--backend-store-uri", tracking_uri, "--artifacts-destination", artifacts]


#: MLflow 3's UI shows its GenAI views unless the URL (or the user's toggle) asks for model training
UI_QUERY = "?workflowType=machine_learning"


def run_path(cfg, run_id: str | None, tracking_uri: str) -> str:
    """The UI route (``#/experiments/<id>/runs/<parent run>``) of the pipeline run, or of its experiment."""
    from frugalcv.workflows.pipeline.lineage import RunStore
    from frugalcv.workflows.pipeline.mlflow_ops import EXPERIMENT_TAGS
    from frugalcv.workflows.pipeline.mlflow_store import open_client
    from frugalcv.workflows.pipeline.redact import live_tracking_uri

    client = open_client(live_tracking_uri(tracking_uri))
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    if exp is None:
        return "#/experiments" + UI_QUERY
    for key, value in EXPERIMENT_TAGS.items():  # stores made before frugalcv tagged its experiments
        if key not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, key, value)
    parent = RunStore(cfg.storage.root, run_id).read_meta().get("mlflow_parent_run_id") if run_id else None
    if parent and not parent.startswith("offline-"):
        return f"#/experiments/{exp.experiment_id}/runs/{parent}{UI_QUERY}"
    return f"#/experiments/{exp.experiment_id}/runs{UI_QUERY}"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise UIError(f"mlflow server exited with status {proc.returncode} (its output is above)")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise UIError(f"mlflow server on {url} did not answer within {timeout_s:.0f}s")


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def cmd_ui(args) -> int:
    from frugalcv.sharding import storage

    cfg, rid = _target(args)
    uri = cfg.tracking.uri
    if uri.startswith(("http://", "https://")):
        print(f"tracking server {storage.redact(uri)}")
        print(f"{uri.rstrip('/')}/{run_path(cfg, rid, uri)}")
        return 0
    if not uri.startswith("sqlite:"):
        raise UIError(f"tracking.uri {storage.redact(uri)}: `frugalcv ui` serves sqlite stores and links to "
                      "http(s) servers; start `mlflow server --backend-store-uri ...` yourself for others")
    db = uri.removeprefix("sqlite:///")
    if not os.path.exists(db):
        raise UIError(f"no tracking store at {db} yet: run a pipeline first (frugalcv run PIPELINE), "
                      "or pass the run's --root / --pipeline")
    if not _port_free(args.port):
        raise UIError(f"port {args.port} on {HOST} is in use: pass --port N (another `frugalcv ui` may be running)")
    path = run_path(cfg, rid, uri)
    artifacts = os.path.join(cfg.storage.root.removeprefix("file://"), "mlartifacts")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(server_command(uri, args.port, artifacts), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL if not args.verbose else None,
                            stderr=subprocess.DEVNULL if not args.verbose else None)
    url = f"http://{HOST}:{args.port}"
    try:
        _wait_healthy(proc, url, args.timeout)
        print(f"MLflow UI on {url} (store {db}); Ctrl-C stops it", flush=True)
        what = f"run {rid}" if rid else "experiment"
        print(f"{what}: {url}/{path}", flush=True)
        proc.wait()
        return 0 if proc.returncode in (0, -signal.SIGTERM) else 1
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            _stop(proc)


def add_command(sub) -> None:
    u = sub.add_parser("ui", help="browse runs in the MLflow UI (starts it on 127.0.0.1 for a local store)")
    u.add_argument("target", nargs="?", help="run id, 'latest' (default) or a pipeline YAML file")
    u.add_argument("--port", type=int, default=5000, help="default 5000")
    u.add_argument("--root", help="the pipeline's storage.root (default: see frugalcv status --help)")
    u.add_argument("-o", "--override", action="append", metavar="KEY=VALUE", help="override for a pipeline file")
    u.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the server to answer")
    u.set_defaults(fn=cmd_ui)
