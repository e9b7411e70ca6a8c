"""A real Slurm cluster on this host: one slurmctld and N slurmd "nodes" n1..nN on 127.0.0.1.

For trying the Slurm executor and for the integration tests; needs root and Debian's Slurm
22.05 packages. Every file (conf, state, spool, logs, pids) lives in one private folder.
Clients find the cluster through ``SLURM_CONF`` (see :func:`cluster_env`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from frugalcv.errors import FrugalError
from frugalcv.slurm.conf import ClusterSpec, hosts_with_nodes, hosts_without_nodes, render_conf

log = logging.getLogger(__name__)

APT_INSTALL = "apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge"
HOSTS = Path("/etc/hosts")
_DAEMONS = ("slurmctld", "slurmd")
_CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "sinfo", "scancel")
_STATE_FILE = "cluster.json"
# Popen handles of daemons this process started, so that it reaps them (PID 1 here does not).
_children: dict[int, subprocess.Popen] = {}


class SlurmClusterError(FrugalError):
    """The dev cluster cannot start, is not running, or did not stop cleanly."""


def default_root() -> Path:
    return Path(os.environ.get("FRUGALCV_SLURM_HOME") or Path.home() / ".cache" / "frugalcv" / "slurm")


def _root(root: str | os.PathLike | None) -> Path:
    return Path(root).expanduser().absolute() if root is not None else default_root().absolute()


def conf_path(root: str | os.PathLike | None = None) -> Path:
    return _root(root) / "slurm.conf"


def cluster_env(root: str | os.PathLike | None = None) -> dict[str, str]:
    """Environment variables that point Slurm clients (sbatch, squeue, submitit) at the cluster."""
    return {"SLURM_CONF": str(conf_path(root))}


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")


def preflight(auth: str = "none") -> None:
    """Raise :class:`SlurmClusterError` saying what is missing (root, packages) to run a cluster."""
    if os.geteuid() != 0:
        raise SlurmClusterError("the dev Slurm cluster needs root (slurmd runs jobs as their user)")
    missing = [n for n in (*_DAEMONS, *_CLIENTS) if _which(n) is None]
    if auth == "munge" and _which("munged") is None:
        missing.append("munged")
    if missing:
        raise SlurmClusterError(
            f"Slurm is not installed (missing {', '.join(missing)}); install it with: {APT_INSTALL}"
        )


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _mem_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return max(1, int(line.split()[1]) // 1024 - 512)
    except OSError:
        pass
    return 1024


def _alive(pid: int, name: str) -> bool:
    """True if ``pid`` runs ``name`` and is not a zombie (a zombie still answers kill(pid, 0))."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    comm, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
    return state not in "ZX" and comm.startswith(name[:15])


