"""The `make bench` harness pieces: CPU accounting, server targets, the loadgen runner."""

from __future__ import annotations

import os
import pathlib
import shutil
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
        # The yardstick is the workplace's, outside this repository (PETCD_LOADGEN_DIR).
        pytest.skip(f"no ceiling server at {servers.CEILING_SOURCE} (outside this repository)")
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


def _can_build_loadgen() -> bool:
    return (
        (loadgen.SOURCE / "main.go").exists()
        and shutil.which("go") is not None
        and pathlib.Path("/usr/share/gocode/src/go.etcd.io/etcd/clientv3").is_dir()
    )


def test_loadgen_against_etcd() -> None:
    if not loadgen.BINARY.exists() and not _can_build_loadgen():
        # Building needs the yardstick's source (outside this repository) and Debian's Go
        # toolchain with etcd's client sources, which only `make bench` installs.
        pytest.skip(f"loadgen not built and not buildable here (source {loadgen.SOURCE}, Go)")
    running = servers.TARGETS["etcd35"].start()
    try:
        figures = loadgen.run(["put", "--clients", "2", "--total", "200"], running.endpoint)
    finally:
        running.stop()
    assert (figures["op"], figures["total"], figures["errors"]) == ("put", 200, 0)
