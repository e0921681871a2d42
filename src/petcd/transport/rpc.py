"""Peer RPC: `register(method, handler)` on one member, `await call(peer, method, payload)` on
another. For the server's small needs between members: the member list for a joining member,
lease keep-alive / TTL forwarded to the leader, hash checks for the corruption check.

Calls go over a cached STREAM_RPC connection per (URL, expected member), multiplexed by request
id; requests and responses are single frames. The caller's timeout travels with the request,
and the handler is cancelled when it expires (or when the connection closes), so no handler
outlives the caller's interest.

Errors a caller sees (all typed, see petcd.errors):
- PeerUnreachableError: no connection (refused, reset, partitioned, unknown member id);
- PeerTimeoutError: no answer within the timeout (includes connecting);
- PeerClusterIdMismatchError / PeerHandshakeError: the handshake refused us;
- the handler's own PetcdError, rebuilt from its gRPC code and message (`errors.from_status`:
  the same class when its message is one of etcd's, else a PetcdError with that code);
- PeerRemoteError: the handler raised anything else, or the method is not registered.

Bounds: at most `rpc_inflight_max` calls in flight per connection on each side (the caller gets
PeerUnreachableError beyond it; the callee stops reading until one finishes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from petcd.errors import FrameError, PeerRemoteError, PeerUnreachableError, PetcdError, from_status
from petcd.pb import transport_pb2 as tpb
from petcd.transport.link import Link, describe

if TYPE_CHECKING:
    from petcd.transport.transport import Transport

log = logging.getLogger("petcd.transport")

Handler = Callable[[bytes], Awaitable[bytes]]
#: Handlers of requests that carry no timeout get this long.
HANDLER_TIMEOUT_DEFAULT_S = 30.0


class RpcClient:
    """The caller's side of one RPC connection (its link's handler)."""

    def __init__(self, target: str, link: Link, inflight_max: int) -> None:
        assert inflight_max > 0
        self.target = target
        self.link = link
        self.inflight_max = inflight_max
        self._pending: dict[int, asyncio.Future[tpb.RpcResponse]] = {}
        self._next_id = 1
        link.handler = self

    @property
    def usable(self) -> bool:
        return not self.link.done

    async def request(self, method: str, payload: bytes, timeout_s: float) -> tpb.RpcResponse:
        if self.link.done:
            raise PeerUnreachableError(self.target, "the connection closed")
        if len(self._pending) >= self.inflight_max:
            raise PeerUnreachableError(self.target, "too many calls in flight")
        request_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[tpb.RpcResponse] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self.link.drain()
            timeout_ms = max(1, min(int(timeout_s * 1000), 2**32 - 1))
            request = tpb.RpcRequest(
                id=request_id, method=method, payload=payload, timeout_ms=timeout_ms
            )
            if not self.link.write_frame(tpb.Frame(rpc_request=request)):
                raise PeerUnreachableError(self.target, "the connection closed")
            return await future
        except ConnectionError as exc:
            raise PeerUnreachableError(self.target, describe(exc)) from None
        finally:
            self._pending.pop(request_id, None)

    def frame_received(self, frame: tpb.Frame, size_bytes: int) -> None:
        if frame.WhichOneof("body") != "rpc_response":
            raise FrameError(f"unexpected {frame.WhichOneof('body')} on an RPC stream")
        response = frame.rpc_response
        future = self._pending.get(response.id)
        if future is not None and not future.done():
            future.set_result(response)

    def link_lost(self, exc: Exception | None) -> None:
        pending = list(self._pending.values())
        self._pending.clear()
        for future in pending:
            if not future.done():
                reason = f"connection lost ({describe(exc)})"
                future.set_exception(PeerUnreachableError(self.target, reason))

    def close(self) -> None:
        self.link.abort()


def result_of(target: str, method: str, response: tpb.RpcResponse) -> bytes:
    """The payload of a successful response; the typed error of a failed one."""
    status = response.status
    if status == tpb.RPC_OK:
        return bytes(response.payload)
    if status == tpb.RPC_PETCD_ERROR:
        raise from_status(response.error_code, response.error_message)
    if status == tpb.RPC_UNKNOWN_METHOD:
        raise PeerRemoteError(target, method, "no such method")
    assert status in (tpb.RPC_HANDLER_FAILED, tpb.RPC_DEADLINE), status
    raise PeerRemoteError(target, method, response.error_message or tpb.RpcStatus.Name(status))


class RpcServerSession:
    """The callee's side of one accepted RPC connection (its link's handler)."""

    def __init__(self, owner: Transport, link: Link, caller_id: int) -> None:
        self.owner = owner
        self.link = link
        self.caller_id = caller_id
        self.label = f"{caller_id:x}" if caller_id else link.label
        self._tasks: set[asyncio.Task[None]] = set()

    def frame_received(self, frame: tpb.Frame, size_bytes: int) -> None:
        if frame.WhichOneof("body") != "rpc_request":
            raise FrameError(f"unexpected {frame.WhichOneof('body')} on an RPC stream")
        request = frame.rpc_request
        owner = self.owner
        if self.caller_id and owner.faults.blocks_in(self.caller_id):
            owner.stats_for(self.caller_id).fault_drops += 1
            return  # partitioned: the caller times out, as on a real network
        handler = owner.handler_for(request.method)
        if handler is None:
            self._respond(tpb.RpcResponse(id=request.id, status=tpb.RPC_UNKNOWN_METHOD))
            return
        task = owner.spawn(self._serve(request, handler), f"rpc-{request.method}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        if len(self._tasks) >= owner.limits.rpc_inflight_max:
            self.link.hold()

    async def _serve(self, request: tpb.RpcRequest, handler: Handler) -> None:
        timeout_s = request.timeout_ms / 1000 if request.timeout_ms else HANDLER_TIMEOUT_DEFAULT_S
        response = tpb.RpcResponse(id=request.id)
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                payload = await handler(bytes(request.payload))
            assert isinstance(payload, bytes), "an RPC handler must return bytes"
            response.payload = payload
        except PetcdError as exc:
            response.status = tpb.RPC_PETCD_ERROR
            response.error_code = int(exc.code)
            response.error_message = exc.message
        except TimeoutError as exc:
            response.status = tpb.RPC_DEADLINE if deadline.expired() else tpb.RPC_HANDLER_FAILED
            response.error_message = f"handler did not finish: {describe(exc)}"
        except AssertionError:
            raise  # a bug: it stops the transport (recorded, re-raised by stop())
        except Exception as exc:
            log.exception("peer RPC handler %r failed", request.method)
            response.status = tpb.RPC_HANDLER_FAILED
            response.error_message = describe(exc)
        self._respond(response)

    def _respond(self, response: tpb.RpcResponse) -> None:
        encoded_bytes = response.ByteSize()
        if encoded_bytes + 64 > self.owner.limits.frame_bytes_max:
            log.warning("peer RPC response of %d bytes is too large", encoded_bytes)
            response = tpb.RpcResponse(
                id=response.id,
                status=tpb.RPC_HANDLER_FAILED,
                error_message=f"response of {encoded_bytes} bytes exceeds the frame limit",
            )
        self.link.write_frame(tpb.Frame(rpc_response=response))

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if len(self._tasks) < self.owner.limits.rpc_inflight_max:
            self.link.release()

    def link_lost(self, exc: Exception | None) -> None:
        for task in list(self._tasks):
            task.cancel()
