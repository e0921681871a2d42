"""The `make bench` harness pieces: CPU accounting, server targets, the loadgen runner."""

from __future__ import annotations

import os
import time

import pytest

from benchmarks import bench_server, loadgen, servers
from petcd.client import Client


def test_process_cpu_counts_this_process() -> None:
    meter = servers.ProcessCpu([os.getpid()])
    meter.start()
    before = time.process_time()
    while time.process_time() - before < 0.2:  # burn 0.2 s of CPU: what is being measured
        sum(range(1000))
    used = meter.stop()
    assert 0.1 < used < 5.0  # /proc counts in clock ticks (10 ms)
    assert servers.process_cpu_s(2**22 + 12345) == 0.0  # no such process


def test_etcd_target_starts_fresh_and_stops() -> None:
    running = servers.TARGETS["etcd35"].start()
    try:
        with Client(running.endpoints) as client:
            assert client.get("anything").count == 0  # a new data directory
        assert servers.process_cpu_s(running.pids[0]) > 0
    finally:
        running.stop()
    assert servers.process_cpu_s(running.pids[0]) == 0.0


def test_ceiling_target_serves_put_and_range() -> None:
    if not (servers.CEILING_SOURCE / "server.py").exists():
        pytest.skip("the ceiling server's source is not here")
    running = servers.TARGETS["ceiling"].start()
    try:
        with Client(running.endpoints) as client:
            assert client.put("k", "v").header.revision > 0
            assert client.get("k").count == 1
    finally:
        running.stop()


def test_scaling_and_loadgen_scenarios() -> None:
    assert loadgen.SCENARIOS["put"][0] == "put"
    assert "--consistency" in loadgen.SCENARIOS["range_serializable"]
    assert bench_server.scaled(["put", "--total", "100000"]) == [
        "put",
        "--total",
        str(int(100000 * bench_server.SCALE)),
    ]
    names = {s.name for s in bench_server.SCENARIOS}
    assert servers.SCENARIOS_KV <= names == set(servers.SCENARIOS_ALL)


def test_loadgen_against_etcd() -> None:
    if not loadgen.BINARY.exists():
        pytest.skip("loadgen not built (make bench builds it)")
    running = servers.TARGETS["etcd35"].start()
    try:
        figures = loadgen.run(["put", "--clients", "2", "--total", "200"], running.endpoint)
    finally:
        running.stop()
    assert (figures["op"], figures["total"], figures["errors"]) == ("put", 200, 0)
