"""A real Slurm 22.05 cluster on this host (2 slurmd nodes): submitit jobs across nodes.

Needs root and the Slurm packages (scripts/system-deps.sh installs them); in CI=true a
missing part fails the test instead of skipping it.
"""

import json
import subprocess
import time

import pytest

from frugalcv.slurm import cluster
from frugalcv.slurm.distributed import probe
from frugalcv.slurm.jobs import SlurmJobError, wait_for_results
from frugalcv.slurm.sbatch import make_executor

pytestmark = pytest.mark.integration


def test_cluster_is_up_with_idle_nodes(slurm_cluster):
    assert slurm_cluster["running"]
    assert slurm_cluster["nodes"] == {"n1": "idle", "n2": "idle"}
    out = subprocess.run(["getent", "hosts", "n2"], capture_output=True, text=True).stdout
    assert out.startswith("127.0.0.1"), out


def test_cli_status_and_reuse(slurm_cluster, capsys):
    from frugalcv.cli import main

    root = slurm_cluster["root"]
    deadline = time.monotonic() + 120  # jobs of earlier tests may still be completing (epilog)
    while True:
        assert main(["cluster", "status", "--root", root, "--json"]) == 0
        nodes = json.loads(capsys.readouterr().out)["nodes"]
        if nodes == {"n1": "idle", "n2": "idle"} or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert nodes == {"n1": "idle", "n2": "idle"}
    assert cluster.cluster_up(nodes=2, root=root)["pids"] == slurm_cluster["pids"]  # reused, not restarted
    with pytest.raises(cluster.SlurmClusterError, match="already runs"):
        cluster.cluster_up(nodes=3, root=root)


def test_submitit_gloo_all_reduce_across_two_nodes(slurm_cluster, odd_tmp):
    # a fresh folder per test, with spaces and quotes in its path
    ex = make_executor(
        odd_tmp / "jobs",
        {"nodes": 2, "tasks_per_node": 1, "timeout_min": 30, "job_name": "probe"},
        cluster="slurm",
    )
    t0 = time.monotonic()
    job = ex.submit(probe)
    results = wait_for_results(job, timeout_s=90)
    took = time.monotonic() - t0
    assert [r["rank"] for r in results] == [0, 1]
    assert all(r["world_size"] == 2 and r["sum"] == 3.0 for r in results), results
    assert sorted(r["node"] for r in results) == ["n1", "n2"]  # one rank per node
    assert all(r["job_id"] == job.job_id for r in results)
    assert took < 60, f"submit to result took {took:.1f}s"


def test_a_cancelled_job_is_reported_not_waited_for(slurm_cluster, tmp_path):
    ex = make_executor(tmp_path / "jobs", {"nodes": 1, "timeout_min": 30}, cluster="slurm")
    job = ex.submit(time.sleep, 300)
    subprocess.run(["scancel", job.job_id], check=True)
    with pytest.raises(SlurmJobError, match="CANCELLED|gone from the queue"):
        wait_for_results(job, timeout_s=60)
