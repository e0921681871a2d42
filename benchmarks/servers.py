"""Servers to benchmark, each started fresh on free ports in a new temporary data directory.

A target is a name, the prefix of its figure names, and a function that starts one server (or
cluster) and returns a `Running` handle: the endpoint(s) to load, the server process ids (for
CPU accounting) and `stop()`. Processes come from tests/support, so tests and benchmarks start
servers the same way. `TARGETS` is the registry; the server engineer adds petcd to it:

    TARGETS["petcd"] = Target("petcd", "server", start_petcd, SCENARIOS_ALL)

`ProcessCpu` reads utime+stime of the server processes from /proc/<pid>/stat, so a run can
report server CPU microseconds per request (etcd here is CPU-bound: that is its budget).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support import EtcdCluster, EtcdProcess, free_port, require_binary, wait_serving

ROOT = pathlib.Path(__file__).resolve().parents[1]
CEILING_SOURCE = (
    pathlib.Path(os.environ.get("PETCD_LOADGEN_DIR", ROOT.parent / "shared" / "loadgen"))
    / "ceiling"
)
CEILING_DIR = ROOT / ".cache" / "ceiling"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Every scenario bench_server knows; a target lists those it can serve.
SCENARIOS_ALL = frozenset(
    {
        "put",
        "put_1",
        "range_linearizable",
        "range_serializable",
        "txn_put",
        "watch",
        "bench_put",
        "bench_range",
    }
)
# The ceiling stub implements only KV Put and Range (with no storage: serializable is moot).
SCENARIOS_KV = frozenset({"put", "put_1", "range_linearizable", "bench_put", "bench_range"})


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` so far (0.0 once it has gone)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    # the command name may hold spaces: fields start after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


@dataclass(slots=True)
class ProcessCpu:
    """CPU seconds used by a set of processes between `start()` and `stop()`."""

    pids: list[int]
    _before: float = 0.0
    used_s: float = 0.0

    def start(self) -> None:
        self._before = sum(process_cpu_s(p) for p in self.pids)

    def stop(self) -> float:
        self.used_s = sum(process_cpu_s(p) for p in self.pids) - self._before
        assert self.used_s >= 0.0
        return self.used_s


@dataclass(slots=True)
class Running:
    """A started server or cluster: what to load, what to measure, how to stop it."""

    endpoints: list[str]
    pids: list[int]
    stop: Callable[[], None]

    @property
    def endpoint(self) -> str:
        return ",".join(self.endpoints)


@dataclass(slots=True)
class Target:
    name: str
    prefix: str  # figure names are "<prefix>.<figure>"
    start: Callable[[], Running]
    scenarios: frozenset[str] = field(default=SCENARIOS_ALL)


def start_etcd(version: str) -> Running:
    server = EtcdProcess(version, tempfile.mkdtemp(prefix=f"bench-etcd{version}-"))
    return Running([server.endpoint], [server.pid], _cleanup(server.cleanup, server.data_dir))


def start_etcd_cluster(version: str, members: int = 3) -> Running:
    cluster = EtcdCluster(
        members, version, tempfile.mkdtemp(prefix=f"bench-etcd{version}x{members}-")
    )
    pids = [m.pid for m in cluster.members]
    return Running(cluster.endpoints, pids, _cleanup(cluster.cleanup, cluster.data_dir))


def _cleanup(stop: Callable[[], None], data_dir: pathlib.Path) -> Callable[[], None]:
    def run() -> None:
        stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    return run


def _prepare_ceiling() -> pathlib.Path:
    """Generate the ceiling stub's protobuf code with our venv (no venv of its own)."""
    gen = CEILING_DIR / "gen"
    gen.mkdir(parents=True, exist_ok=True)
    source = CEILING_SOURCE / "server.py"
    if not (gen / "kv_pb2_grpc.py").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{CEILING_SOURCE}",
                f"--python_out={gen}",
                f"--grpc_python_out={gen}",
                str(CEILING_SOURCE / "kv.proto"),
            ],
            check=True,
        )
    script = CEILING_DIR / "server.py"
    shutil.copyfile(source, script)
    return script


def start_ceiling(variant: str = "aio") -> Running:
    """The empty-handler grpcio KV server: the most a grpcio server can do here."""
    script = _prepare_ceiling()
    port = free_port()
    log = (CEILING_DIR / f"ceiling-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", str(port), "--variant", variant],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    endpoint = f"127.0.0.1:{port}"

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    try:
        wait_serving(endpoint, alive=lambda: process.poll() is None)
    except BaseException:
        stop()
        raise
    return Running([endpoint], [process.pid], stop)


def start_petcd(frontend: str) -> Running:
    """One petcd member on the given gRPC front end ("native" or "grpcio")."""
    from tests.support.petcd_process import PetcdProcess

    server = PetcdProcess(
        tempfile.mkdtemp(prefix=f"bench-petcd-{frontend}-"),
        extra_args=["--grpc-frontend", frontend],
    )
    return Running([server.endpoint], [server.pid], _cleanup(server.cleanup, server.data_dir))


def available(version: str) -> bool:
    try:
        require_binary(version)
    except FileNotFoundError:
        return False
    return True


TARGETS: dict[str, Target] = {
    "etcd35": Target("etcd35", "etcd35", lambda: start_etcd("3.5")),
    "etcd34": Target("etcd34", "etcd34", lambda: start_etcd("3.4")),
    "etcd35x3": Target("etcd35x3", "etcd35x3", lambda: start_etcd_cluster("3.5")),
    "ceiling": Target("ceiling", "ceiling", start_ceiling, SCENARIOS_KV),
    # petcd on its native front end (the default) and on grpcio (the fallback)
    "petcd": Target("petcd", "server", lambda: start_petcd("native")),
    "petcd_grpcio": Target("petcd_grpcio", "server_grpcio", lambda: start_petcd("grpcio")),
}
