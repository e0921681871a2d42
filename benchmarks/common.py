"""Shared helpers for benchmarks: every figure is printed and appended to bench-results.jsonl."""

from __future__ import annotations

import json
import pathlib
import time

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "bench-results.jsonl"


def record(name: str, value: float, unit: str, etcd: float | None = None, **extra: object) -> None:
    """Print one figure and append it as a JSON line (with etcd's figure from the same run)."""
    ratio = f"  (etcd {etcd:,.1f}, ratio {value / etcd:.2f})" if etcd else ""
    print(f"{name:<40} {value:>14,.2f} {unit}{ratio}", flush=True)
    line = {"name": name, "value": value, "unit": unit, "etcd": etcd, "time": time.time()}
    line.update(extra)
    with RESULTS.open("a") as f:
        f.write(json.dumps(line) + "\n")
