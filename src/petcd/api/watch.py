"""Watch service: one bidirectional stream carries many watchers.

Each gRPC stream gets an mvcc watch stream. A reader task turns requests into watch creations,
cancellations and progress requests; the sender loop (the handler itself) sends control
responses first (`created`, `canceled`), then whatever the mvcc stream has ready, so a watcher's
`created` response always precedes its events. Responses wait in bounded places only: control
responses are at most one per request read, and the mvcc stream parks a watcher whose client does
not read (it re-syncs from its next revision later), so a slow client never grows memory.

etcd rules kept here (etcd-api-facts §2.6, §3.3): failed creation = created+canceled with the
error text in cancel_reason and watch_id -1; a compacted start revision = canceled with
compact_revision; progress requests answer watch_id -1 with the current revision once every
watcher of the stream is synced; events of one revision stay in one response unless the client
asked for fragments and the response is too large.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

from petcd import errors
from petcd.api.rpc import CallContext, Kind, Method, Send, require_leader
from petcd.pb import rpc_pb2
from petcd.server.etcdserver import EtcdServer
from petcd.wire import length_delimited, varint

SERVICE = "etcdserverpb.Watch"
#: Control responses waiting to be sent per stream (one per request read: bounded by reading).
MAX_CONTROL_QUEUE = 1024
FRAGMENT_OVERHEAD_BYTES = 512 * 1024
#: Encoded events kept for the other watchers of the same write (watchers share Event objects).
ENCODED_EVENTS_MAX = 4096
_TAG_HEADER = b"\x0a"  # WatchResponse.header = 1
_TAG_WATCH_ID = b"\x10"  # WatchResponse.watch_id = 2 (varint)
_TAG_EVENT = b"\x5a"  # WatchResponse.events = 11


class WatchService:
    def __init__(self, server: EtcdServer) -> None:
        self.server = server
        self.progress_interval_s = (
            float(server.config.experimental_watch_progress_notify_interval) or 600.0
        )
        self.fragment_bytes = int(server.config.max_request_bytes) + FRAGMENT_OVERHEAD_BYTES
        self._header_key = (0, 0)
        self._header_field = b""
        self._event_fields: dict[int, tuple[Any, bytes]] = {}

    def encode_events(self, revision: int, watch_id: int, events: list[Any]) -> bytes:
        """The encoded WatchResponse(header at `revision`, watch_id, events).

        A write watched by many goes out to each of them: every Event is encoded once (the
        store hands all its watchers the same Event object) and the header once per revision.
        """
        assert revision > 0 and watch_id >= 0
        server = self.server
        key = (revision, server.term)
        if key != self._header_key:
            self._header_key = key
            header = server.header(revision).SerializeToString()
            self._header_field = length_delimited(_TAG_HEADER, header)
        parts = [self._header_field]
        if watch_id:
            parts.append(_TAG_WATCH_ID + varint(watch_id))
        cache = self._event_fields
        for event in events:
            hit = cache.get(id(event))
            if hit is None or hit[0] is not event:  # holding the event keeps its id unique
                if len(cache) >= ENCODED_EVENTS_MAX:
                    cache.clear()
                hit = (event, length_delimited(_TAG_EVENT, event.SerializeToString()))
                cache[id(event)] = hit
            parts.append(hit[1])
        return b"".join(parts)

    async def watch(
        self, requests: AsyncIterator[rpc_pb2.WatchRequest], send: Send, ctx: CallContext
    ) -> None:
        server = self.server
        if server.leader_id == 0 and require_leader(ctx):
            raise errors.NoLeaderError()
        session = _Session(self, send, require_leader(ctx))
        reader = asyncio.create_task(session.read(requests))
        try:
            await session.run(reader)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            session.close()

    def methods(self) -> list[Method]:
        return [
            Method(
                SERVICE,
                "Watch",
                Kind.BIDI_STREAM,
                rpc_pb2.WatchRequest,
                rpc_pb2.WatchResponse,
                self.watch,
            )
        ]


class _Session:
    """One client watch stream."""

    def __init__(self, service: WatchService, send: Send, require_leader: bool) -> None:
        self.service = service
        self.server = service.server
        self.send = send
        self.wake = asyncio.Event()
        self.control: collections.deque[rpc_pb2.WatchResponse] = collections.deque()
        self.stream = self.server.store.new_watch_stream(self.wake.set)
        self.fragment: set[int] = set()
        self.progress_notify: set[int] = set()
        self.progress_wanted = False
        self.sent_since_progress: set[int] = set()
        self.closed = False
        self.require_leader = require_leader
        self.leader_check_s = int(self.server.config.election_timeout) / 1000.0

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.stream.close()

    async def read(self, requests: AsyncIterator[rpc_pb2.WatchRequest]) -> None:
        try:
            async for request in requests:
                kind = request.WhichOneof("request_union")
                if kind == "create_request":
                    self._create(request.create_request)
                elif kind == "cancel_request":
                    self._cancel(request.cancel_request.watch_id)
                elif kind == "progress_request":
                    self.progress_wanted = True
                while len(self.control) > MAX_CONTROL_QUEUE:
                    await asyncio.sleep(0.01)  # bounded: let the sender drain
                self.wake.set()
        finally:
            self.wake.set()

    def _create(self, create: rpc_pb2.WatchCreateRequest) -> None:
        no_put = rpc_pb2.WatchCreateRequest.NOPUT in create.filters
        no_delete = rpc_pb2.WatchCreateRequest.NODELETE in create.filters
        key = create.key or b"\x00"
        try:
            watch_id = self.stream.watch(
                key,
                create.range_end,
                create.start_revision,
                no_put=no_put,
                no_delete=no_delete,
                prev_kv=create.prev_kv,
                watch_id=create.watch_id,
            )
        except errors.PetcdError as exc:
            self.control.append(
                rpc_pb2.WatchResponse(
                    header=self.server.header(),
                    watch_id=-1,
                    created=True,
                    canceled=True,
                    cancel_reason=exc.message,
                )
            )
            return
        if create.fragment:
            self.fragment.add(watch_id)
        if create.progress_notify:
            self.progress_notify.add(watch_id)
        self.control.append(
            rpc_pb2.WatchResponse(header=self.server.header(), watch_id=watch_id, created=True)
        )

    def _cancel(self, watch_id: int) -> None:
        if self.stream.cancel(watch_id):
            self.fragment.discard(watch_id)
            self.progress_notify.discard(watch_id)
            self.control.append(
                rpc_pb2.WatchResponse(header=self.server.header(), watch_id=watch_id, canceled=True)
            )

    async def run(self, reader: asyncio.Task[None]) -> None:
        interval = self.service.progress_interval_s
        jitter = interval * 0.1 * random.random()
        loop = asyncio.get_running_loop()
        next_progress = loop.time() + interval + jitter
        while True:
            timeout = max(0.0, next_progress - loop.time())
            if self.require_leader:
                timeout = min(timeout, self.leader_check_s)
                if self.server.leaderless_too_long():
                    raise errors.NoLeaderError()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
            self.wake.clear()
            await self._flush()
            if loop.time() >= next_progress:
                await self._progress_notify()
                next_progress = loop.time() + interval
            if reader.done() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
            # A client that closed its sending side still gets events (etcd keeps serving
            # until the call is cancelled).

    async def _flush(self) -> None:
        while self.control:
            await self.send(self.control.popleft())
        for batch in self.stream.poll():
            await self._send_batch(batch)
        if self.progress_wanted:
            revision = self.stream.progress()
            if revision is not None:
                self.progress_wanted = False
                header = self.server.header(revision)
                await self.send(rpc_pb2.WatchResponse(header=header, watch_id=-1))
            elif not self._has_watchers():
                self.progress_wanted = False  # etcd 3.5.8+: no watchers, no answer

    def _has_watchers(self) -> bool:
        return bool(getattr(self.stream, "watch_ids", lambda: [1])())

    async def _send_batch(self, batch: Any) -> None:
        watch_id = batch.watch_id
        if batch.compact_revision:
            self.fragment.discard(watch_id)
            self.progress_notify.discard(watch_id)
            await self.send(
                self._response(batch, canceled=True, compact_revision=batch.compact_revision)
            )
            return
        self.sent_since_progress.add(watch_id)
        if watch_id in self.fragment and len(batch.events) > 1:
            response = self._response(batch, events=batch.events)
            limit = self.service.fragment_bytes
            if response.ByteSize() >= limit:
                for part in _fragments(response, limit):
                    await self.send(part)
                return
        if batch.revision > 0 and watch_id >= 0:  # the usual case: spliced from encoded events
            await self.send(self.service.encode_events(batch.revision, watch_id, batch.events))
        else:
            await self.send(self._response(batch, events=batch.events))

    def _response(self, batch: Any, **fields: Any) -> rpc_pb2.WatchResponse:
        """A WatchResponse for `batch` (its header and watch id) with `fields`."""
        header = self.server.header(batch.revision or None)
        return rpc_pb2.WatchResponse(header=header, watch_id=batch.watch_id, **fields)

    async def _progress_notify(self) -> None:
        revision = self.stream.progress()
        if revision is None:
            return
        for watch_id in sorted(self.progress_notify - self.sent_since_progress):
            header = self.server.header(revision)
            await self.send(rpc_pb2.WatchResponse(header=header, watch_id=watch_id))
        self.sent_since_progress.clear()


def _fragments(response: rpc_pb2.WatchResponse, limit: int) -> list[rpc_pb2.WatchResponse]:
    """Split a large response into several, all but the last with fragment=true (etcd)."""
    parts: list[rpc_pb2.WatchResponse] = []
    current = rpc_pb2.WatchResponse(header=response.header, watch_id=response.watch_id)
    size = current.ByteSize()
    for event in response.events:
        event_size = event.ByteSize() + 8
        if len(current.events) > 0 and size + event_size > limit:
            current.fragment = True
            parts.append(current)
            current = rpc_pb2.WatchResponse(header=response.header, watch_id=response.watch_id)
            size = current.ByteSize()
        current.events.append(event)
        size += event_size
    parts.append(current)
    return parts
