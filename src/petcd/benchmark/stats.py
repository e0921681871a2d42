"""Figures of a benchmark run: what one worker process reports and how the parent merges them.

Latencies travel between processes as `array('d')` of seconds. Percentiles use the loadgen's
rule (the value at rank round(q × n), 1-based, clamped), so both tools report the same
statistic for the same samples. Throughput is completed requests over the wall time from the
earliest worker start to the latest worker end: workers start together on one signal.
"""

from __future__ import annotations

import array
from dataclasses import dataclass, field
from typing import Any

ERROR_SAMPLES_MAX = 8  # distinct error messages kept (each with its count)


@dataclass(slots=True)
class WorkerResult:
    """One worker process's measured phase."""

    latencies_s: array.array[float] = field(default_factory=lambda: array.array("d"))
    errors: int = 0
    error_samples: dict[str, int] = field(default_factory=dict)
    start_s: float = 0.0  # time.time() when measuring began
    end_s: float = 0.0  # time.time() when the last request (or event) completed
    cpu_s: float = 0.0  # this process's CPU time over the measured phase
    truncated: bool = False
    counters: dict[str, int] = field(default_factory=dict)  # op-specific (succeeded, events...)
    put_latencies_s: array.array[float] = field(default_factory=lambda: array.array("d"))

    def fail(self, message: str) -> None:
        self.errors += 1
        message = message[:120]
        if message in self.error_samples or len(self.error_samples) < ERROR_SAMPLES_MAX:
            self.error_samples[message] = self.error_samples.get(message, 0) + 1


def percentile_ms(ordered: array.array[float] | list[float], q: float) -> float:
    """The q-quantile in ms of ascending `ordered` seconds (loadgen's rank rule)."""
    assert 0.0 < q <= 1.0
    if not ordered:
        return 0.0
    rank = int(q * len(ordered) + 0.5) - 1
    rank = min(max(rank, 0), len(ordered) - 1)
    return ordered[rank] * 1000.0


def latency_fields(samples: list[float], prefix: str = "") -> dict[str, float]:
    """p50/p90/p99/p99.9/max/mean in ms of unordered `samples` (seconds)."""
    ordered = sorted(samples)
    fields = {
        f"{prefix}p50_ms": percentile_ms(ordered, 0.50),
        f"{prefix}p90_ms": percentile_ms(ordered, 0.90),
        f"{prefix}p99_ms": percentile_ms(ordered, 0.99),
        f"{prefix}p999_ms": percentile_ms(ordered, 0.999),
        f"{prefix}max_ms": ordered[-1] * 1000.0 if ordered else 0.0,
        f"{prefix}mean_ms": sum(ordered) / len(ordered) * 1000.0 if ordered else 0.0,
    }
    return {k: round(v, 3) for k, v in fields.items()}


def merge(results: list[WorkerResult], settings: dict[str, Any]) -> dict[str, Any]:
    """One JSON-ready dict for the whole run; the first six keys are loadgen's contract."""
    assert results, "no worker reported"
    start = min(r.start_s for r in results)
    end = max(r.end_s for r in results)
    wall = max(end - start, 1e-9)
    samples = [x for r in results for x in r.latencies_s]
    errors = sum(r.errors for r in results)
    counters: dict[str, int] = {}
    for result in results:
        for name, value in result.counters.items():
            counters[name] = counters.get(name, 0) + value
    completed = counters.pop("events", len(samples))
    cpu = sum(r.cpu_s for r in results)
    out: dict[str, Any] = {
        "op": settings["op"],
        "ops_per_s": round(completed / wall, 1),
        "p50_ms": 0.0,
        "p99_ms": 0.0,
        "total": completed,
        "errors": errors,
    }
    out.update(latency_fields(samples))
    out["duration_s"] = round(wall, 3)
    out.update(settings)
    out.update(counters)
    out["client_cpu_s"] = round(cpu, 3)
    out["client_cpu_pct"] = round(100.0 * cpu / wall, 1)
    out["truncated"] = any(r.truncated for r in results)
    samples_by_message: dict[str, int] = {}
    for result in results:
        for message, count in result.error_samples.items():
            samples_by_message[message] = samples_by_message.get(message, 0) + count
    if samples_by_message:
        out["error_samples"] = samples_by_message
    out["start_unix"] = round(start, 3)
    return out
