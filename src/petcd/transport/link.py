"""One peer connection carrying frames (`Link`), and `dial`: connect plus handshake.

A Link is an asyncio Protocol: bytes in go through a FrameDecoder, each frame is parsed and
handed to the link's `handler` (a `LinkHandler`) in order. Bytes out are whole frames written
to the asyncio transport; `paused` says the transport's write buffer is above its high-water
mark (the owner then stops writing and keeps its own bounded queue), and a write that stays
paused for `stall_timeout_s` closes the link (a peer that stopped reading, or a dead host that
never sends a RST, cannot hold our memory or our queue forever).

Failure rules:
- a malformed frame (bad length, bad protobuf, an empty body, or a handler raising
  FrameError) closes the link with a warning naming the peer; nothing else is affected;
- anything else a handler raises is a bug: it is given to `on_failure` (the transport keeps
  the first one and re-raises it from `stop()`), then re-raised to asyncio, which closes the
  connection.

`dial` connects (TCP, then TLS if the URL is https), sends Hello, waits for HelloAck, and turns
every failure into a typed error: PeerUnreachableError (refused, reset, timeout, TLS failure),
PeerClusterIdMismatchError, PeerHandshakeError. The whole of it is bounded by `timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Protocol, cast

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from petcd.errors import (
    FrameError,
    PeerClusterIdMismatchError,
    PeerHandshakeError,
    PeerUnreachableError,
    TransportConfigError,
)
from petcd.pb import transport_pb2 as tpb
from petcd.transport.frame import LENGTH_BYTES, FrameDecoder, frame_bytes
from petcd.transport.urls import PeerURL

log = logging.getLogger("petcd.transport")

PROTOCOL_VERSION = 1


class LinkHandler(Protocol):
    def frame_received(self, frame: tpb.Frame, size_bytes: int) -> None: ...

    def link_lost(self, exc: Exception | None) -> None: ...


class Link(asyncio.Protocol):
    """A framed connection. Invariant: after `close()` or loss, no frame reaches the handler."""

    def __init__(
        self,
        label: str,
        frame_bytes_max: int,
        on_failure: Callable[[BaseException], None],
        stall_timeout_s: float,
        handler: LinkHandler | None = None,
        on_made: Callable[[Link], None] | None = None,
    ) -> None:
        assert frame_bytes_max > 0
        assert stall_timeout_s > 0
        self.label = label
        self.handler = handler
        self.on_writable: Callable[[], None] | None = None
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.done = False
        self.lost = asyncio.get_running_loop().create_future()
        self._decoder = FrameDecoder(frame_bytes_max)
        self._on_failure = on_failure
        self._on_made = on_made
        self._stall_timeout_s = stall_timeout_s
        self._stall_timer: asyncio.TimerHandle | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._held = False
        self._backlog: list[memoryview] = []

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is not an asyncio.Transport subclass, but has its methods.
        assert hasattr(transport, "write") and hasattr(transport, "pause_reading")
        assert self.transport is None
        self.transport = cast(asyncio.Transport, transport)
        if self._on_made is not None:
            self._on_made(self)

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        try:
            payloads = self._decoder.feed(data)
        except FrameError as exc:
            self.protocol_error(exc.reason)
            return
        if self._held or self._backlog:
            self._backlog.extend(payloads)
            return
        self._dispatch(payloads)

    def _dispatch(self, payloads: list[memoryview]) -> None:
        for i, payload in enumerate(payloads):
            if self.done:
                return
            if self._held:
                self._backlog.extend(payloads[i:])
                return
            try:
                frame = tpb.Frame.FromString(payload)  # type: ignore[arg-type]
            except DecodeError as exc:
                self.protocol_error(f"undecodable frame: {exc}")
                return
            if frame.WhichOneof("body") is None:
                self.protocol_error("frame without a body")
                return
            handler = self.handler
            assert handler is not None, "a link receives frames only once it has a handler"
            try:
                handler.frame_received(frame, len(payload) + LENGTH_BYTES)
            except FrameError as exc:
                self.protocol_error(exc.reason)
                return
            except Exception as exc:
                self._on_failure(exc)
                raise

    def pause_writing(self) -> None:
        self.paused = True
        loop = asyncio.get_running_loop()
        self._stall_timer = loop.call_later(self._stall_timeout_s, self._stalled)

    def resume_writing(self) -> None:
        self.paused = False
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._wake_drainers(None)
        if self.on_writable is not None and not self.done:
            self.on_writable()

    def connection_lost(self, exc: Exception | None) -> None:
        self.done = True
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._wake_drainers(exc or ConnectionResetError("connection closed"))
        if not self.lost.done():
            self.lost.set_result(None)
        handler = self.handler
        if handler is not None:
            handler.link_lost(exc)

    # --- flow control of incoming frames -------------------------------------------------------

    def hold(self) -> None:
        """Stop handing frames to the handler (and reading) until `release()`.

        Frames already read stay in a backlog bounded by one read of the socket: with reading
        paused, no more data arrives.
        """
        if self._held or self.done:
            return
        self._held = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()

    def release(self) -> None:
        if not self._held or self.done:
            return
        self._held = False
        backlog = self._backlog
        self._backlog = []
        self._dispatch(backlog)
        transport = self.transport
        if not self._held and not self.done and transport is not None:
            transport.resume_reading()

    # --- writing and closing -------------------------------------------------------------------

    def write(self, data: bytes) -> bool:
        """Write whole frames; False (nothing written) once the link is closing."""
        transport = self.transport
        if self.done or transport is None or transport.is_closing():
            return False
        transport.write(data)
        return True

    def writelines(self, data: list[bytes]) -> bool:
        transport = self.transport
        if self.done or transport is None or transport.is_closing():
            return False
        transport.writelines(data)
        return True

    def write_frame(self, frame: tpb.Frame) -> bool:
        return self.write(frame_bytes(frame.SerializeToString()))

    @property
    def write_buffer_bytes(self) -> int:
        transport = self.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark; raises if the link is lost."""
        if self.done:
            raise ConnectionResetError("connection closed")
        if not self.paused:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def close(self) -> None:
        """Close after the write buffer is flushed; the handler sees no more frames."""
        self.done = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def abort(self) -> None:
        """Close at once, dropping unwritten bytes."""
        self.done = True
        transport = self.transport
        if transport is not None:
            transport.abort()

    def protocol_error(self, reason: str) -> None:
        log.warning("closing peer connection %s: %s", self.label, reason)
        self.abort()

    def _stalled(self) -> None:
        self._stall_timer = None
        if self.paused and not self.done:
            log.warning(
                "closing peer connection %s: its write buffer did not drain for %.1f s",
                self.label,
                self._stall_timeout_s,
            )
            self.abort()

    def _wake_drainers(self, exc: BaseException | None) -> None:
        waiters = self._drain_waiters
        self._drain_waiters = []
        for waiter in waiters:
            if waiter.done():
                continue
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)


