"""The process helpers themselves: start, answer, stop, kill, etcdctl, a 3-member cluster."""

from __future__ import annotations

import signal
from collections.abc import Callable

from tests.support import EtcdCluster, EtcdProcess, answers_linearizable_read, etcdctl, free_port


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port < 65536


def test_etcd35_serves_and_stops(etcd35: EtcdProcess) -> None:
    assert answers_linearizable_read(etcd35.endpoint)
    put = etcdctl("3.5", etcd35.endpoint, "put", "k", "v")
    assert put.returncode == 0, put.stderr
    got = etcdctl("3.5", etcd35.endpoint, "get", "k", "--print-value-only")
    assert got.stdout.strip() == "v"
    assert etcd35.log_path.exists()
    code = etcd35.stop()
    assert code is not None
    assert not etcd35.running()
    assert not answers_linearizable_read(etcd35.endpoint, timeout=0.3)


def test_etcd34_and_etcdctl34(etcd34: EtcdProcess) -> None:
    out = etcdctl("3.4", etcd34.endpoint, "put", "k", "v34")
    assert out.returncode == 0, out.stderr
    got = etcdctl("3.5", etcd34.endpoint, "get", "k", "--print-value-only")
    assert got.stdout.strip() == "v34"


def test_kill_then_restart_keeps_data(etcd_factory: Callable[..., EtcdProcess]) -> None:
    server = etcd_factory()
    assert etcdctl("3.5", server.endpoint, "put", "durable", "yes").returncode == 0
    server.kill()
    assert server.process is not None
    assert server.process.returncode == -signal.SIGKILL
    server.launch()
    server.wait_ready()
    got = etcdctl("3.5", server.endpoint, "get", "durable", "--print-value-only")
    assert got.stdout.strip() == "yes"


def test_three_member_cluster(etcd_cluster_factory: Callable[..., EtcdCluster]) -> None:
    cluster = etcd_cluster_factory(3)
    assert len(cluster.endpoints) == 3
    leader = cluster.leader()
    members = etcdctl("3.5", cluster.endpoint, "member", "list")
    assert members.returncode == 0, members.stderr
    assert len(members.stdout.strip().splitlines()) == 3
    follower = next(m for m in cluster.members if m is not leader)
    assert etcdctl("3.5", follower.endpoint, "put", "c", "1").returncode == 0
    leader.kill()
    survivors = [m for m in cluster.members if m is not leader]
    # the two survivors elect a new leader and keep serving writes
    for member in survivors:
        member.wait_ready(timeout=20)
    assert etcdctl("3.5", survivors[0].endpoint, "put", "c", "2").returncode == 0
