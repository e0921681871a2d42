"""Shared helpers for integration tests and benchmarks (servers, etcdctl, polling)."""

from tests.support.process import (
    ETCD_BINARIES,
    ETCDCTL_BINARIES,
    EtcdCluster,
    EtcdProcess,
    ServerProcess,
    TLSFiles,
    answers_linearizable_read,
    etcdctl,
    free_port,
    require_binary,
    wait_for,
    wait_serving,
)

__all__ = [
    "ETCDCTL_BINARIES",
    "ETCD_BINARIES",
    "EtcdCluster",
    "EtcdProcess",
    "ServerProcess",
    "TLSFiles",
    "answers_linearizable_read",
    "etcdctl",
    "free_port",
    "require_binary",
    "wait_for",
    "wait_serving",
]
