"""`etcdctl check perf --load=m` (etcdctl 3.5) against petcd, and against etcd 3.5 beside it.

etcdctl's own verdict: 60 s of puts from 200 clients at 1,000 writes/s; it passes when the
throughput is at least 90 % of that, the slowest request under 500 ms and the standard
deviation under 100 ms. Figures: `check_perf_m.pass` (1 or 0), `check_perf_m.writes_per_s`,
`check_perf_m.slowest_s`, `check_perf_m.stddev_s`, each with etcd's from the same run.
"""

from __future__ import annotations

import re
import tempfile

from benchmarks.common import record
from tests.support.petcd_process import PetcdProcess
from tests.support.process import EtcdProcess, etcdctl, require_binary

_FIGURES = {
    "writes_per_s": re.compile(r"Throughput is ([0-9.]+) writes/s"),
    "slowest_s": re.compile(r"Slowest request took ([0-9.]+)s"),
    "stddev_s": re.compile(r"Stddev is ([0-9.]+)s"),
}


def run(endpoint: str) -> dict[str, float]:
    result = etcdctl("3.5", endpoint, "check", "perf", "--load=m", timeout=300)
    text = result.stdout + result.stderr
    figures = {"pass": 1.0 if result.returncode == 0 and "FAIL" not in text else 0.0}
    for name, pattern in _FIGURES.items():
        match = pattern.search(text)
        figures[name] = float(match.group(1)) if match else float("nan")
    print(text.strip().splitlines()[-4:] if text.strip() else "(no output)", flush=True)
    return figures


def main() -> None:
    require_binary("3.5")
    require_binary("3.5", ctl=True)
    with EtcdProcess("3.5", tempfile.mkdtemp(prefix="bench-checkperf-etcd-")) as etcd:
        reference = run(etcd.endpoint)
    with PetcdProcess(tempfile.mkdtemp(prefix="bench-checkperf-petcd-")) as petcd:
        figures = run(petcd.endpoint)
    units = {"pass": "bool", "writes_per_s": "writes/s", "slowest_s": "s", "stddev_s": "s"}
    for name, value in reference.items():
        record(f"etcd35.check_perf_m.{name}", value, units[name])
    for name, value in figures.items():
        record(f"check_perf_m.{name}", value, units[name], etcd=reference[name])


if __name__ == "__main__":
    main()
