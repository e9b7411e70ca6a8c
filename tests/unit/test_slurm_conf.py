"""slurm.conf and /etc/hosts text for the dev cluster (no Slurm needed)."""

from pathlib import Path

import pytest

from frugalcv.errors import ConfigError
from frugalcv.slurm.cluster import cluster_env, cluster_status, conf_path, default_root
from frugalcv.slurm.conf import ClusterSpec, first_job_id, hosts_with_nodes, hosts_without_nodes, render_conf


def spec(root="/var/tmp/fslurm", nodes=2, **kw):
    return ClusterSpec(
        root=Path(root),
        ctld_port=6817,
        node_ports=tuple(17001 + i for i in range(nodes)),
        cpus=4,
        real_memory_mb=2048,
        first_job_id=1234,
        **kw,
    )


def conf_dict(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and not line.startswith(("NodeName=", "PartitionName=")):
            k, v = line.split("=", 1)
            assert k not in out, f"{k} set twice"
            out[k] = v
    return out


def test_conf_has_the_settings_a_container_cluster_needs():
    c = conf_dict(render_conf(spec()))
    assert c["ProctrackType"] == "proctrack/linuxproc"
    assert c["TaskPlugin"] == "task/none"
    assert c["SelectType"] == "select/cons_tres" and c["SelectTypeParameters"] == "CR_Core"
    assert c["SlurmdParameters"] == "config_overrides"
    assert c["SchedulerParameters"] == "batch_sched_delay=0,sched_interval=2,bf_interval=1"
    assert c["KillWait"] == "5" and c["ReturnToService"] == "2" and c["MailProg"] == "/bin/true"
    assert c["SlurmUser"] == "root"
    assert c["AuthType"] == "auth/none" and c["CredType"] == "cred/none"
    assert c["AuthInfo"] == "cred_expire=5"
    assert c["FirstJobId"] == "1234"
    assert c["SlurmctldPort"] == "6817"


def test_conf_keeps_every_path_in_the_private_folder():
    c = conf_dict(render_conf(spec("/var/tmp/fslurm")))
    for key in (
        "StateSaveLocation",
        "SlurmdSpoolDir",
        "SlurmctldPidFile",
        "SlurmdPidFile",
        "SlurmctldLogFile",
        "SlurmdLogFile",
    ):
        assert c[key].startswith("/var/tmp/fslurm/"), key
    # one spool, pid and log file per slurmd (MULTIPLE_SLURMD)
    assert "%n" in c["SlurmdSpoolDir"] and "%n" in c["SlurmdPidFile"] and "%n" in c["SlurmdLogFile"]


def test_conf_nodes_and_default_partition():
    text = render_conf(spec(nodes=3))
    nodes = [line for line in text.splitlines() if line.startswith("NodeName=")]
    assert nodes == [
        f"NodeName=n{i} NodeHostname=localhost NodeAddr=127.0.0.1 Port={17000 + i} CPUs=4 RealMemory=2048 State=UNKNOWN"
        for i in (1, 2, 3)
    ]
    assert "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP" in text


def test_munge_auth():
    c = conf_dict(render_conf(spec(auth="munge")))
    assert c["AuthType"] == "auth/munge" and c["CredType"] == "cred/munge"
    with pytest.raises(ConfigError, match="allowed are 'none', 'munge'"):
        render_conf(spec(auth="kerberos"))


@pytest.mark.parametrize("root", ["/tmp/with space", "/tmp/it's", "/tmp/a#b", "/tmp/new\nline", '/tmp/"q"'])
def test_conf_refuses_roots_slurm_conf_cannot_express(root):
    with pytest.raises(ConfigError, match="slurm.conf cannot express"):
        render_conf(spec(root))


def test_first_job_id_grows_with_the_clock_and_stays_below_max_job_id():
    a, b = first_job_id(1_764_100_000), first_job_id(1_764_100_060)
    assert b - a == 60
    assert all(
        1000 <= first_job_id(t) < 67_000_000
        for t in (1_735_689_600, 1_800_000_000, 2_000_000_000, 4_000_000_000)
    )


@pytest.mark.parametrize("original", ["127.0.0.1 localhost\n", "127.0.0.1 localhost\n127.0.0.1 vm", ""])
def test_hosts_block_is_added_once_and_removed(original):
    once = hosts_with_nodes(original, ["n1", "n2"], "/r")
    twice = hosts_with_nodes(once, ["n1", "n2"], "/r")
    assert once == twice
    assert "127.0.0.1 n1 n2\n" in once
    assert original.rstrip("\n") in once
    back = hosts_without_nodes(once, "/r")
    assert back.rstrip("\n") == original.rstrip("\n")


def test_hosts_blocks_of_two_clusters_are_independent():
    text = hosts_with_nodes(hosts_with_nodes("127.0.0.1 localhost\n", ["n1"], "/a"), ["n1", "n2"], "/b")
    assert hosts_without_nodes(text, "/b") == hosts_with_nodes("127.0.0.1 localhost\n", ["n1"], "/a")


def test_env_and_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("FRUGALCV_SLURM_HOME", str(tmp_path))
    assert default_root() == tmp_path
    assert cluster_env() == {"SLURM_CONF": str(tmp_path / "slurm.conf")}
    assert conf_path(tmp_path / "x") == tmp_path / "x" / "slurm.conf"
    st = cluster_status()
    assert st["running"] is False and st["nodes"] == {} and st["jobs"] == []


def test_preflight_says_what_is_missing(monkeypatch):
    from frugalcv.slurm import cluster

    monkeypatch.setattr(cluster.os, "geteuid", lambda: 1000)
    with pytest.raises(cluster.SlurmClusterError, match="needs root"):
        cluster.preflight()
    monkeypatch.setattr(cluster.os, "geteuid", lambda: 0)
    monkeypatch.setattr(
        cluster, "_which", lambda name: None if name in ("slurmd", "sbatch") else f"/usr/bin/{name}"
    )
    with pytest.raises(
        cluster.SlurmClusterError,
        match=r"missing slurmd, sbatch.*apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge",
    ):
        cluster.preflight()


def test_cli_status_when_nothing_runs(tmp_path, capsys):
    from frugalcv.cli import main

    assert main(["cluster", "status", "--root", str(tmp_path)]) == 1
    assert "no Slurm cluster running" in capsys.readouterr().out
