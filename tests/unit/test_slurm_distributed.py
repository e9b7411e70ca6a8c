"""init_distributed alone, under torchrun-style env vars, and inside a (simulated) Slurm step."""

import multiprocessing as mp
import os
import socket

import pytest
import torch
import torch.distributed as dist

from frugalcv.slurm.distributed import DistInfo, cleanup, init_distributed, probe

DIST_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SUBMITIT_EXECUTOR",
)


@pytest.fixture
def clean_env(monkeypatch):
    for k in list(os.environ):
        if k in DIST_VARS or k.startswith("SLURM_"):
            monkeypatch.delenv(k)
    yield monkeypatch
    cleanup()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_alone_is_a_world_of_one(clean_env):
    info = init_distributed(backend="gloo")
    assert info == DistInfo(0, 1, 0, torch.device("cpu"))
    t = torch.tensor([5.0])
    dist.all_reduce(t)
    assert t.item() == 5.0
    assert init_distributed(backend="gloo") == info  # idempotent
    cleanup()
    assert not dist.is_initialized()
    cleanup()  # no-op


def _child(env, queue):
    os.environ.update(env)
    try:
        queue.put(probe())
    except BaseException as e:  # report instead of hanging the parent
        queue.put(repr(e))


def _run_ranks(envs):
    ctx = mp.get_context("fork")  # no re-import of torch: fast
    queue = ctx.Queue()
    # daemons: a rank that hangs is killed at exit instead of holding the test process for ever
    procs = [ctx.Process(target=_child, args=(env, queue), daemon=True) for env in envs]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    return sorted(results, key=lambda r: r["rank"] if isinstance(r, dict) else -1)


def test_torchrun_env(clean_env):
    port = str(_free_port())
    envs = [
        dict(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        for r in range(2)
    ]
    res = _run_ranks(envs)
    assert [r["sum"] for r in res] == [3.0, 3.0], res
    assert [r["rank"] for r in res] == [0, 1]


def test_slurm_step_env_goes_through_submitit(clean_env):
    # what srun sets for 2 tasks on one node; submitit derives MASTER_PORT from the job id
    job_id = "4242"
    envs = [
        dict(
            SLURM_JOB_ID=job_id,
            SLURM_STEP_ID="0",
            SLURM_PROCID=str(r),
            SLURM_LOCALID=str(r),
            SLURM_NTASKS="2",
            SLURM_JOB_NUM_NODES="1",
            SLURM_NODEID="0",
            SLURM_JOB_NODELIST="localhost",
            SLURMD_NODENAME="n1",
        )
        for r in range(2)
    ]
    res = _run_ranks(envs)
    assert [r["sum"] for r in res] == [3.0, 3.0], res
    assert [(r["rank"], r["world_size"], r["local_rank"], r["node"]) for r in res] == [
        (0, 2, 0, "n1"),
        (1, 2, 1, "n1"),
    ]


def test_batch_script_without_srun_stays_alone(clean_env):
    # SLURM_JOB_ID without SLURM_STEP_ID: the batch shell itself, one process whatever SLURM_NTASKS says
    clean_env.setenv("SLURM_JOB_ID", "1")
    clean_env.setenv("SLURM_NTASKS", "4")
    assert init_distributed(backend="gloo").world_size == 1