def _run(args: list[str], root: Path, timeout: float = 15, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, **cluster_env(root)}
    try:
        p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise SlurmClusterError(f"{' '.join(args)} did not answer within {timeout}s") from e
    if check and p.returncode != 0:
        raise SlurmClusterError(f"{' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def _read_state(root: Path) -> dict | None:
    try:
        return json.loads((root / _STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _save_state(root: Path, state: dict) -> None:
    (root / _STATE_FILE).write_text(json.dumps(state, indent=1))


def _running(state: dict | None) -> bool:
    return bool(state) and _alive(state.get("pids", {}).get("slurmctld", 0), "slurmctld")


def _start(args: list[str], logfile: Path) -> int:
    # -D keeps each daemon a child of ours: we can reap it if we also stop it.
    with open(logfile, "ab") as out:
        p = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    _children[p.pid] = p
    return p.pid


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _node_states(root: Path) -> dict[str, str]:
    p = _run(["sinfo", "-h", "-N", "-o", "%N %T"], root, check=False)
    if p.returncode != 0:
        return {}
    return dict(line.split(None, 1) for line in p.stdout.splitlines() if line.strip())


def _edit_hosts(change: Callable[[str], str]) -> tuple[str, str]:
    """Rewrite /etc/hosts as ``change(text)``; returns (old, new) text.

    Under an exclusive lock on the file, so clusters started or stopped at the same time never
    read a half-written file (and lose lines such as ``localhost``); in place, not by rename
    (/etc/hosts is often a bind mount in containers), overwriting before truncating, so the
    file is never empty."""
    with open(HOSTS, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            old = f.read()
            new = change(old)
            if new != old:
                f.seek(0)
                f.write(new)
                f.truncate()
                f.flush()
                os.fsync(f.fileno())
            return old, new
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cluster_up(
    nodes: int = 2, root: str | os.PathLike | None = None, auth: str = "none", timeout: float = 60
) -> dict:
    """Start slurmctld and ``nodes`` slurmd daemons and wait until every node is idle.

    Returns :func:`cluster_status`. A cluster already running in ``root`` with as many nodes is
    reused; one with another node count is an error (``cluster down`` first).
    """
    root = _root(root)
    preflight(auth)
    state = _read_state(root)
    if _running(state):
        if len(state["nodes"]) != nodes:
            raise SlurmClusterError(
                f"a cluster with {len(state['nodes'])} nodes already runs in {root}; run `frugalcv cluster down` first"
            )
        return cluster_status(root)
    if state:
        cluster_down(root)  # leftovers of a crashed cluster: stray daemons, hosts block
    if nodes < 1:
        raise SlurmClusterError(f"nodes={nodes}: at least 1")
    ports = _free_ports(nodes + 1)
    spec = ClusterSpec(
        root=root,
        ctld_port=ports[0],
        node_ports=tuple(ports[1:]),
        cpus=os.cpu_count() or 1,
        real_memory_mb=_mem_mb(),
        auth=auth,
    )
    spec.check()
    shutil.rmtree(root / "state", ignore_errors=True)  # fresh queue; FirstJobId keeps ids unique
    for sub in ("state", "run", "log", *(f"spool/{n}" for n in spec.node_names)):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = conf_path(root)
    conf.write_text(render_conf(spec))

    original_hosts, new_hosts = _edit_hosts(lambda text: hosts_with_nodes(text, spec.node_names, str(root)))
    (root / "hosts.orig").write_text(original_hosts)
    state = {
        "root": str(root),
        "nodes": spec.node_names,
        "conf": str(conf),
        "hosts_written": new_hosts,
        "pids": {},
    }
    _save_state(root, state)  # from here on, cluster_down can undo whatever was done
    try:
        munged = _start_munge() if auth == "munge" else None
        if munged is not None:
            state["pids"]["munged"] = munged
        state["pids"]["slurmctld"] = _start(
            [_which("slurmctld"), "-D", "-i", "-f", str(conf)], root / "log" / "slurmctld.out"
        )
        _save_state(root, state)
        _wait(
            lambda: _run(["scontrol", "ping"], root, check=False).returncode == 0,
            20,
            "slurmctld to answer",
            root,
        )
        for name in spec.node_names:
            state["pids"][name] = _start(
                [_which("slurmd"), "-D", "-f", str(conf), "-N", name], root / "log" / f"slurmd-{name}.out"
            )
            _save_state(root, state)
        _wait(lambda: _all_idle(root, spec.node_names), timeout, "all nodes to be idle", root)
    except BaseException:
        cluster_down(root)
        raise
    log.info("Slurm cluster up: %d nodes, SLURM_CONF=%s", nodes, conf)
    return cluster_status(root)


def _all_idle(root: Path, names: list[str]) -> bool:
    states = _node_states(root)
    return all(states.get(n, "").rstrip("*") == "idle" for n in names)


def _wait(cond, timeout: float, what: str, root: Path) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        if cond():
            return
        state = _read_state(root) or {}
        dead = [
            n
            for n, pid in state.get("pids", {}).items()
            if not _alive(pid, "munged" if n == "munged" else "slurm")
        ]
        if dead:
            logs = "\n".join(f"--- {p.name}\n{_tail(p)}" for p in sorted((root / "log").glob("*")))
            raise SlurmClusterError(f"waiting for {what}: {', '.join(dead)} exited\n{logs}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    logs = "\n".join(f"--- {p.name}\n{_tail(p)}" for p in sorted((root / "log").glob("*")))
    raise SlurmClusterError(f"timed out after {timeout}s waiting for {what}\n{logs}")


def _start_munge() -> int | None:
    """Start munged as user munge; None when one already runs (it is not ours to stop)."""
    pid_file = Path("/run/munge/munged.pid")
    if pid_file.exists() and _alive(int(pid_file.read_text().split()[0]), "munged"):
        return None
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        raise SlurmClusterError(f"{key} is missing; reinstall munge ({APT_INSTALL})")
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.chown(pid_file.parent, "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", _which("munged"), "--force"], check=True, timeout=15)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if pid_file.exists() and pid_file.read_text().strip():
            return int(pid_file.read_text().split()[0])
        time.sleep(0.05)
    raise SlurmClusterError(f"munged did not start (no {pid_file})")


def _stop(pid: int, name: str, timeout: float) -> None:
    if not _alive(pid, name):
        _reap(pid)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not _alive(pid, name):
            return
        time.sleep(0.05)
    log.warning("%s (pid %d) ignored SIGTERM for %.0fs; killing it", name, pid, timeout)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.1)
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect the exit status of a daemon this process started (others may linger as zombies)."""
    p = _children.get(pid)
    if p is not None and p.poll() is not None:
        del _children[pid]


def cluster_down(root: str | os.PathLike | None = None, timeout: float = 30) -> None:
    """Cancel every job, wait for the queue to empty, stop slurmd then slurmctld, restore /etc/hosts."""
    root = _root(root)
    state = _read_state(root)
    if state is None:
        return
    pids: dict[str, int] = state.get("pids", {})
    if _running(state):
        ids = _run(["squeue", "-h", "-o", "%i"], root, check=False).stdout.split()
        if ids:
            _run(["scancel", *ids], root, check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            q = _run(["squeue", "-h", "-o", "%i"], root, check=False)
            if q.returncode != 0 or not q.stdout.strip():
                break
            time.sleep(0.3)
        else:
            log.warning("jobs still in the queue after %.0fs; stopping the daemons anyway", timeout)
    # slurmd before slurmctld: the other way round leaves slurmstepd retrying and slurmd deaf to SIGTERM
    for name in state.get("nodes", []):
        if name in pids:
            _stop(pids[name], "slurmd", 15)
    if "slurmctld" in pids:
        _stop(pids["slurmctld"], "slurmctld", 15)
    if "munged" in pids:
        _stop(pids["munged"], "munged", 5)
    _restore_hosts(root, state)
    (root / _STATE_FILE).unlink(missing_ok=True)
    log.info("Slurm cluster in %s stopped", root)


def _restore_hosts(root: Path, state: dict) -> None:
    orig = root / "hosts.orig"

    def restored(current: str) -> str:
        if orig.exists() and current == state.get("hosts_written"):
            return orig.read_text()  # untouched since we wrote it: restore byte for byte
        return hosts_without_nodes(current, str(root))

    _edit_hosts(restored)
    orig.unlink(missing_ok=True)


def cluster_status(root: str | os.PathLike | None = None) -> dict:
    """Whether the cluster in ``root`` runs, its nodes and their states, queued jobs, conf path."""
    root = _root(root)
    state = _read_state(root)
    out = {
        "root": str(root),
        "running": _running(state),
        "conf": str(conf_path(root)),
        "env": cluster_env(root),
    }
    if not out["running"]:
        return {**out, "nodes": {}, "jobs": []}
    q = _run(["squeue", "-h", "-o", "%i %T %D %N %j"], root, check=False)
    jobs = []
    for line in q.stdout.splitlines():
        parts = line.split(None, 4)
        if len(parts) >= 4:
            jobs.append(dict(zip(("id", "state", "nodes", "nodelist", "name"), parts, strict=False)))
    return {**out, "nodes": _node_states(root), "jobs": jobs, "pids": state["pids"]}
