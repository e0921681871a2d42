"""Server figures: every target under the loadgen's judged scenarios and petcd-benchmark's put/range.

For each target (`PETCD_BENCH_TARGETS`, default "etcd35,etcd34,petcd,petcd_grpcio,ceiling"; etcd 3.5 runs first
because every other target's figures are recorded beside etcd 3.5's from the same session):
one throw-away warm-up run, then each scenario `PETCD_BENCH_RUNS` (3) times, each time on a
freshly started server with a new data directory, and the median is recorded. Server CPU is
read from /proc over each run and reported per request (`<scenario>_cpu_us`; per event for
watch), including the loadgen's connection set-up, which is small next to 100,000 requests.

Figure names: `<prefix>.<figure>`, prefix "etcd35" for etcd 3.5, "ceiling" for the empty grpcio
server, "server" for petcd on its native front end, "server_grpcio" for petcd on grpcio. E.g.
etcd35.put_per_s, server.range_linearizable_per_s, ceiling.range_per_s, server.put_p99_ms.

`PETCD_BENCH_SCALE` (default 1) scales every --total, for a quick look; judged figures use 1.
"""

from __future__ import annotations

import os
import pathlib
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from benchmarks import loadgen, servers
from benchmarks.common import record

RUNS = int(os.environ.get("PETCD_BENCH_RUNS", "3"))
SCALE = float(os.environ.get("PETCD_BENCH_SCALE", "1"))
DEFAULT_TARGETS = "etcd35,etcd34,petcd,petcd_grpcio,ceiling"
WARMUP_ARGS = ["put", "--clients", "64", "--conns", "8", "--total", "20000"]
_MANY = ["--clients", "64", "--conns", "8", "--total", "100000"]


@dataclass(slots=True, frozen=True)
class Scenario:
    name: str
    tool: str  # "loadgen" or "bench" (petcd-benchmark)
    args: list[str]
    figures: dict[str, tuple[str, str]]  # figure name -> (output field, unit)


SCENARIOS = [
    Scenario(
        "put",
        "loadgen",
        loadgen.SCENARIOS["put"],
        {
            "put_per_s": ("ops_per_s", "ops/s"),
            "put_p50_ms": ("p50_ms", "ms"),
            "put_p99_ms": ("p99_ms", "ms"),
            "put_client_cpu_pct": ("loadgen_cpu_pct", "%"),
        },
    ),
    Scenario(
        "put_1",
        "loadgen",
        loadgen.SCENARIOS["put_1"],
        {"put_1client_per_s": ("ops_per_s", "ops/s"), "put_1client_p50_ms": ("p50_ms", "ms")},
    ),
    Scenario(
        "range_linearizable",
        "loadgen",
        loadgen.SCENARIOS["range_linearizable"],
        {
            "range_linearizable_per_s": ("ops_per_s", "ops/s"),
            "range_linearizable_p99_ms": ("p99_ms", "ms"),
            "range_linearizable_client_cpu_pct": ("loadgen_cpu_pct", "%"),
        },
    ),
    Scenario(
        "range_serializable",
        "loadgen",
        loadgen.SCENARIOS["range_serializable"],
        {"range_serializable_per_s": ("ops_per_s", "ops/s")},
    ),
    Scenario(
        "txn_put",
        "loadgen",
        loadgen.SCENARIOS["txn_put"],
        {
            "txn_put_per_s": ("ops_per_s", "ops/s"),
            "txn_put_succeeded_per_s": ("succeeded_per_s", "ops/s"),
        },
    ),
    Scenario(
        "watch",
        "loadgen",
        loadgen.SCENARIOS["watch"],
        {"watch_events_per_s": ("ops_per_s", "events/s"), "watch_p99_ms": ("p99_ms", "ms")},
    ),
    Scenario(
        "bench_put",
        "bench",
        ["put", *_MANY],
        {
            "bench_put_per_s": ("ops_per_s", "ops/s"),
            "bench_put_client_cpu_pct": ("client_cpu_pct", "%"),
        },
    ),
    Scenario(
        "bench_range",
        "bench",
        ["range", *_MANY],
        {
            "bench_range_per_s": ("ops_per_s", "ops/s"),
            "bench_range_client_cpu_pct": ("client_cpu_pct", "%"),
        },
    ),
]
CPU_NAMES = {"put_1": "put_1client_cpu_us"}
# The task names the ceiling's linearizable-range figure "range_per_s".
ALIASES = {"ceiling": {"range_linearizable_per_s": "range_per_s"}}


def scaled(args: list[str]) -> list[str]:
    """`args` with --total multiplied by SCALE."""
    out = list(args)
    if "--total" in out and SCALE != 1:
        i = out.index("--total") + 1
        out[i] = str(max(int(int(out[i]) * SCALE), 1))
    return out


