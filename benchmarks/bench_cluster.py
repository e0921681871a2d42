"""3-member clusters: petcd beside etcd 3.5, both started on this machine in the same run.

Figures (loadgen, medians of 3 fresh clusters each):
- `cluster3.put_per_s`: put with 64 clients over all three members;
- `cluster3.range_per_s`: linearizable range with 64 clients over all three members;
- `cluster3.failover_ms`: the loadgen's `failover` scenario — 16 clients writing through all
  members with a 250 ms timeout while the leader is killed with kill -9 — its longest gap
  between successful writes (`max_gap_ms`).
Each petcd figure is recorded with etcd 3.5's from the same run; etcd's own as `etcd35x3.*`.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from typing import Any

import grpc

from benchmarks import loadgen
from benchmarks.common import record
from petcd.pb import rpc_pb2, rpc_pb2_grpc
from tests.support.petcd_process import PETCD_BIN
from tests.support.process import EtcdCluster, EtcdProcess, require_binary

RUNS = 3
THROUGHPUT = {
    "put_per_s": ["put", "--clients", "64", "--conns", "8", "--total", "30000"],
    "range_per_s": ["range", "--clients", "64", "--conns", "8", "--total", "60000"],
}
FAILOVER = ["failover", "--clients", "16", "--conns", "4", "--timeout", "250ms", "--duration", "8s"]
KILL_AFTER_S = 3.0


def _cluster(kind: str) -> EtcdCluster:
    data_dir = tempfile.mkdtemp(prefix=f"bench-{kind}x3-")
    binary = PETCD_BIN if kind == "petcd" else "3.5"
    return EtcdCluster(3, binary, data_dir)


def _leader(cluster: EtcdCluster) -> EtcdProcess:
    for member in cluster.members:
        with grpc.insecure_channel(member.endpoint) as channel:
            stub = rpc_pb2_grpc.MaintenanceStub(channel)  # type: ignore[no-untyped-call]
            status = stub.Status(rpc_pb2.StatusRequest(), timeout=5)
        if status.leader == status.header.member_id:
            return member
    raise LookupError("no leader")


def _failover_once(kind: str) -> float:
    cluster = _cluster(kind)
    try:
        leader = _leader(cluster)
        result: dict[str, Any] = {}

        def drive() -> None:
            result.update(loadgen.run(FAILOVER, ",".join(cluster.endpoints), timeout=120))

        driver = threading.Thread(target=drive)
        driver.start()
        time.sleep(KILL_AFTER_S)  # a benchmark schedule, not synchronisation: load, then kill
        leader.kill()
        driver.join(timeout=180)
        return float(result["max_gap_ms"])
    finally:
        cluster.cleanup()


def _throughput_once(kind: str, args: list[str]) -> float:
    cluster = _cluster(kind)
    try:
        return float(loadgen.run(args, ",".join(cluster.endpoints))["ops_per_s"])
    finally:
        cluster.cleanup()


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def main() -> None:
    require_binary("3.5")
    loadgen.build()
    figures: dict[str, dict[str, float]] = {"etcd": {}, "petcd": {}}
    for kind in ("etcd", "petcd"):
        for name, args in THROUGHPUT.items():
            figures[kind][name] = _median([_throughput_once(kind, args) for _ in range(RUNS)])
        figures[kind]["failover_ms"] = _median([_failover_once(kind) for _ in range(RUNS)])
    units = {"put_per_s": "ops/s", "range_per_s": "ops/s", "failover_ms": "ms"}
    for name, value in figures["etcd"].items():
        record(f"etcd35x3.{name}", value, units[name])
    for name, value in figures["petcd"].items():
        record(f"cluster3.{name}", value, units[name], etcd=figures["etcd"][name])


if __name__ == "__main__":
    main()
