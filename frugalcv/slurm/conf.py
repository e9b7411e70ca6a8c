"""slurm.conf and /etc/hosts text for the single-host dev cluster (pure functions, no I/O)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from frugalcv.errors import ConfigError

# Job ids restart at FirstJobId when the state folder is wiped; deriving it from the clock keeps
# ids unique across restarts, so a reused submitit folder never returns an old job's result.
_JOB_ID_EPOCH = 1_735_689_600  # 2025-01-01 UTC
_JOB_ID_SPAN = 60_000_000  # below Slurm's MaxJobId default (67,043,328)
_UNSAFE_PATH = re.compile(r"[\s#'\"\\=]")


def first_job_id(now: float | None = None) -> int:
    """A job id that grows with the clock (one per second), wrapping below MaxJobId."""
    now = time.time() if now is None else now
    return 1000 + (int(now) - _JOB_ID_EPOCH) % _JOB_ID_SPAN


@dataclass(frozen=True)
class ClusterSpec:
    """Everything slurm.conf depends on; ``node_ports`` has one port per node n1..nN."""

    root: Path
    ctld_port: int
    node_ports: tuple[int, ...]
    cpus: int
    real_memory_mb: int
    auth: str = "none"
    first_job_id: int = field(default_factory=first_job_id)
    partition: str = "debug"

    @property
    def node_names(self) -> list[str]:
        return [f"n{i + 1}" for i in range(len(self.node_ports))]

    def check(self) -> None:
        if not self.node_ports:
            raise ConfigError("nodes must be >= 1")
        if self.auth not in ("none", "munge"):
            raise ConfigError(f"auth={self.auth!r}: allowed are 'none', 'munge'")
        if _UNSAFE_PATH.search(str(self.root)):
            # slurm.conf has no quoting: a path with a space, quote, '#' or '=' is cut or misread.
            raise ConfigError(
                f"Slurm state folder {str(self.root)!r} contains a space, quote, '#', '=' or backslash, "
                "which slurm.conf cannot express; choose another folder (--root or $FRUGALCV_SLURM_HOME)"
            )
        if not 1 <= self.first_job_id < 67_000_000:
            raise ConfigError(f"first_job_id={self.first_job_id} outside 1..66999999")


def render_conf(spec: ClusterSpec) -> str:
    """slurm.conf for N slurmd daemons (MULTIPLE_SLURMD) on 127.0.0.1, all state under ``spec.root``."""
    spec.check()
    r = spec.root
    auth = "auth/munge" if spec.auth == "munge" else "auth/none"
    cred = "cred/munge" if spec.auth == "munge" else "cred/none"
    lines = [
        "# Written by frugalcv (frugalcv/slurm/cluster.py): a dev cluster on this host.",
        "ClusterName=frugalcv",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={spec.ctld_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"AuthType={auth}",
        f"CredType={cred}",
        # a requeued job may restart once its launch credential expires: 5 s (the minimum), not 120 s
        "AuthInfo=cred_expire=5",
        f"StateSaveLocation={r}/state",
        f"SlurmdSpoolDir={r}/spool/%n",
        f"SlurmctldPidFile={r}/run/slurmctld.pid",
        f"SlurmdPidFile={r}/run/slurmd-%n.pid",
        f"SlurmctldLogFile={r}/log/slurmctld.log",
        f"SlurmdLogFile={r}/log/slurmd-%n.log",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        # no cgroups in containers: track processes through /proc, bind nothing
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "SwitchType=switch/none",
        "MpiDefault=none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        # every slurmd sees the whole host; trust the numbers below instead of checking them
        "SlurmdParameters=config_overrides",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1",
        "KillWait=5",
        "ReturnToService=2",
        "InactiveLimit=0",
        "MinJobAge=300",
        "MailProg=/bin/true",
        f"FirstJobId={spec.first_job_id}",
    ]
    for name, port in zip(spec.node_names, spec.node_ports, strict=True):
        lines.append(
            f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} "
            f"CPUs={spec.cpus} RealMemory={spec.real_memory_mb} State=UNKNOWN"
        )
    lines.append(f"PartitionName={spec.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def _markers(tag: str) -> tuple[str, str]:
    return f"# frugalcv-slurm begin {tag}", f"# frugalcv-slurm end {tag}"


def hosts_with_nodes(text: str, nodes: list[str], tag: str) -> str:
    """/etc/hosts text with a marked block mapping ``nodes`` to 127.0.0.1 (replacing an old block)."""
    begin, end = _markers(tag)
    body = hosts_without_nodes(text, tag)
    if body and not body.endswith("\n"):
        body += "\n"
    return body + f"{begin}\n127.0.0.1 {' '.join(nodes)}\n{end}\n"


def hosts_without_nodes(text: str, tag: str) -> str:
    """/etc/hosts text with the block written by :func:`hosts_with_nodes` removed."""
    begin, end = _markers(tag)
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip("\n")
        if stripped == begin:
            inside = True
        elif stripped == end and inside:
            inside = False
        elif not inside:
            out.append(line)
    return "".join(out)