def run_bench(args: list[str], endpoints: str) -> dict[str, Any]:
    """petcd-benchmark's JSON line for `args` (run as its own process, like the loadgen)."""
    import json
    import subprocess

    script = pathlib.Path(sys.executable).with_name("petcd-benchmark")
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from petcd.benchmark.main import main; main()"]
    )
    completed = subprocess.run(
        [*command, *args, "--endpoints", endpoints, "--json"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"petcd-benchmark {' '.join(args)} failed: {completed.stderr.strip()[-500:]}"
        )
    figures: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return figures


def measure_once(target: servers.Target, scenario: Scenario) -> dict[str, Any]:
    """One run on a fresh server: the tool's figures plus the server's CPU per request."""
    running = target.start()
    try:
        cpu = servers.ProcessCpu(running.pids)
        cpu.start()
        args = scaled(scenario.args)
        if scenario.tool == "loadgen":
            figures = loadgen.run(args, running.endpoint)
        else:
            figures = run_bench(args, running.endpoint)
        used = cpu.stop()
    finally:
        running.stop()
    figures["server_cpu_s"] = used
    figures["server_cpu_us"] = used / max(int(figures["total"]), 1) * 1e6
    return figures


def warm_up(target: servers.Target) -> None:
    running = target.start()
    try:
        loadgen.run(scaled(WARMUP_ARGS), running.endpoint)
    finally:
        running.stop()


def measure_target(target: servers.Target) -> dict[str, tuple[float, str, list[float]]]:
    """figure -> (median, unit, the runs' values) for every scenario the target serves."""
    warm_up(target)
    medians: dict[str, tuple[float, str, list[float]]] = {}
    for scenario in SCENARIOS:
        if scenario.name not in target.scenarios:
            continue
        runs = []
        for i in range(RUNS):
            figures = measure_once(target, scenario)
            runs.append(figures)
            print(
                f"   {target.name} {scenario.name} run {i + 1}/{RUNS}: {figures['ops_per_s']:,.0f}/s, "
                f"p99 {figures['p99_ms']:.2f} ms, errors {figures['errors']}, "
                f"server CPU {figures['server_cpu_us']:.0f} µs/op",
                flush=True,
            )
        wanted = dict(scenario.figures)
        wanted[CPU_NAMES.get(scenario.name, f"{scenario.name}_cpu_us")] = ("server_cpu_us", "µs")
        for figure, (field_name, unit) in wanted.items():
            values = [float(r.get(field_name, 0.0)) for r in runs]
            medians[figure] = (statistics.median(values), unit, values)
    return medians


def main() -> None:
    names = [
        n.strip()
        for n in os.environ.get("PETCD_BENCH_TARGETS", DEFAULT_TARGETS).split(",")
        if n.strip()
    ]
    if "etcd35" in names:
        names.remove("etcd35")
    names.insert(0, "etcd35")  # the reference: every other target is recorded beside it
    loadgen.build()
    reference: dict[str, tuple[float, str, list[float]]] = {}
    for name in names:
        target = servers.TARGETS[name]
        started = time.monotonic()
        print(f"-- {name}", flush=True)
        medians = measure_target(target)
        if name == "etcd35":
            reference = medians
        aliases = ALIASES.get(name, {})
        for figure, (value, unit, values) in medians.items():
            etcd = None if name == "etcd35" else reference.get(figure, (None,))[0]
            record(
                f"{target.prefix}.{aliases.get(figure, figure)}",
                value,
                unit,
                etcd=etcd,
                runs=values,
                target=name,
            )
        print(f"-- {name} done in {time.monotonic() - started:.0f} s", flush=True)
        compare_tools(name, medians)


def compare_tools(name: str, medians: dict[str, tuple[float, str, list[float]]]) -> None:
    """The loadgen and petcd-benchmark on the same scenario, and the client CPU that explains it."""
    for loadgen_figure, bench_figure, scenario in [
        ("put_per_s", "bench_put_per_s", "put"),
        ("range_linearizable_per_s", "bench_range_per_s", "range_linearizable"),
    ]:
        if loadgen_figure not in medians or bench_figure not in medians:
            continue
        ours, theirs = medians[bench_figure][0], medians[loadgen_figure][0]
        ours_cpu = medians[f"{bench_figure.removesuffix('_per_s')}_client_cpu_pct"][0]
        theirs_cpu = medians[f"{scenario}_client_cpu_pct"][0]
        # client CPU per request: % of a core / requests per second
        print(
            f"   {name} {scenario}: petcd-benchmark {ours:,.0f}/s with {ours_cpu:.0f}% CPU "
            f"({ours_cpu * 1e4 / ours:.0f} µs/request), loadgen {theirs:,.0f}/s with {theirs_cpu:.0f}% CPU "
            f"({theirs_cpu * 1e4 / theirs:.0f} µs/request): ratio {ours / theirs:.2f}",
            flush=True,
        )
