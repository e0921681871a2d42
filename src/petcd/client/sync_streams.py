"""The sync client's streams: Watch (many watches on one stream) and LeaseKeepAlive.

Each stream is one bidi gRPC call fed from a bounded request queue, with one reader thread
that routes responses. `WatchDemux` (sans-I/O, shared with the asyncio client) decides which
watch a response belongs to; the demux is touched only under the stream's lock, and
deliveries happen outside it, so a slow consumer never blocks `watch()` or `cancel()`.

Each `Watch` has a bounded queue: when its consumer falls behind, the reader waits and gRPC
flow control slows the server — nothing is dropped, but every watch on that stream waits
too, so consume or cancel your watches (or give a busy watch its own `client.watch_stream()`).
When the stream breaks with Unavailable, the reader reconnects (next endpoint) and resumes
every watch where it left off, for up to 30 s (or the client's timeout if longer); then each
watch ends with the error.

`KeepAlive` renews one lease every TTL/3 s from a thread until stopped, until the server
reports the lease gone (TTL 0: `expired`), or until renewals fail for longer than its TTL.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc

from petcd import errors
from petcd.client import transport as tp
from petcd.client.requests import watch_create_request
from petcd.client.watchdemux import Delivery, DeliveryKind, WatchDemux, WatchState
from petcd.pb import rpc_pb2

if TYPE_CHECKING:
    from petcd.client.sync import Client

WATCH_QUEUE_MAX = 1024  # responses buffered per watch before the stream waits for the consumer
REQUEST_QUEUE_MAX = 4096  # requests waiting for gRPC to send them, per stream
WAITERS_MAX = 100_000  # keep-alive requests awaiting an answer on one stream
WATCH_OUTAGE_S = 30.0  # a broken watch stream is retried this long (at least the client timeout)
JOIN_TIMEOUT_S = 10.0
_END = object()
_CLOSE = None  # ends a request iterator


def _request_iterator(requests: queue.Queue[Any]) -> Iterator[Any]:
    """What gRPC sends on a stream: items from `requests` until the close marker."""
    while True:
        item = requests.get()
        if item is _CLOSE:
            return
        yield item


class Watch:
    """One watch: an iterator of WatchResponse (events or progress notifications).

    Iteration ends after `cancel()`; it raises CompactedError when the watch's next revision
    has been compacted (`compact_revision` tells which), or the mapped error of the server's
    cancel_reason.
    """

    def __init__(self, stream: WatchStream, state: WatchState) -> None:
        self._stream = stream
        self._state = state
        self._queue: queue.Queue[object] = queue.Queue(maxsize=WATCH_QUEUE_MAX)
        self.created: concurrent.futures.Future[rpc_pb2.WatchResponse] = concurrent.futures.Future()
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

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> rpc_pb2.WatchResponse:
        response = self.get()
        if response is None:
            raise StopIteration
        return response

    def get(self, timeout: float | None = None) -> rpc_pb2.WatchResponse | None:
        """The next response; None once the watch has ended; TimeoutError if none in time."""
        if self._finished:
            return None
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no watch response within {timeout} s") from None
        if item is _END:
            self._finished = True
            return None
        if isinstance(item, errors.PetcdError):
            self._finished = True
            raise item
        assert isinstance(item, rpc_pb2.WatchResponse)
        return item

    def put(self, item: object) -> None:
        """Hand `item` to the consumer (waits while the consumer is WATCH_QUEUE_MAX behind)."""
        self._queue.put(item)

    def end_now(self) -> None:
        """Make the iterator end now, dropping what it had not consumed."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put_nowait(_END)

    def cancel(self) -> None:
        """Stop watching; iteration ends (undelivered responses are dropped)."""
        self._stream.cancel(self._state)

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()


