"""The asyncio client's streams: Watch (many watches on one stream) and LeaseKeepAlive.

`AsyncWatchStream` owns one bidi Watch call and a reader task; `WatchDemux` (sans-I/O) decides
which watch each response belongs to. Each `AsyncWatch` has a bounded queue: when a consumer
falls behind, the reader waits, and gRPC flow control slows the server — nothing is dropped,
but every watch on that stream waits too, so consume or cancel your watches (or give a busy
watch its own stream with `client.watch_stream()`). When the stream breaks with Unavailable,
the reader reconnects (next endpoint) and resumes every watch where it left off, for up to
30 s (or the client's timeout if longer); then each watch ends with the error.

`AsyncLeaseKeepAliveStream` matches each LeaseKeepAliveResponse to the oldest waiter for that
lease ID. `AsyncKeepAlive` renews one lease every TTL/3 s in a task until stopped, until the
server reports the lease gone (TTL 0: `expired`), or until renewals fail for longer than
the lease's TTL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc

from petcd import errors
from petcd.client import transport as tp
from petcd.client.requests import watch_create_request
from petcd.client.watchdemux import Delivery, DeliveryKind, WatchDemux, WatchState
from petcd.pb import rpc_pb2

if TYPE_CHECKING:
    from petcd.client.aio import AsyncClient

WATCH_QUEUE_MAX = 1024  # responses buffered per watch before the stream waits for the consumer
WAITERS_MAX = 100_000  # keep-alive requests awaiting an answer on one stream
WATCH_OUTAGE_S = 30.0  # a broken watch stream is retried this long (at least the client timeout)
_END = object()


class AsyncWatch:
    """One watch: an async iterator of WatchResponse (events or progress notifications).

    Iteration ends after `cancel()`; it raises CompactedError when the watch's next revision
    has been compacted (`compact_revision` tells which), or the mapped error of the server's
    cancel_reason.
    """

    def __init__(self, stream: AsyncWatchStream, state: WatchState) -> None:
        self._stream = stream
        self._state = state
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=WATCH_QUEUE_MAX)
        self._created: asyncio.Future[rpc_pb2.WatchResponse] = (
            asyncio.get_running_loop().create_future()
        )
        self._finished = False

    @property
    def watch_id(self) -> int:
        return self._state.watch_id

    @property
    def created_revision(self) -> int:
        """The store's revision when the watch was created."""
        return self._state.created_revision

    @property
    def compact_revision(self) -> int:
        return self._state.compact_revision

    @property
    def next_revision(self) -> int:
        """The first revision this watch has not delivered yet."""
        return self._state.next_revision

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> rpc_pb2.WatchResponse:
        if self._finished:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _END:
            self._finished = True
            raise StopAsyncIteration
        if isinstance(item, errors.PetcdError):
            self._finished = True
            raise item
        assert isinstance(item, rpc_pb2.WatchResponse)
        return item

    async def cancel(self) -> None:
        """Stop watching; iteration ends (undelivered responses are dropped)."""
        await self._stream.cancel(self._state)

    def deliver_nowait_end(self) -> None:
        """Make the iterator end now, dropping what it had not consumed."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_END)

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.cancel()


class AsyncWatchStream:
    """One Watch stream shared by many watches; reconnects and resumes them on Unavailable."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._demux = WatchDemux()
        self._call: Any = None
        self._endpoint = ""
        self._reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._open_lock = asyncio.Lock()
        self.closed = False

    async def watch(self, key: bytes | str, **kwargs: Any) -> AsyncWatch:
        """Like `AsyncClient.watch`, on this stream."""
        return await self.watch_request(watch_create_request(key, **kwargs))

    async def watch_request(self, request: rpc_pb2.WatchCreateRequest) -> AsyncWatch:
        if self.closed:
            raise errors.CanceledError("petcd: watch stream is closed")
        state = WatchState(request)
        watch = AsyncWatch(self, state)
        state.sink = watch
        await self._ensure_open()
        await self._send(self._demux.create(state))
        try:
            async with asyncio.timeout(self._client.timeout):
                await asyncio.shield(watch._created)
        except TimeoutError:
            await self.cancel(state)
            raise errors.DeadlineExceededError("petcd: watch was not created in time") from None
        except asyncio.CancelledError:
            await self.cancel(state)
            raise
        assert state.created
        return watch

    async def request_progress(self) -> None:
        """Ask for a progress notification; it reaches every watch of the stream."""
        await self._ensure_open()
        await self._send(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    async def cancel(self, state: WatchState) -> None:
        request = self._demux.cancel(state)
        watch = state.sink
        assert isinstance(watch, AsyncWatch)
        watch.deliver_nowait_end()
        if request is not None and self._call is not None:
            with contextlib.suppress(errors.PetcdError):
                await self._send(request)

    async def close(self) -> None:
        """Cancel the stream; every live watch ends."""
        if self.closed:
            return
        self.closed = True
        self._client.forget_stream(self)
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for delivery in self._demux.fail_all(errors.CanceledError("petcd: watch stream is closed")):
            self._deliver_end(delivery)

    # --- internals ------------------------------------------------------------------------------

    def _open_call(self) -> None:
        self._endpoint = self._client.endpoint
        channel = self._client.channel(self._endpoint)
        stream = channel.stream_stream(
            tp.WATCH_PATH,
            request_serializer=rpc_pb2.WatchRequest.SerializeToString,
            response_deserializer=rpc_pb2.WatchResponse.FromString,
        )
        self._call = stream(metadata=self._client.metadata)

    async def _ensure_open(self) -> None:
        async with self._open_lock:  # two first watches must not open two calls
            if self._call is not None:
                return
            if self._client._username is not None and self._client._token is None:
                await self._client.refresh_token()
            self._open_call()
            self._reader = asyncio.create_task(self._read_loop(), name="petcd-watch-reader")
        assert self._call is not None

    async def _send(self, request: rpc_pb2.WatchRequest) -> None:
        """Write one request. A failed write is left to the reader, which sees the same broken
        call and resumes (the request is re-created from the demux) or fails every watch."""
        async with self._write_lock:
            call = self._call
            if call is None:
                return
            with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
                await call.write(request)

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        outage_started: float | None = None
        while not self.closed:
            error, received = await self._pump()
            if self.closed:
                return
            now = loop.time()
            if received or outage_started is None:
                outage_started = now
            if not self._resumable(error) or now - outage_started > max(
                self._client.timeout, WATCH_OUTAGE_S
            ):
                for delivery in self._demux.fail_all(error):
                    await self._deliver(delivery)
                self._call = None
                self._reader = None
                return
            self._client.failover(self._endpoint)
            await asyncio.sleep(tp.BACKOFF_S)
            if isinstance(error, errors.InvalidAuthTokenError | errors.AuthOldRevisionError):
                with contextlib.suppress(errors.PetcdError):
                    await self._client.refresh_token()
            self._open_call()
            for request in self._demux.disconnected():
                await self._send(request)

    async def _pump(self) -> tuple[errors.PetcdError, bool]:
        """Read and route responses until the call ends: why it ended, whether any arrived."""
        call = self._call
        received = False
        try:
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    return errors.UnavailableError(
                        "petcd: watch stream closed by the server"
                    ), received
                received = True
                deliveries, sends = self._demux.receive(response)
                for delivery in deliveries:
                    await self._deliver(delivery)
                for request in sends:
                    await self._send(request)
        except grpc.RpcError as exc:
            return tp.error_from_rpc(exc), received

    def _resumable(self, error: errors.PetcdError) -> bool:
        if isinstance(error, errors.InvalidAuthTokenError | errors.AuthOldRevisionError):
            return self._client._username is not None
        return error.code == errors.GrpcCode.UNAVAILABLE

    async def _deliver(self, delivery: Delivery) -> None:
        watch = delivery.state.sink
        assert isinstance(watch, AsyncWatch)
        kind = delivery.kind
        if kind is DeliveryKind.CREATED:
            assert delivery.response is not None
            if not watch._created.done():
                watch._created.set_result(delivery.response)
        elif kind is DeliveryKind.CREATE_FAILED:
            assert delivery.error is not None
            if not watch._created.done():
                watch._created.set_exception(delivery.error)
        elif kind is DeliveryKind.RESPONSE:
            await watch._queue.put(delivery.response)
        elif kind is DeliveryKind.ERROR:
            await watch._queue.put(delivery.error)
        else:
            assert kind is DeliveryKind.END
            await watch._queue.put(_END)

    @staticmethod
    def _deliver_end(delivery: Delivery) -> None:
        watch = delivery.state.sink
        assert isinstance(watch, AsyncWatch)
        if not watch._created.done():
            watch._created.set_exception(delivery.error or errors.CanceledError())
        watch.deliver_nowait_end()


class AsyncLeaseKeepAliveStream:
    """One LeaseKeepAlive stream: `keep_alive(id)` sends a renewal and awaits its answer."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._call: Any = None
        self._endpoint = ""
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[
            int, collections.deque[asyncio.Future[rpc_pb2.LeaseKeepAliveResponse]]
        ] = {}
        self._waiting = 0
        self._write_lock = asyncio.Lock()
        self._open_lock = asyncio.Lock()
        self.closed = False

    async def keep_alive(self, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
        """Renew `lease_id` once. TTL 0 in the answer means the lease no longer exists."""
        if self.closed:
            raise errors.CanceledError("petcd: keep-alive stream is closed")
        assert self._waiting < WAITERS_MAX, "too many keep-alive requests in flight"
        if self._call is None:
            async with self._open_lock:  # concurrent first renewals must not open two calls
                if self._call is None:
                    await self._open()
        future: asyncio.Future[rpc_pb2.LeaseKeepAliveResponse] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiters.setdefault(lease_id, collections.deque()).append(future)
        self._waiting += 1
        async with self._write_lock:
            # A failed write is left to the reader: it sees the broken call and fails every waiter.
            with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
                await self._call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
        try:
            async with asyncio.timeout(self._client.timeout):
                return await future
        except TimeoutError:
            raise errors.DeadlineExceededError("petcd: no keep-alive answer in time") from None

    async def _open(self) -> None:
        if self._client._username is not None and self._client._token is None:
            await self._client.refresh_token()
        self._endpoint = self._client.endpoint
        stream = self._client.channel(self._endpoint).stream_stream(
            tp.LEASE_KEEPALIVE_PATH,
            request_serializer=rpc_pb2.LeaseKeepAliveRequest.SerializeToString,
            response_deserializer=rpc_pb2.LeaseKeepAliveResponse.FromString,
        )
        self._call = stream(metadata=self._client.metadata)
        self._reader = asyncio.create_task(
            self._read_loop(self._call), name="petcd-keepalive-reader"
        )

    async def _read_loop(self, call: Any) -> None:
        try:
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    error: errors.PetcdError = errors.UnavailableError(
                        "petcd: keep-alive stream closed"
                    )
                    break
                queue = self._waiters.get(response.ID)
                if not queue:
                    continue  # an answer nobody waits for any more (timed out)
                future = queue.popleft()
                self._waiting -= 1
                if not future.done():
                    future.set_result(response)
        except grpc.RpcError as exc:
            error = tp.error_from_rpc(exc)
        if call is self._call:
            if error.code == errors.GrpcCode.UNAVAILABLE:
                self._client.failover(self._endpoint)
            self._call = None
            self._fail(error)

    def _fail(self, error: errors.PetcdError) -> None:
        for queue in self._waiters.values():
            for future in queue:
                if not future.done():
                    future.set_exception(error)
        self._waiters.clear()
        self._waiting = 0

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._client.forget_stream(self)
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._fail(errors.CanceledError("petcd: keep-alive stream is closed"))


class AsyncKeepAlive:
    """Keeps one lease alive from a task: renews every `interval` (default TTL/3) seconds."""

    def __init__(self, client: AsyncClient, lease_id: int, interval: float | None = None) -> None:
        assert interval is None or interval > 0
        self._client = client
        self.lease_id = lease_id
        self.interval = interval
        self.ttl = 0  # as of the last renewal
        self.renewals = 0
        self.expired = False  # the server said the lease no longer exists
        self.error: errors.PetcdError | None = None
        self._stream: AsyncLeaseKeepAliveStream | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Renew once now (so errors surface here), then keep renewing in a task."""
        assert self._task is None, "already started"
        self._stream = self._client.lease_keep_alive_stream()
        response = await self._stream.keep_alive(self.lease_id)
        if response.TTL <= 0:
            await self._stream.close()
            self._client.forget_keepalive(self)
            raise errors.LeaseNotFoundError()
        self._record(response)
        self._task = asyncio.create_task(self._run(), name=f"petcd-keepalive-{self.lease_id:x}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _record(self, response: rpc_pb2.LeaseKeepAliveResponse) -> None:
        assert self.lease_id == response.ID
        self.ttl = response.TTL
        self.renewals += 1

    def _pause_s(self) -> float:
        return self.interval if self.interval is not None else max(self.ttl / 3.0, 0.1)

    async def _run(self) -> None:
        assert self._stream is not None
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._pause_s()):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            try:
                response = await self._stream.keep_alive(self.lease_id)
            except errors.PetcdError as error:
                # The lease lives on for its TTL: keep trying other endpoints until it is over.
                if error.code != errors.GrpcCode.UNAVAILABLE or loop.time() - last_ok > max(
                    self.ttl, 1
                ):
                    self.error = error
                    return
                continue
            if response.TTL <= 0:
                self.expired = True
                return
            self._record(response)
            last_ok = loop.time()

    async def stop(self) -> None:
        """Stop renewing (the lease itself stays until it expires or is revoked)."""
        self._stop.set()
        if self._task is not None:
            await self._task
        if self._stream is not None:
            await self._stream.close()
        self._client.forget_keepalive(self)
        assert not self.running

    async def __aenter__(self) -> AsyncKeepAlive:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
