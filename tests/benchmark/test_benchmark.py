"""petcd-benchmark end to end against real etcd 3.5 (small totals), plus its arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from petcd.benchmark.main import plan, run, split
from petcd.benchmark.stats import WorkerResult, latency_fields, merge, percentile_ms
from petcd.client import Client
from tests.support import EtcdProcess

BASE: dict[str, Any] = {
    "clients": 4,
    "conns": 2,
    "total": 400,
    "key_size": 16,
    "val_size": 64,
    "key_space": 50,
    "prefix": "bt/",
    "consistency": "l",
    "watchers": 6,
    "streams": 2,
    "leases": 4,
    "procs": 2,
    "warmup": 20,
    "timeout": 5.0,
    "max_duration": 60.0,
    "seed": 7,
    "uvloop": False,
}


def _settings(op: str, endpoint: str, **changes: Any) -> dict[str, Any]:
    return {**BASE, "op": op, "endpoints": [endpoint], **changes}


def test_split_and_plan() -> None:
    assert split(10, 3) == [4, 3, 3]
    assert split(1, 2) == [1, 0]
    configs = plan(_settings("put", "h:1", clients=3, conns=8, procs=4, total=100))
    assert [c.clients for c in configs] == [1, 1, 1]  # never more processes than clients
    assert sum(c.total for c in configs) == 100
    assert all(c.conns >= 1 for c in configs)
    watch = plan(_settings("watch", "h:1", clients=1, watchers=10, procs=2, total=30))
    assert [c.watchers for c in watch] == [5, 5]
    assert [c.total for c in watch] == [30, 0]  # the only putter
    assert all(c.total_puts == 30 for c in watch)


def test_percentiles_follow_the_loadgen_rule() -> None:
    ordered = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentile_ms(ordered, 0.5) == pytest.approx(50.0)
    assert percentile_ms(ordered, 0.99) == pytest.approx(99.0)
    assert percentile_ms(ordered, 0.999) == pytest.approx(100.0)
    fields = latency_fields([0.003, 0.001, 0.002])
    assert (fields["p50_ms"], fields["max_ms"], fields["mean_ms"]) == (2.0, 3.0, 2.0)


def test_merge_adds_workers_up() -> None:
    a = WorkerResult(start_s=10.0, end_s=12.0, cpu_s=1.0)
    a.latencies_s.extend([0.001, 0.002])
    b = WorkerResult(start_s=10.5, end_s=11.0, cpu_s=0.5)
    b.latencies_s.extend([0.003])
    b.fail("boom")
    merged = merge([a, b], {"op": "put"})
    assert list(merged)[:6] == ["op", "ops_per_s", "p50_ms", "p99_ms", "total", "errors"]
    assert (merged["total"], merged["errors"], merged["duration_s"]) == (3, 1, 2.0)
    assert merged["ops_per_s"] == 1.5
    assert merged["client_cpu_pct"] == 75.0
    assert merged["error_samples"] == {"boom": 1}


@pytest.mark.parametrize("op", ["put", "range", "txn-put", "lease-keepalive"])
def test_ops_against_etcd(op: str, etcd35_module: EtcdProcess) -> None:
    figures = run(_settings(op, etcd35_module.endpoint, consistency="s" if op == "range" else "l"))
    assert figures["op"] == op
    assert figures["total"] == 400 and figures["errors"] == 0
    assert figures["ops_per_s"] > 0
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert figures["procs"] == 2 and not figures["truncated"]
    if op == "txn-put":
        assert figures["succeeded"] + figures["conflicts"] == 400
        assert figures["succeeded"] > 0
    if op == "put":
        with Client([etcd35_module.endpoint]) as client:
            assert 0 < client.get("bt/", prefix=True, count_only=True).count <= 50


def test_watch_against_etcd(etcd35_module: EtcdProcess) -> None:
    figures = run(_settings("watch", etcd35_module.endpoint, total=100, prefix="bw/"))
    assert figures["puts"] == 100
    assert figures["events_expected"] == 600 == figures["total"]
    assert figures["errors"] == 0
    assert figures["p50_ms"] > 0 and figures["put_p50_ms"] > 0


def test_cli_prints_a_loadgen_shaped_json_line(etcd35_module: EtcdProcess) -> None:
    args = [
        "put",
        "--endpoints",
        etcd35_module.endpoint,
        "--clients",
        "2",
        "--total",
        "50",
        "--json",
    ]
    out = subprocess.run(
        [sys.executable, "-c", "from petcd.benchmark.main import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    human, line = out.stdout.strip().splitlines()
    assert human.startswith("put: ")
    figures = json.loads(line)
    assert figures["total"] == 50 and figures["tool"] == "petcd-benchmark"
    usage = subprocess.run(
        [
            sys.executable,
            "-c",
            "from petcd.benchmark.main import main; main()",
            "put",
            "--key-size",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert usage.returncode == 2 and "key-size" in usage.stderr
