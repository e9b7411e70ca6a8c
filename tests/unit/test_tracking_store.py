"""Opening the tracking store: the sqlite creation lock, "database is locked" retries, and any store
failure (client creation included) queuing to the outbox instead of reaching the run."""

import logging
import os
import threading
import time

import pytest
import sqlalchemy.exc
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2 as codes

from frugalcv.workflows.pipeline import mlflow_ops, tracking
from frugalcv.workflows.pipeline.lineage import new_run_id, run_url
from frugalcv.workflows.pipeline.mlflow_ops import is_rejected, retry_locked
from frugalcv.workflows.pipeline.mlflow_store import sqlite_path, store_lock
from frugalcv.workflows.pipeline.outbox import Outbox, is_placeholder
from frugalcv.workflows.pipeline.tracking import Tracker, sync_run


def locked_error() -> Exception:
    return MlflowException("(sqlite3.OperationalError) database is locked", error_code=codes.TEMPORARILY_UNAVAILABLE)


def half_migrated_error() -> Exception:
    return sqlalchemy.exc.OperationalError("CREATE TABLE _alembic_tmp_runs", {},
                                           Exception("table _alembic_tmp_runs already exists"))


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory):
    return "sqlite:///" + str(tmp_path_factory.mktemp("mlflow") / "mlflow.db")


def test_sqlite_path_of_tracking_uris(tmp_path):
    assert sqlite_path(f"sqlite:///{tmp_path}/m.db") == f"{tmp_path}/m.db"
    assert sqlite_path(f"sqlite:///{tmp_path}/m.db?timeout=30") == f"{tmp_path}/m.db"
    assert sqlite_path("sqlite:///rel/m.db") == os.path.abspath("rel/m.db")
    assert sqlite_path("sqlite://") is None and sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("http://127.0.0.1:5000") is None and sqlite_path("postgresql://h/db") is None


def test_store_lock_is_exclusive_across_holders_and_bounded(tmp_path):
    uri = f"sqlite:///{tmp_path}/new/folder/m.db"
    released = threading.Event()
    with store_lock(uri):
        assert os.path.exists(f"{tmp_path}/new/folder/m.db.lock")
        with pytest.raises(TimeoutError, match=r"m\.db\.lock is held by another process"), \
                store_lock(uri, timeout_s=0.3):
            pass

        def wait_for_lock():
            with store_lock(uri, timeout_s=10):
                released.set()

        waiter = threading.Thread(target=wait_for_lock)
        waiter.start()
        time.sleep(0.3)
        assert not released.is_set()  # waits while the first holder has it
    waiter.join(10)
    assert released.is_set()


def test_retry_locked_backs_off_then_succeeds_or_gives_up():
    calls = []

    def flaky():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise locked_error()
        return "ok"

    assert retry_locked(flaky, budget_s=10) == "ok" and len(calls) == 3
    start = time.monotonic()
    with pytest.raises(MlflowException, match="database is locked"):
        retry_locked(lambda: (_ for _ in ()).throw(locked_error()), budget_s=0.5)
    assert time.monotonic() - start < 3
    with pytest.raises(KeyError):  # anything else is not retried
        retry_locked(lambda: {}["x"], budget_s=10)


def test_only_refusals_of_the_call_itself_count_as_rejected():
    assert is_rejected(MlflowException("changing param values is not allowed", error_code=codes.INVALID_PARAMETER_VALUE))
    assert is_rejected(FileNotFoundError("report.json"))
    assert not is_rejected(locked_error())
    assert not is_rejected(half_migrated_error())
    assert not is_rejected(MlflowException("boom", error_code=codes.INTERNAL_ERROR))
    assert not is_rejected(TimeoutError("lock held"))


def test_client_creation_failure_queues_everything_to_the_outbox(store_uri, tmp_path, monkeypatch, caplog):
    def broken(uri):
        raise half_migrated_error()

    monkeypatch.setattr(tracking, "open_client", broken)
    caplog.set_level(logging.WARNING, logger="frugalcv.workflows.pipeline.tracking")
    root, run_id = str(tmp_path / "root"), new_run_id()
    t = Tracker(store_uri, root=root, run_id=run_id, experiment="broken-store")  # never raises
    parent = t.start_pipeline("demo", "broken-store", run_id, {"lr": 0.1})
    child = t.start_stage(parent, "pretrain", "a" * 64)
    t.log_metrics({"loss": 1.0}, step=0)
    t.end_stage("finished")
    t.end_pipeline("finished")
    assert is_placeholder(parent) and is_placeholder(child) and t.offline
    [warning] = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
    assert "_alembic_tmp_runs already exists" in warning and f"frugalcv sync {run_id}" in warning

    monkeypatch.undo()
    report = sync_run(run_url(root, run_id), uri=store_uri)
    assert report.sent == len(Outbox(run_url(root, run_id)).records()) and not report.failed
    real = Outbox(run_url(root, run_id)).ids()
    run = MlflowClient(store_uri).get_run(real[child])
    assert run.data.tags["mlflow.parentRunId"] == real[parent] and run.data.metrics == {"loss": 1.0}


def test_a_locked_store_is_retried_live_before_anything_is_queued(store_uri, tmp_path, monkeypatch):
    real_apply = mlflow_ops.apply_record
    failures = {"log_batch": 2}

    def sometimes_locked(client, op, args, ids, experiments=None):
        if failures.get(op):
            failures[op] -= 1
            raise locked_error()
        return real_apply(client, op, args, ids, experiments)

    monkeypatch.setattr(tracking, "apply_record", sometimes_locked)
    root, run_id = str(tmp_path / "root"), new_run_id()
    t = Tracker(store_uri, root=root, run_id=run_id, experiment="locked-store")
    parent = t.start_pipeline("demo", "locked-store", run_id)
    t.log_metrics({"loss": 0.5}, run_id=parent)
    assert not t.offline and failures["log_batch"] == 0
    assert not Outbox(run_url(root, run_id)).records()
    assert MlflowClient(store_uri).get_run(parent).data.metrics == {"loss": 0.5}


def test_a_store_locked_for_too_long_goes_to_the_outbox(store_uri, tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "retry_locked", lambda fn: mlflow_ops.retry_locked(fn, budget_s=0.3))

    def always_locked(client, op, args, ids, experiments=None):
        raise locked_error()

    monkeypatch.setattr(tracking, "apply_record", always_locked)
    root, run_id = str(tmp_path / "root"), new_run_id()
    t = Tracker(store_uri, root=root, run_id=run_id, experiment="locked-store")
    start = time.monotonic()
    parent = t.start_pipeline("demo", "locked-store", run_id)
    t.log_metrics({"loss": 0.5}, run_id=parent)
    assert time.monotonic() - start < 5
    assert is_placeholder(parent) and t.offline
    assert [r["op"] for r in Outbox(run_url(root, run_id)).records()] == ["create_run", "log_batch"]
