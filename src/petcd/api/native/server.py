"""The native gRPC front end: asyncio protocols over the libnghttp2 extension (`_h2`).

Sockets (and, later, TLS) stay in asyncio/uvloop; HTTP/2 and gRPC framing live in `_h2`, which
hands this module one batch of events per `data_received` and takes responses back through
calls that only queue bytes. One `loop.call_soon` flush per connection per loop iteration turns
everything queued into one `transport.write`. Python never runs per frame.

Calls run the same handlers as the grpcio front end (petcd.api.rpc): a unary call is one task
running `handler(request, ctx)`; server streaming `handler(request, send, ctx)`; bidi streaming
`handler(requests, send, ctx)`. Statuses: a PetcdError becomes its code and message; any other
exception UNKNOWN ("Unexpected <class>: text", as grpcio says); a deadline (`grpc-timeout`)
cancels the handler and answers DEADLINE_EXCEEDED; a client RST_STREAM cancels the handler.

Invariants and bounds:
- `calls` holds exactly the running call tasks of a connection (a task removes itself);
- a stream's `send` waits once more than 256 KiB of its output is queued, until nghttp2 has
  sent it (flow control): one slow reader blocks only its own stream;
- bidi request messages queue in Python at most up to the stream's receive window, because the
  extension reopens that window only as the handler takes messages (`consume`);
- when the transport's buffer is full (the peer does not read) the connection stops reading, so
  it takes no new requests until the peer drains its socket;
- connections that send no HTTP/2 SETTINGS within `handshake_timeout_s` are closed (slowloris);
  keepalive pings every `keepalive_interval_s` close peers that stop answering.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import logging
import os
import ssl
from collections.abc import Mapping
from typing import Any, cast

from petcd import errors
from petcd.api.native import _h2
from petcd.api.rpc import Kind, Method

log = logging.getLogger("petcd.api.native")

EV_REQUEST = 0
EV_OPEN = 1
EV_MESSAGE = 2
EV_HALF_CLOSE = 3
EV_CANCEL = 4
_KIND_CODES = {Kind.UNARY: 0, Kind.SERVER_STREAM: 1, Kind.BIDI_STREAM: 2}
#: gRPC's receive limit sits 512 KiB above --max-request-bytes, as in etcd (and grpc_frontend).
RECEIVE_OVERHEAD_BYTES = 512 * 1024
#: Streams per connection: etcd's default is unlimited; we cap it to bound memory per client.
STREAMS_PER_CONNECTION_MAX = 4096
_INTERNAL = int(errors.GrpcCode.INTERNAL)
_UNKNOWN = int(errors.GrpcCode.UNKNOWN)
_UNAVAILABLE = int(errors.GrpcCode.UNAVAILABLE)
_DEADLINE = int(errors.GrpcCode.DEADLINE_EXCEEDED)
#: Lazily dropped deadline entries are purged once the heap outgrows live calls by this much.
_DEADLINE_SLACK = 1024


class _Context:
    """petcd's CallContext: the call's metadata and the peer address."""

    __slots__ = ("_metadata", "_pairs", "_peer")

    def __init__(self, pairs: list[tuple[str, str]] | None, peer: str) -> None:
        self._pairs = pairs
        self._metadata: dict[str, str] | None = None
        self._peer = peer

    def metadata(self) -> Mapping[str, str]:
        if self._metadata is None:
            self._metadata = dict(self._pairs) if self._pairs else {}
        return self._metadata

    def peer(self) -> str:
        return self._peer


class _DecodeError(Exception):
    """A request message that does not parse (answered INTERNAL, as grpcio does)."""


class _Requests:
    """The request iterator of a bidi call: messages as the extension delivered them."""

    __slots__ = ("_conn", "_decode", "_ended", "_queue", "_sid", "_waiter")

    def __init__(self, conn: _Connection, sid: int, decode: Any) -> None:
        self._conn = conn
        self._sid = sid
        self._decode = decode
        self._queue: collections.deque[bytes] = collections.deque()
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None

    def put(self, payload: bytes) -> None:
        assert not self._ended, "no message after the client half-closed"
        self._queue.append(payload)
        self._wake()

    def end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> _Requests:
        return self

    async def __anext__(self) -> Any:
        while not self._queue:
            if self._ended:
                raise StopAsyncIteration
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        payload = self._queue.popleft()
        self._conn.h2.consume(self._sid, len(payload) + 5)
        try:
            return self._decode(payload)
        except Exception as exc:
            raise _DecodeError() from exc


class _Sender:
    """`send` for a streaming call: queue one message, wait while the stream is over water."""

    __slots__ = ("_conn", "_sid")

    def __init__(self, conn: _Connection, sid: int) -> None:
        self._conn = conn
        self._sid = sid

    async def __call__(self, message: Any) -> None:
        conn = self._conn
        payload = message if type(message) is bytes else message.SerializeToString()
        state = conn.h2.send_message(self._sid, payload)
        conn.schedule_flush()
        if state == 0:
            return
        if state < 0:
            raise asyncio.CancelledError()  # the stream is gone: the call is over
        waiter = conn.loop.create_future()
        conn.writers[self._sid] = waiter
        await waiter


class _Connection(asyncio.Protocol):
    """One client connection: feeds the extension, runs calls, flushes once per iteration."""

    def __init__(self, server: NativeServer) -> None:
        self.server = server
        self.loop = server.loop
        self.h2 = _h2.Connection(
            server.table,
            server.max_message_bytes,
            server.max_concurrent_streams,
        )
        self.transport: asyncio.Transport | None = None
        self.calls: dict[int, asyncio.Task[None]] = {}
        self.requests: dict[int, _Requests] = {}
        self.writers: dict[int, asyncio.Future[None]] = {}
        self.expired: set[int] = set()
        self.deadlines: list[tuple[float, int, asyncio.Task[None]]] = []
        self.deadline_timer: asyncio.TimerHandle | None = None
        self.deadline_at = 0.0
        self.handshake_timer: asyncio.TimerHandle | None = None
        self.keepalive_timer: asyncio.TimerHandle | None = None
        self.flush_scheduled = False
        self.write_paused = False
        self.closing = False
        self.peer = ""
        self.ctx = _Context(None, "")

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple):
            host = str(peername[0])
            self.peer = (
                f"ipv6:[{host}]:{peername[1]}" if ":" in host else f"ipv4:{host}:{peername[1]}"
            )
        self.ctx = _Context(None, self.peer)
        self.server.connections.add(self)
        self.handshake_timer = self.loop.call_later(
            self.server.handshake_timeout_s, self._check_handshake
        )
        if self.server.keepalive_interval_s > 0:
            self.keepalive_timer = self.loop.call_later(
                self.server.keepalive_interval_s, self._keepalive
            )
        # Our SETTINGS wait for the client's first bytes: a peer that turns out not to speak
        # HTTP/2 (an HTTP/1.1 request) must not get HTTP/2 frames first.

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.feed(data)
        except _h2.ProtocolError as exc:
            log.debug("closing connection from %s: %s", self.peer, exc)
            self._flush()
            self._close()
            return
        if events:
            self._dispatch(events)
        self.schedule_flush()

    def eof_received(self) -> bool | None:
        self._close()
        return None

    def pause_writing(self) -> None:
        # The peer does not read: stop taking new requests until it does.
        self.write_paused = True
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.resume_reading()
        self.schedule_flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.transport = None
        self.server.connections.discard(self)
        for timer in (self.handshake_timer, self.keepalive_timer, self.deadline_timer):
            if timer is not None:
                timer.cancel()
        for task in list(self.calls.values()):
            task.cancel()
        for waiter in self.writers.values():
            if not waiter.done():
                waiter.cancel()
        self.writers.clear()

    # ------------------------------------------------------------ dispatch

    def _dispatch(self, events: list[tuple[int, int, int, Any, float, Any]]) -> None:
        methods = self.server.methods
        create_task = self.loop.create_task
        calls = self.calls
        for kind, sid, index, payload, timeout_s, metadata in events:
            if kind == EV_REQUEST:
                method, decode = methods[index]
                try:
                    request = decode(payload)
                except Exception:
                    self.h2.finish(sid, _INTERNAL, "Exception deserializing request!")
                    continue
                ctx = self.ctx if metadata is None else _Context(metadata, self.peer)
                if method.kind is Kind.UNARY:
                    task = create_task(self._unary(sid, method, request, ctx))
                else:
                    task = create_task(self._server_stream(sid, method, request, ctx))
                calls[sid] = task
                if timeout_s > 0.0:
                    self._add_deadline(sid, task, timeout_s)
            elif kind == EV_MESSAGE:
                requests = self.requests.get(sid)
                if requests is not None:
                    requests.put(payload)
            elif kind == EV_OPEN:
                method, decode = methods[index]
                ctx = self.ctx if metadata is None else _Context(metadata, self.peer)
                requests = _Requests(self, sid, decode)
                self.requests[sid] = requests
                task = create_task(self._bidi(sid, method, requests, ctx))
                calls[sid] = task
                if timeout_s > 0.0:
                    self._add_deadline(sid, task, timeout_s)
            elif kind == EV_HALF_CLOSE:
                requests = self.requests.get(sid)
                if requests is not None:
                    requests.end()
            else:
                assert kind == EV_CANCEL, kind
                running = calls.get(sid)
                if running is not None:
                    running.cancel()

    async def _unary(self, sid: int, method: Method, request: Any, ctx: _Context) -> None:
        try:
            response = await method.handler(request, ctx)
            payload = response if type(response) is bytes else response.SerializeToString()
            self.h2.respond(sid, payload)
        except BaseException as exc:
            self._fail(sid, exc)
        finally:
            del self.calls[sid]
            if self.expired:  # a handler may swallow its cancellation and still return
                self.expired.discard(sid)
            self.schedule_flush()

    async def _server_stream(self, sid: int, method: Method, request: Any, ctx: _Context) -> None:
        try:
            await method.handler(request, _Sender(self, sid), ctx)
            self.h2.finish(sid, 0)
        except BaseException as exc:
            self._fail(sid, exc)
        finally:
            del self.calls[sid]
            self.writers.pop(sid, None)
            self.schedule_flush()

    async def _bidi(self, sid: int, method: Method, requests: _Requests, ctx: _Context) -> None:
        try:
            await method.handler(requests, _Sender(self, sid), ctx)
            self.h2.finish(sid, 0)
        except BaseException as exc:
            self._fail(sid, exc)
        finally:
            del self.calls[sid]
            self.requests.pop(sid, None)
            self.writers.pop(sid, None)
            self.schedule_flush()

    def _fail(self, sid: int, exc: BaseException) -> None:
        """The one place a call's exception becomes a gRPC status."""
        if isinstance(exc, AssertionError):
            raise exc  # our bug: never answered as a status
        if isinstance(exc, errors.PetcdError):
            self.h2.finish(sid, int(exc.code), exc.message)
        elif isinstance(exc, asyncio.CancelledError):
            if sid in self.expired:
                self.expired.discard(sid)
                self.h2.finish(sid, _DEADLINE, "Deadline Exceeded")
            elif self.closing:
                self.h2.finish(sid, _UNAVAILABLE, "petcd: server is shutting down")
            # otherwise the client reset the stream: nobody to answer
        elif isinstance(exc, _DecodeError):
            self.h2.finish(sid, _INTERNAL, "Exception deserializing request!")
        elif isinstance(exc, Exception):
            log.exception("handler failed", exc_info=exc)
            self.h2.finish(sid, _UNKNOWN, f"Unexpected {type(exc)}: {exc}")
        else:
            raise exc  # KeyboardInterrupt, SystemExit: not ours to swallow

    # ------------------------------------------------------------ deadlines

    def _add_deadline(self, sid: int, task: asyncio.Task[None], timeout_s: float) -> None:
        when = self.loop.time() + timeout_s
        deadlines = self.deadlines
        calls = self.calls
        # Calls mostly end in the order they came: drop ended ones from the top as we go, so
        # the heap stays about as large as the calls in flight.
        while deadlines and calls.get(deadlines[0][1]) is not deadlines[0][2]:
            heapq.heappop(deadlines)
        if len(deadlines) > 2 * len(calls) + _DEADLINE_SLACK:  # one long call holds the top
            self.deadlines = deadlines = [d for d in deadlines if calls.get(d[1]) is d[2]]
            heapq.heapify(deadlines)
        heapq.heappush(deadlines, (when, sid, task))
        assert len(deadlines) <= 2 * len(calls) + _DEADLINE_SLACK + 1
        if self.deadline_timer is None or when < self.deadline_at:
            self._arm_deadline(when)

    def _arm_deadline(self, when: float) -> None:
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
        self.deadline_at = when
        self.deadline_timer = self.loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self.deadline_timer = None
        now = self.loop.time()
        deadlines = self.deadlines
        calls = self.calls
        while deadlines and deadlines[0][0] <= now:
            _, sid, task = heapq.heappop(deadlines)
            if calls.get(sid) is task and not task.done():
                self.expired.add(sid)
                task.cancel()
        if deadlines:
            self._arm_deadline(deadlines[0][0])

    # ------------------------------------------------------------ output

    def schedule_flush(self) -> None:
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        transport = self.transport
        if transport is None or self.write_paused:
            return
        data, writable = self.h2.drain()
        if data:
            transport.write(data)
        for sid in writable:
            waiter = self.writers.pop(sid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        if self.h2.want_close():
            self._close()
        elif data and self.h2.want_write() and not self.write_paused:
            # drain() stops after a bounded number of frames; go on next iteration. Only after
            # progress: nghttp2 may "want to write" a stream that flow control holds back.
            self.schedule_flush()

    def _close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    # ------------------------------------------------------------ timers, shutdown

    def _check_handshake(self) -> None:
        if not self.h2.got_settings:
            log.debug("closing %s: no HTTP/2 settings in time", self.peer)
            self._abort()

    def _keepalive(self) -> None:
        acked = self.h2.pings_acked
        self.h2.ping()
        self._flush()
        self.keepalive_timer = self.loop.call_later(
            self.server.keepalive_timeout_s, self._check_ping, acked
        )

    def _check_ping(self, acked_before: int) -> None:
        if self.h2.pings_acked == acked_before:
            log.info("closing %s: keepalive ping not acknowledged", self.peer)
            self._abort()
            return
        self.keepalive_timer = self.loop.call_later(
            self.server.keepalive_interval_s, self._keepalive
        )

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def begin_shutdown(self) -> None:
        """GOAWAY: finish what started, take nothing new."""
        self.closing = True
        self.h2.goaway()
        self.schedule_flush()


class NativeServer:
    """The native front end: serves a method table on any number of listening addresses."""

    def __init__(
        self,
        methods: list[Method],
        max_request_bytes: int,
        max_concurrent_streams: int,
        *,
        keepalive_interval_s: float = 7200.0,
        keepalive_timeout_s: float = 20.0,
        handshake_timeout_s: float = 10.0,
    ) -> None:
        assert max_request_bytes > 0
        assert max_concurrent_streams > 0
        assert handshake_timeout_s > 0 and keepalive_timeout_s > 0
        self.loop = asyncio.get_running_loop()
        self.methods: list[tuple[Method, Any]] = []
        self.table: dict[bytes, int] = {}
        for method in methods:
            self.table[method.path.encode()] = len(self.methods) * 4 + _KIND_CODES[method.kind]
            self.methods.append((method, method.request_class.FromString))
        self.max_message_bytes = max_request_bytes + RECEIVE_OVERHEAD_BYTES
        self.max_concurrent_streams = min(max_concurrent_streams, STREAMS_PER_CONNECTION_MAX)
        self.keepalive_interval_s = keepalive_interval_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.handshake_timeout_s = handshake_timeout_s
        self.connections: set[_Connection] = set()
        self.listeners: list[asyncio.Server] = []

    async def listen(self, address: str, tls: ssl.SSLContext | None = None) -> int:
        """Serve on `host:port`, `[v6]:port` or `unix:path`; the bound port (0 for unix).

        With `tls`, connections are TLS (Python's ssl through asyncio) offering ALPN "h2".
        """
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
        if address.startswith("unix:"):
            path = address[len("unix:") :]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            listener = await self.loop.create_unix_server(lambda: _Connection(self), path, ssl=tls)
            self.listeners.append(listener)
            return 0
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        listener = await self.loop.create_server(
            lambda: _Connection(self), host, int(port), reuse_address=True, backlog=1024, ssl=tls
        )
        self.listeners.append(listener)
        bound = listener.sockets[0].getsockname()
        return int(bound[1])

    async def stop(self, grace: float | None = None) -> None:
        """Stop listening, GOAWAY every connection, wait up to `grace` s, then cut the rest."""
        for listener in self.listeners:
            listener.close()
        connections = list(self.connections)
        for conn in connections:
            conn.begin_shutdown()
        tasks = [task for conn in connections for task in conn.calls.values()]
        if tasks and grace:
            await asyncio.wait(tasks, timeout=grace)
        for conn in connections:
            for task in list(conn.calls.values()):
                task.cancel()
        pending = [task for conn in connections for task in conn.calls.values()]
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        for conn in connections:
            conn._flush()
            conn._close()
        for listener in self.listeners:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.wait_closed(), timeout=1.0)
