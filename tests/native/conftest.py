"""An in-process native front end on a free port, serving a small test service.

The server runs on its own event loop in a thread, so tests can use blocking clients (grpcio,
raw sockets). `Probe` records what handlers saw (cancellations, metadata) for assertions; every
wait on it is bounded.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from petcd import errors
from petcd.api.rpc import CallContext, Kind, Method, Send
from petcd.pb import kv_pb2, rpc_pb2

if os.environ.get("CI"):
    # CI builds on a machine where `make test` installs libnghttp2-dev: a missing extension
    # there is a broken build, not a reason to skip.
    import petcd.api.native._h2  # noqa: F401
else:
    pytest.importorskip("petcd.api.native._h2", reason="native extension not built")

from petcd.api.native.server import NativeServer

SERVICE = "petcdtest.Echo"
MAX_REQUEST_BYTES = 64 * 1024


@dataclass(slots=True)
class Probe:
    cancelled: threading.Event = field(default_factory=threading.Event)
    metadata: dict[str, str] = field(default_factory=dict)
    flood_sent: int = 0


class EchoService:
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def echo(self, req: rpc_pb2.RangeRequest, ctx: CallContext) -> Any:
        if req.key == b"fail":
            raise errors.KeyNotFoundError("petcd: käse not found %")
        if req.key == b"boom":
            raise RuntimeError("kaboom")
        if req.key == b"slow":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.probe.cancelled.set()
                raise
        if req.key == b"bytes":
            return rpc_pb2.RangeResponse(count=7).SerializeToString()
        if req.key == b"meta":
            self.probe.metadata = dict(ctx.metadata())
        return rpc_pb2.RangeResponse(kvs=[kv_pb2.KeyValue(key=req.key)], count=len(req.key))

    async def stream(self, req: rpc_pb2.RangeRequest, send: Send, ctx: CallContext) -> None:
        value = b"z" * 65536 if req.key == b"flood" else req.key
        for i in range(req.limit):
            await send(rpc_pb2.RangeResponse(count=i, kvs=[kv_pb2.KeyValue(value=value)]))
            if req.key == b"flood":
                self.probe.flood_sent = i + 1
        if req.key == b"fail":
            raise errors.CompactedError()

    async def chat(
        self, requests: AsyncIterator[rpc_pb2.RangeRequest], send: Send, ctx: CallContext
    ) -> None:
        async for req in requests:
            if req.key == b"end":
                raise errors.NoLeaderError()
            await send(rpc_pb2.RangeResponse(kvs=[kv_pb2.KeyValue(key=req.key)]))

    def methods(self) -> list[Method]:
        msg = (rpc_pb2.RangeRequest, rpc_pb2.RangeResponse)
        return [
            Method(SERVICE, "Echo", Kind.UNARY, *msg, self.echo),
            Method(SERVICE, "Stream", Kind.SERVER_STREAM, *msg, self.stream),
            Method(SERVICE, "Chat", Kind.BIDI_STREAM, *msg, self.chat),
        ]


@dataclass(slots=True)
class Running:
    port: int
    loop: asyncio.AbstractEventLoop
    server: NativeServer
    probe: Probe

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def call(self, func: Any, timeout: float = 5.0) -> Any:
        """Run `func()` on the server's loop (to inspect its state) and return the result."""

        async def run() -> Any:
            return func()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def streams(self) -> int:
        return int(self.call(lambda: sum(c.h2.active_streams() for c in self.server.connections)))


@pytest.fixture
def native() -> Iterator[Running]:
    probe = Probe()
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()

    async def start() -> None:
        server = NativeServer(
            EchoService(probe).methods(),
            MAX_REQUEST_BYTES,
            1000,
            handshake_timeout_s=0.5,
            keepalive_interval_s=1.0,
            keepalive_timeout_s=1.0,
        )
        ready["port"] = await server.listen("127.0.0.1:0")
        ready["server"] = server
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    assert started.is_set()
    running = Running(ready["port"], loop, ready["server"], probe)
    try:
        yield running
    finally:
        asyncio.run_coroutine_threadsafe(running.server.stop(0.1), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
