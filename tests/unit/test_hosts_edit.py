"""The dev cluster's /etc/hosts edits: clusters started and stopped at once never lose a line."""

import multiprocessing as mp

from frugalcv.slurm import cluster
from frugalcv.slurm.conf import hosts_with_nodes, hosts_without_nodes

ORIGINAL = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def _cycle(tag: str, times: int) -> None:
    for _ in range(times):
        cluster._edit_hosts(lambda text: hosts_with_nodes(text, ["n1", "n2"], tag))
        cluster._edit_hosts(lambda text: hosts_without_nodes(text, tag))


def test_concurrent_clusters_keep_every_line_of_the_hosts_file(tmp_path, monkeypatch):
    hosts = tmp_path / "hosts"
    hosts.write_text(ORIGINAL)
    monkeypatch.setattr(cluster, "HOSTS", hosts)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_cycle, args=(f"/tmp/cluster{i}", 40), daemon=True) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert hosts.read_text() == ORIGINAL


def test_an_edit_returns_the_old_and_new_text_and_leaves_an_unchanged_file_alone(tmp_path, monkeypatch):
    hosts = tmp_path / "hosts"
    hosts.write_text(ORIGINAL)
    monkeypatch.setattr(cluster, "HOSTS", hosts)
    old, new = cluster._edit_hosts(lambda text: hosts_with_nodes(text, ["n1"], "/r"))
    assert old == ORIGINAL and new == hosts.read_text() and "127.0.0.1 n1" in new and new.startswith(ORIGINAL)
    before = hosts.stat().st_mtime_ns
    assert cluster._edit_hosts(lambda text: text) == (new, new) and hosts.stat().st_mtime_ns == before
