"""The native front end's own cost: petcd's gRPC front end with empty KV handlers.

The twin of the grpcio ceiling stub (../shared/loadgen/ceiling): Put and Range answer fixed
responses without storage, so what the loadgen measures is the front end (HTTP/2 in libnghttp2,
the batched hand-off, one task per call, protobuf) and nothing else. Run as a subprocess
(`python -m benchmarks.bench_frontend --serve PORT`) under uvloop, like petcd itself.

Figures (medians of `PETCD_BENCH_RUNS` fresh servers; 64 clients, 8 connections):
`frontend.native_empty_put_per_s`, `frontend.native_empty_range_per_s` and the server CPU per
request `frontend.native_empty_put_cpu_us`, `frontend.native_empty_range_cpu_us`. The full
server figures (petcd native vs grpcio vs the grpcio ceiling vs etcd 3.5) are bench_server's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
from typing import Any

from benchmarks import loadgen, servers
from benchmarks.common import record

RUNS = int(os.environ.get("PETCD_BENCH_RUNS", "3"))
TOTAL = int(100_000 * float(os.environ.get("PETCD_BENCH_SCALE", "1")))
SCENARIOS = {
    "put": ["put", "--clients", "64", "--conns", "8", "--total", str(TOTAL)],
    "range": ["range", "--clients", "64", "--conns", "8", "--total", str(TOTAL)],
}


async def _serve(port: int) -> None:
    from petcd.api.native.server import NativeServer
    from petcd.api.rpc import CallContext, Kind, Method
    from petcd.pb import kv_pb2, rpc_pb2

    header = rpc_pb2.ResponseHeader(cluster_id=1, member_id=2, revision=3, raft_term=2)
    kv = kv_pb2.KeyValue(key=b"lg/0000000000000", value=b"v" * 256, create_revision=2)

    async def put(req: rpc_pb2.PutRequest, ctx: CallContext) -> rpc_pb2.PutResponse:
        return rpc_pb2.PutResponse(header=header)

    async def range_(req: rpc_pb2.RangeRequest, ctx: CallContext) -> rpc_pb2.RangeResponse:
        return rpc_pb2.RangeResponse(header=header, kvs=[kv], count=1)

    service = "etcdserverpb.KV"
    methods = [
        Method(service, "Put", Kind.UNARY, rpc_pb2.PutRequest, rpc_pb2.PutResponse, put),
        Method(service, "Range", Kind.UNARY, rpc_pb2.RangeRequest, rpc_pb2.RangeResponse, range_),
    ]
    server = NativeServer(methods, 1_572_864, 4096)
    await server.listen(f"127.0.0.1:{port}")
    await asyncio.Event().wait()


def _start() -> servers.Running:
    port = servers.free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_frontend", "--serve", str(port)],
        cwd=servers.ROOT,
        start_new_session=True,
    )
    endpoint = f"127.0.0.1:{port}"

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    try:
        servers.wait_serving(endpoint, alive=lambda: process.poll() is None)
    except BaseException:
        stop()
        raise
    return servers.Running([endpoint], [process.pid], stop)


def _measure(args: list[str]) -> dict[str, Any]:
    running = _start()
    try:
        cpu = servers.ProcessCpu(running.pids)
        cpu.start()
        figures = loadgen.run(args, running.endpoint)
        used = cpu.stop()
    finally:
        running.stop()
    figures["server_cpu_us"] = used / max(int(figures["total"]), 1) * 1e6
    return figures


def main() -> None:
    loadgen.build()
    for name, args in SCENARIOS.items():
        runs = [_measure(args) for _ in range(RUNS)]
        for run in runs:
            print(
                f"   native empty {name}: {run['ops_per_s']:,.0f}/s, p99 {run['p99_ms']:.2f} ms,"
                f" server CPU {run['server_cpu_us']:.0f} µs/op, errors {run['errors']}",
                flush=True,
            )
        rates = [float(r["ops_per_s"]) for r in runs]
        cpus = [float(r["server_cpu_us"]) for r in runs]
        record(f"frontend.native_empty_{name}_per_s", statistics.median(rates), "ops/s", runs=rates)
        record(f"frontend.native_empty_{name}_cpu_us", statistics.median(cpus), "µs", runs=cpus)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", type=int, required=True)
    port = parser.parse_args().serve
    try:
        import uvloop

        uvloop.run(_serve(port))
    except ImportError:
        asyncio.run(_serve(port))