class _AckWaiter:
    """The handler of a dialled link until its HelloAck arrives."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.future: asyncio.Future[tpb.HelloAck] = asyncio.get_running_loop().create_future()

    def frame_received(self, frame: tpb.Frame, size_bytes: int) -> None:
        if self.future.done():
            raise FrameError("frame after the handshake reply, before the stream started")
        if frame.WhichOneof("body") != "hello_ack":
            raise FrameError(f"expected a handshake reply, got {frame.WhichOneof('body')}")
        self.future.set_result(frame.hello_ack)

    def link_lost(self, exc: Exception | None) -> None:
        if not self.future.done():
            reason = f"connection closed during the handshake ({describe(exc)})"
            self.future.set_exception(PeerUnreachableError(self.target, reason))


def describe(exc: BaseException | None) -> str:
    if exc is None:
        return "closed by the peer"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, PeerUnreachableError) else text


async def dial(
    url: PeerURL,
    hello: tpb.Hello,
    *,
    ssl_context: ssl.SSLContext | None,
    timeout_s: float,
    frame_bytes_max: int,
    stall_timeout_s: float,
    on_failure: Callable[[BaseException], None],
) -> tuple[Link, tpb.HelloAck]:
    """Connect to `url`, exchange Hello/HelloAck; the returned link has no handler yet."""
    assert timeout_s > 0
    assert hello.protocol_version == PROTOCOL_VERSION and hello.kind != 0
    target = str(url)
    if url.tls and ssl_context is None:
        raise TransportConfigError(f"{target} is https but this transport has no TLS settings")
    loop = asyncio.get_running_loop()
    waiter = _AckWaiter(target)
    link: Link | None = None

    def factory() -> Link:
        return Link(target, frame_bytes_max, on_failure, stall_timeout_s, handler=waiter)

    try:
        async with asyncio.timeout(timeout_s):
            context = ssl_context if url.tls else None
            _, link = await loop.create_connection(
                factory,
                url.host,
                url.port,
                ssl=context,
                server_hostname=url.host if context is not None else None,
                ssl_handshake_timeout=timeout_s if context is not None else None,
            )
            link.write_frame(tpb.Frame(hello=hello))
            ack = await waiter.future
        check_ack(target, hello, ack)
    except BaseException as exc:
        # Nobody will await the waiter any more: no "exception was never retrieved" later.
        if not waiter.future.done():
            waiter.future.cancel()
        elif not waiter.future.cancelled():
            waiter.future.exception()
        if link is not None:
            link.abort()
        if isinstance(exc, TimeoutError):
            raise PeerUnreachableError(target, f"no handshake within {timeout_s:g} s") from None
        if isinstance(exc, OSError):  # refused, reset, unreachable, TLS verification
            raise PeerUnreachableError(target, describe(exc)) from None
        raise
    assert link is not None and link.handler is waiter
    link.handler = None
    return link, ack


def check_ack(target: str, hello: tpb.Hello, ack: tpb.HelloAck) -> None:
    """Raise the typed error for a refusal or an answer we cannot accept."""
    if ack.refusal == tpb.REFUSAL_CLUSTER_ID_MISMATCH:
        raise PeerClusterIdMismatchError(target, hello.cluster_id, ack.cluster_id)
    if ack.refusal != tpb.REFUSAL_NONE:
        raise PeerHandshakeError(target, ack.reason or tpb.Refusal.Name(ack.refusal))
    if ack.protocol_version != PROTOCOL_VERSION:
        raise PeerHandshakeError(target, f"peer speaks protocol version {ack.protocol_version}")
    if hello.cluster_id and ack.cluster_id and ack.cluster_id != hello.cluster_id:
        raise PeerClusterIdMismatchError(target, hello.cluster_id, ack.cluster_id)
    if hello.to and ack.member_id != hello.to:
        raise PeerHandshakeError(
            target, f"reached member {ack.member_id:x}, expected member {hello.to:x}"
        )
