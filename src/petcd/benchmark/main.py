"""`petcd-benchmark`: load for any etcd v3 endpoint, from several processes, with loadgen's output.

    petcd-benchmark put --endpoints 127.0.0.1:2379 --clients 64 --conns 8 --total 100000 --json

Ops: `put` (random keys of the key space), `range` (one key; `--consistency l|s`), `txn-put`
(compare a key's mod_revision with the last one seen, then put it: a CAS), `watch`
(`--watchers` watchers on the prefix over `--streams` streams, then `--total` puts; events/s
and delivery latency), `lease-keepalive` (keep-alive round trips on `--leases` leases).

Python's gRPC costs far more CPU per call than Go's, so the clients are spread over `--procs`
worker processes (default: one per CPU), each with its own event loop and connections. The
parent only splits the work, starts every worker at once and merges their figures. The JSON
line uses the loadgen's field names (op, ops_per_s, p50_ms, p99_ms, total, errors, ...) and
adds `procs` and the client side's CPU use (`client_cpu_s`, `client_cpu_pct`, 100 = a core).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import time
from typing import Any

import click

from petcd.benchmark.stats import WorkerResult, merge
from petcd.benchmark.worker import WorkerConfig, worker_entry

OPS = ("put", "range", "txn-put", "watch", "lease-keepalive")
READY_TIMEOUT_S = 300.0
RESULT_GRACE_S = 120.0


def split(count: int, parts: int) -> list[int]:
    """`count` as `parts` near-equal non-negative shares (the first ones get the remainder)."""
    assert parts > 0 and count >= 0
    base, extra = divmod(count, parts)
    shares = [base + (1 if i < extra else 0) for i in range(parts)]
    assert sum(shares) == count
    return shares


def plan(settings: dict[str, Any]) -> list[WorkerConfig]:
    """One WorkerConfig per process; every process has at least one client or watcher."""
    op = settings["op"]
    procs = max(1, settings["procs"])
    if op == "watch":
        procs = min(procs, max(settings["watchers"], settings["clients"], 1))
    else:
        procs = min(procs, settings["clients"])
    clients = split(settings["clients"], procs)
    conns = [max(1, c) for c in split(settings["conns"], procs)]
    # requests go only to processes with clients (a watch process may have watchers only)
    busy = sum(1 for c in clients if c)
    totals = iter(split(settings["total"], busy))
    warmups = iter(split(settings["warmup"], busy))
    watchers = split(settings["watchers"], procs)
    streams = [max(1, s) for s in split(settings["streams"], procs)]
    leases = split(settings["leases"], procs)
    seed = settings["seed"] or time.time_ns() % (1 << 31)
    return [
        WorkerConfig(
            op=op,
            index=i,
            endpoints=settings["endpoints"],
            clients=clients[i],
            conns=conns[i],
            total=next(totals) if clients[i] else 0,
            key_size=settings["key_size"],
            val_size=settings["val_size"],
            key_space=settings["key_space"],
            prefix=settings["prefix"],
            consistency=settings["consistency"],
            watchers=watchers[i],
            streams=streams[i],
            leases=max(leases[i], 1),
            warmup=next(warmups) if clients[i] else 0,
            timeout_s=settings["timeout"],
            max_duration_s=settings["max_duration"],
            seed=seed,
            uvloop=settings["uvloop"],
            total_puts=settings["total"] if any(clients) else 0,
        )
        for i in range(procs)
    ]


def run(settings: dict[str, Any]) -> dict[str, Any]:
    """Run one benchmark and return the merged figures (the JSON line's content)."""
    configs = plan(settings)
    context = multiprocessing.get_context("spawn")  # no gRPC state may cross a fork
    ready: Any = context.Queue()
    results: Any = context.Queue()
    start = context.Event()
    processes = [
        context.Process(target=worker_entry, args=(c, ready, start, results), daemon=True)
        for c in configs
    ]
    for process in processes:
        process.start()
    try:
        _wait_ready(ready, len(configs))
        start.set()
        collected = _collect(results, len(configs), settings["max_duration"] + RESULT_GRACE_S)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    return _figures(settings, configs, collected)


def _wait_ready(ready: Any, count: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    for _ in range(count):
        try:
            kind, _, message = ready.get(timeout=max(deadline - time.monotonic(), 0.1))
        except queue.Empty:
            raise click.ClickException("workers did not get ready in time") from None
        if kind == "error":
            raise click.ClickException(message)


def _collect(results: Any, count: int, timeout: float) -> list[WorkerResult]:
    deadline = time.monotonic() + timeout
    collected: list[WorkerResult] = []
    for _ in range(count):
        try:
            _, result = results.get(timeout=max(deadline - time.monotonic(), 0.1))
        except queue.Empty:
            raise click.ClickException("workers did not finish in time") from None
        if isinstance(result, str):
            raise click.ClickException(result)
        collected.append(result)
    return collected


def _figures(
    settings: dict[str, Any], configs: list[WorkerConfig], collected: list[WorkerResult]
) -> dict[str, Any]:
    reported = {
        "clients": settings["clients"],
        "conns": settings["conns"],
        "procs": len(configs),
        "key_size": settings["key_size"],
        "val_size": settings["val_size"],
        "key_space": settings["key_space"],
        "endpoints": ",".join(settings["endpoints"]),
    }
    op = settings["op"]
    if op == "range":
        reported["consistency"] = {"l": "linearizable", "s": "serializable"}[
            settings["consistency"]
        ]
    if op == "watch":
        reported.update(watchers=settings["watchers"], streams=settings["streams"])
    if op == "lease-keepalive":
        reported["leases"] = sum(c.leases for c in configs)
    figures = merge(collected, {"op": op, **reported})
    if op == "txn-put":
        figures["succeeded_per_s"] = round(figures.get("succeeded", 0) / figures["duration_s"], 1)
    if op == "watch":
        _watch_figures(figures, settings, collected)
    figures["tool"] = "petcd-benchmark"
    return figures


def _watch_figures(
    figures: dict[str, Any], settings: dict[str, Any], collected: list[WorkerResult]
) -> None:
    """Puts/s, put latency, and missing events counted as errors (as the loadgen does)."""
    from petcd.benchmark.stats import latency_fields

    puts = figures.get("puts", 0)
    expected = puts * settings["watchers"]
    figures["events_expected"] = expected
    figures["errors"] += max(expected - figures["total"], 0)
    put_samples = [x for r in collected for x in r.put_latencies_s]
    put_fields = latency_fields(put_samples, "put_")
    figures["put_p50_ms"], figures["put_p99_ms"] = (
        put_fields["put_p50_ms"],
        put_fields["put_p99_ms"],
    )


def human_line(figures: dict[str, Any]) -> str:
    extra = ""
    if figures["op"] == "txn-put":
        extra = (
            f", {figures.get('succeeded', 0)} succeeded, {figures.get('conflicts', 0)} conflicts"
        )
    if figures["op"] == "watch":
        extra = f", {figures.get('puts', 0)} puts to {figures['watchers']} watchers"
    return (
        f"{figures['op']}: {figures['ops_per_s']:,.1f} ops/s, p50 {figures['p50_ms']:.2f} ms, "
        f"p90 {figures['p90_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms, max {figures['max_ms']:.2f} ms, "
        f"{figures['total']} done, {figures['errors']} errors in {figures['duration_s']:.2f} s{extra} "
        f"({figures['procs']} procs, client CPU {figures['client_cpu_pct']:.0f}%)"
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("op", type=click.Choice(OPS))
@click.option(
    "--endpoints", default="127.0.0.1:2379", show_default=True, help="comma-separated host:port"
)
@click.option(
    "--clients",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="concurrent requesters",
)
@click.option(
    "--conns", default=1, show_default=True, type=click.IntRange(min=1), help="gRPC connections"
)
@click.option(
    "--total",
    default=10000,
    show_default=True,
    type=click.IntRange(min=0),
    help="requests (watch: puts)",
)
@click.option("--key-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--val-size", default=256, show_default=True, type=click.IntRange(min=0))
@click.option("--key-space", default=100000, show_default=True, type=click.IntRange(min=1))
@click.option("--prefix", default="pb/", show_default=True, help="key prefix (watchers watch it)")
@click.option("--consistency", default="l", show_default=True, type=click.Choice(["l", "s"]))
@click.option("--watchers", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option("--streams", default=10, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--leases", default=100, show_default=True, type=click.IntRange(min=1), help="lease-keepalive"
)
@click.option("--procs", default=os.cpu_count() or 1, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--warmup",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="requests before measuring",
)
@click.option(
    "--timeout",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.001),
    help="per request, s",
)
@click.option(
    "--max-duration",
    default=120.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="bound, s",
)
@click.option("--seed", default=0, type=int, help="random seed (0: time based)")
@click.option(
    "--uvloop/--no-uvloop", default=False, show_default=True, help="run workers on uvloop"
)
@click.option("--json", "json_out", is_flag=True, help="also print one JSON line")
def cli(**options: Any) -> None:
    """Benchmark an etcd v3 endpoint (etcd or petcd) with OP."""
    settings = dict(options)
    json_out = settings.pop("json_out")
    settings["endpoints"] = [e.strip() for e in settings["endpoints"].split(",") if e.strip()]
    if not settings["endpoints"]:
        raise click.UsageError("--endpoints needs at least one host:port")
    if settings["key_size"] <= len(settings["prefix"]):
        raise click.UsageError("--key-size must exceed the prefix length")
    if settings["op"] == "watch" and settings["val_size"] < 16:
        raise click.UsageError("watch needs --val-size >= 16 (the value carries the send time)")
    figures = run(settings)
    click.echo(human_line(figures))
    if json_out:
        click.echo(json.dumps(figures))


def main() -> None:
    cli()
