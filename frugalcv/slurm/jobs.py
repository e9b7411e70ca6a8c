"""Waiting for submitit jobs on clusters without accounting (no sacct), such as the dev cluster.

Without slurmdbd, submitit reads every job's state as UNKNOWN: a job that died without writing
its result (cancelled, node failure, OOM kill) would be waited for forever. Here the state comes
from ``squeue --states=all``, which slurmctld answers for MinJobAge seconds after the end.
"""

from __future__ import annotations

import subprocess
import time

from frugalcv.errors import FrugalError

FINAL_FAILED = {
    "BOOT_FAIL",
    "CANCELLED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
}


class SlurmJobError(FrugalError):
    """A Slurm job ended without results, or did not end in time."""


def squeue_state(job_id: str) -> str | None:
    """The job's state (RUNNING, COMPLETED, ...), or None once slurmctld no longer knows it."""
    p = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    states = p.stdout.split() if p.returncode == 0 else []
    return states[0] if states else None


def wait_for_results(job, timeout_s: float | None = None, poll_s: float = 0.5, grace_s: float = 10) -> list:
    """``job.results()`` once every task wrote its result; raise if the job ends without them.

    ``grace_s``: how long to wait for the result files after Slurm says the job ended (shared
    file systems may show them late).
    """
    pickles = [job.task(i).paths.result_pickle for i in range(job.num_tasks)]
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    ended_at = None
    while not all(p.exists() for p in pickles):
        now = time.monotonic()
        if deadline is not None and now > deadline:
            raise SlurmJobError(
                f"job {job.job_id} gave no results within {timeout_s}s (state {squeue_state(job.job_id)}); see {job.paths.folder}"
            )
        state = squeue_state(job.job_id)
        if state is None or state in FINAL_FAILED or state == "COMPLETED":
            ended_at = ended_at or now
            if now - ended_at > grace_s or state in FINAL_FAILED:
                err = job.stderr() or ""
                tail = "\n".join(err.splitlines()[-20:])
                raise SlurmJobError(
                    f"job {job.job_id} ended ({state or 'gone from the queue'}) without results\n{tail}"
                )
        time.sleep(poll_s)
    return job.results()