class WatchStream:
    """One Watch stream shared by many watches; reconnects and resumes them on Unavailable."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._demux = WatchDemux()
        self._lock = threading.Lock()
        self._call: Any = None
        self._requests: queue.Queue[Any] | None = None
        self._endpoint = ""
        self._reader: threading.Thread | None = None
        self.closed = False

    def watch(self, key: bytes | str, **kwargs: Any) -> Watch:
        """Like `Client.watch`, on this stream."""
        return self.watch_request(watch_create_request(key, **kwargs))

    def watch_request(self, request: rpc_pb2.WatchCreateRequest) -> Watch:
        if self.closed:
            raise errors.CanceledError("petcd: watch stream is closed")
        state = WatchState(request)
        watch = Watch(self, state)
        state.sink = watch
        with self._lock:
            self._ensure_open()
            self._send(self._demux.create(state))
        try:
            watch.created.result(timeout=self._client.timeout)
        except concurrent.futures.TimeoutError:
            self.cancel(state)
            raise errors.DeadlineExceededError("petcd: watch was not created in time") from None
        assert state.created
        return watch

    def request_progress(self) -> None:
        """Ask for a progress notification; it reaches every watch of the stream."""
        with self._lock:
            self._ensure_open()
            self._send(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    def cancel(self, state: WatchState) -> None:
        watch = state.sink
        assert isinstance(watch, Watch)
        with self._lock:
            request = self._demux.cancel(state)
            if request is not None:
                self._send(request)
        watch.end_now()

    def close(self) -> None:
        """Cancel the stream; every live watch ends."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._stop_call()
            deliveries = self._demux.fail_all(errors.CanceledError("petcd: watch stream is closed"))
        self._client.forget_stream(self)
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(JOIN_TIMEOUT_S)
        for delivery in deliveries:
            watch = delivery.state.sink
            assert isinstance(watch, Watch)
            if not watch.created.done():
                watch.created.set_exception(delivery.error or errors.CanceledError())
            watch.end_now()

    # --- internals (callers hold self._lock unless noted) ------------------------------------

    def _ensure_open(self) -> None:
        if self._call is not None:
            return
        self._open_call()
        self._reader = threading.Thread(
            target=self._read_loop, name="petcd-watch-reader", daemon=True
        )
        self._reader.start()

    def _open_call(self) -> None:
        client = self._client
        if client._username is not None and client._token is None:
            client.refresh_token()
        self._endpoint = client.endpoint
        stream = client.channel(self._endpoint).stream_stream(
            tp.WATCH_PATH,
            request_serializer=rpc_pb2.WatchRequest.SerializeToString,
            response_deserializer=rpc_pb2.WatchResponse.FromString,
        )
        self._requests = queue.Queue(maxsize=REQUEST_QUEUE_MAX)
        self._call = stream(_request_iterator(self._requests), metadata=client.metadata)

    def _stop_call(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._requests is not None:
            with contextlib.suppress(queue.Full):
                self._requests.put_nowait(_CLOSE)

    def _send(self, request: rpc_pb2.WatchRequest) -> None:
        if self._requests is None:
            return
        try:
            self._requests.put(request, timeout=self._client.timeout)
        except queue.Full:
            raise errors.DeadlineExceededError("petcd: watch stream send queue is full") from None

    def _read_loop(self) -> None:
        """The reader thread: pump responses, reconnect on Unavailable, else fail every watch."""
        outage_started: float | None = None
        while True:
            error, received = self._pump(self._call)
            now = time.monotonic()
            if received or outage_started is None:
                outage_started = now
            deliveries: list[Delivery] = []
            with self._lock:
                if self.closed:
                    return
                self._stop_call()
                give_up = not self._resumable(error) or now - outage_started > max(
                    self._client.timeout, WATCH_OUTAGE_S
                )
                if give_up:
                    deliveries = self._demux.fail_all(error)
                    self._call = None
                    self._requests = None
                    self._reader = None
                else:
                    self._client.failover(self._endpoint)
            if give_up:
                for delivery in deliveries:
                    self._deliver(delivery)
                return
            time.sleep(tp.BACKOFF_S)
            self._reconnect(error)

    def _reconnect(self, error: errors.PetcdError) -> None:
        if isinstance(error, errors.InvalidAuthTokenError | errors.AuthOldRevisionError):
            self._client._token = None
        with self._lock:
            if self.closed:
                return
            try:
                self._open_call()
            except errors.PetcdError:
                return  # authentication failed: the next pump fails at once and we retry
            for request in self._demux.disconnected():
                self._send(request)

    def _pump(self, call: Any) -> tuple[errors.PetcdError, bool]:
        """Read and route responses until `call` ends: why it ended, whether any arrived."""
        received = False
        if call is None:
            return errors.UnavailableError("petcd: watch stream is not connected"), received
        try:
            for response in call:
                received = True
                with self._lock:
                    deliveries, sends = self._demux.receive(response)
                    for request in sends:
                        self._send(request)
                for delivery in deliveries:
                    self._deliver(delivery)
        except grpc.RpcError as exc:
            return tp.error_from_rpc(exc), received
        return errors.UnavailableError("petcd: watch stream closed by the server"), received

    def _resumable(self, error: errors.PetcdError) -> bool:
        if isinstance(error, errors.InvalidAuthTokenError | errors.AuthOldRevisionError):
            return self._client._username is not None
        return error.code == errors.GrpcCode.UNAVAILABLE

    @staticmethod
    def _deliver(delivery: Delivery) -> None:
        """Hand one delivery to its watch (called without the lock: it may wait for the consumer)."""
        watch = delivery.state.sink
        assert isinstance(watch, Watch)
        kind = delivery.kind
        if kind is DeliveryKind.CREATED:
            assert delivery.response is not None
            if not watch.created.done():
                watch.created.set_result(delivery.response)
        elif kind is DeliveryKind.CREATE_FAILED:
            assert delivery.error is not None
            if not watch.created.done():
                watch.created.set_exception(delivery.error)
        elif kind is DeliveryKind.RESPONSE:
            watch.put(delivery.response)
        elif kind is DeliveryKind.ERROR:
            watch.put(delivery.error)
        else:
            assert kind is DeliveryKind.END
            watch.put(_END)


class LeaseKeepAliveStream:
    """One LeaseKeepAlive stream: `keep_alive(id)` sends a renewal and waits for its answer."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._call: Any = None
        self._requests: queue.Queue[Any] | None = None
        self._endpoint = ""
        self._waiters: dict[
            int, collections.deque[concurrent.futures.Future[rpc_pb2.LeaseKeepAliveResponse]]
        ] = {}
        self._waiting = 0
        self.closed = False

    def keep_alive(self, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
        """Renew `lease_id` once. TTL 0 in the answer means the lease no longer exists."""
        future: concurrent.futures.Future[rpc_pb2.LeaseKeepAliveResponse] = (
            concurrent.futures.Future()
        )
        with self._lock:
            if self.closed:
                raise errors.CanceledError("petcd: keep-alive stream is closed")
            assert self._waiting < WAITERS_MAX, "too many keep-alive requests in flight"
            if self._call is None:
                self._open()
            self._waiters.setdefault(lease_id, collections.deque()).append(future)
            self._waiting += 1
            requests = self._requests
            assert requests is not None
        try:
            requests.put(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id), timeout=self._client.timeout)
            return future.result(timeout=self._client.timeout)
        except (queue.Full, concurrent.futures.TimeoutError):
            future.cancel()
            raise errors.DeadlineExceededError("petcd: no keep-alive answer in time") from None

    def _open(self) -> None:
        client = self._client
        if client._username is not None and client._token is None:
            client.refresh_token()
        self._endpoint = client.endpoint
        stream = client.channel(self._endpoint).stream_stream(
            tp.LEASE_KEEPALIVE_PATH,
            request_serializer=rpc_pb2.LeaseKeepAliveRequest.SerializeToString,
            response_deserializer=rpc_pb2.LeaseKeepAliveResponse.FromString,
        )
        self._requests = queue.Queue(maxsize=REQUEST_QUEUE_MAX)
        call = stream(_request_iterator(self._requests), metadata=client.metadata)
        self._call = call
        threading.Thread(
            target=self._read_loop, args=(call,), name="petcd-keepalive-reader", daemon=True
        ).start()

    def _read_loop(self, call: Any) -> None:
        try:
            for response in call:
                with self._lock:
                    waiting = self._waiters.get(response.ID)
                    if not waiting:
                        continue  # an answer nobody waits for any more (timed out)
                    future = waiting.popleft()
                    self._waiting -= 1
                if not future.done():
                    future.set_result(response)
            error: errors.PetcdError = errors.UnavailableError("petcd: keep-alive stream closed")
        except grpc.RpcError as exc:
            error = tp.error_from_rpc(exc)
        with self._lock:
            if call is not self._call:
                return
            if error.code == errors.GrpcCode.UNAVAILABLE:
                self._client.failover(self._endpoint)
            self._stop_call()
            self._call = None
            failed = self._take_waiters()
        for future in failed:
            if not future.done():
                future.set_exception(error)

    def _take_waiters(self) -> list[concurrent.futures.Future[rpc_pb2.LeaseKeepAliveResponse]]:
        failed = [f for waiting in self._waiters.values() for f in waiting]
        self._waiters.clear()
        self._waiting = 0
        return failed

    def _stop_call(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._requests is not None:
            with contextlib.suppress(queue.Full):
                self._requests.put_nowait(_CLOSE)

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._stop_call()
            self._call = None
            failed = self._take_waiters()
        self._client.forget_stream(self)
        for future in failed:
            if not future.done():
                future.set_exception(errors.CanceledError("petcd: keep-alive stream is closed"))


class KeepAlive:
    """Keeps one lease alive from a thread: renews every `interval` (default TTL/3) seconds."""

    def __init__(self, client: Client, lease_id: int, interval: float | None = None) -> None:
        assert interval is None or interval > 0
        self._client = client
        self.lease_id = lease_id
        self.interval = interval
        self.ttl = 0  # as of the last renewal
        self.renewals = 0
        self.expired = False  # the server said the lease no longer exists
        self.error: errors.PetcdError | None = None
        self._stream: LeaseKeepAliveStream | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Renew once now (so errors surface here), then keep renewing in a thread."""
        assert self._thread is None, "already started"
        self._stream = self._client.lease_keep_alive_stream()
        response = self._stream.keep_alive(self.lease_id)
        if response.TTL <= 0:
            self._stream.close()
            self._client.forget_keepalive(self)
            raise errors.LeaseNotFoundError()
        self._record(response)
        self._thread = threading.Thread(
            target=self._run, name=f"petcd-keepalive-{self.lease_id:x}", daemon=True
        )
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _record(self, response: rpc_pb2.LeaseKeepAliveResponse) -> None:
        assert self.lease_id == response.ID
        self.ttl = response.TTL
        self.renewals += 1

    def _pause_s(self) -> float:
        return self.interval if self.interval is not None else max(self.ttl / 3.0, 0.1)

    def _run(self) -> None:
        assert self._stream is not None
        last_ok = time.monotonic()
        while not self._stop.wait(self._pause_s()):
            try:
                response = self._stream.keep_alive(self.lease_id)
            except errors.PetcdError as error:
                # The lease lives on for its TTL: keep trying other endpoints until it is over.
                if error.code != errors.GrpcCode.UNAVAILABLE or time.monotonic() - last_ok > max(
                    self.ttl, 1
                ):
                    self.error = error
                    return
                continue
            if response.TTL <= 0:
                self.expired = True
                return
            self._record(response)
            last_ok = time.monotonic()

    def stop(self) -> None:
        """Stop renewing (the lease itself stays until it expires or is revoked)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(JOIN_TIMEOUT_S)
        if self._stream is not None:
            self._stream.close()
        self._client.forget_keepalive(self)
        assert not self.running

    def __enter__(self) -> KeepAlive:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
