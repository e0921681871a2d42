"""The outgoing raft message stream to one peer: a bounded queue, one connection, reconnects.

`OutboundPeer.run()` is the peer's only task: dial one of its URLs (in turn), use the link until
it is lost, wait a backoff, repeat. While the link is up, `enqueue()` appends already encoded
messages to the queue and the transport's per-iteration flush turns the whole queue into one
frame (`flush()`), so everything sent to a peer in one loop iteration travels together.

Invariants:
- the queue is empty whenever there is no link: messages are only queued while connected, and
  whatever is queued when the link is lost is counted as failed and reported unreachable;
- the queue never holds more than `queue_messages_max` messages or `queue_bytes_max` bytes;
  with the socket buffer above its high-water mark nothing is written, so memory per peer is
  bounded by queue + high-water mark + one flush;
- messages reach the peer in the order of `enqueue()` calls (one connection, FIFO queue, and
  the receiver closes an older connection from the same member when a newer one says Hello).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import TYPE_CHECKING

from petcd.errors import (
    ClusterIdMismatchError,
    FrameError,
    PeerHandshakeError,
    PeerUnreachableError,
    TransportConfigError,
)
from petcd.pb import transport_pb2 as tpb
from petcd.transport.frame import (
    BATCH_OVERHEAD_BYTES_MAX,
    ITEM_OVERHEAD_BYTES_MAX,
    batch_frame,
    item_head,
)
from petcd.transport.link import Link
from petcd.transport.records import PeerStats
from petcd.transport.urls import PeerURL

if TYPE_CHECKING:
    from petcd.transport.transport import Transport

log = logging.getLogger("petcd.transport")

#: Reconnect attempts counted for the backoff exponent (2**16 × initial is far past the max).
_ATTEMPT_CAP = 16


class OutboundPeer:
    __slots__ = (
        "_delay_timer",
        "_delayed",
        "_url_index",
        "connected_since",
        "connected_url",
        "items",
        "items_bytes",
        "last_error",
        "link",
        "member_id",
        "owner",
        "snapshot_task",
        "stats",
        "task",
        "urls",
    )

    def __init__(
        self, owner: Transport, member_id: int, urls: tuple[PeerURL, ...], stats: PeerStats
    ) -> None:
        assert member_id != 0
        assert urls
        self.owner = owner
        self.member_id = member_id
        self.urls = urls
        self.stats = stats
        #: Alternating item heads and encoded messages, ready to be joined into a batch frame.
        self.items: list[bytes] = []
        self.items_bytes = 0
        self.link: Link | None = None
        self.connected_url: PeerURL | None = None
        self.connected_since: float | None = None
        self.task: asyncio.Task[None] | None = None
        self.snapshot_task: asyncio.Task[None] | None = None
        self._delayed: collections.deque[tuple[float, bytes]] = collections.deque()
        self._delay_timer: asyncio.TimerHandle | None = None
        self.last_error = ""
        self._url_index = 0

    @property
    def label(self) -> str:
        return f"{self.member_id:x}"

    # --- the send path (hot) -------------------------------------------------------------------

    def enqueue(self, data: bytes) -> bool:
        """Queue one encoded message; False if it was dropped (disconnected, full, too big)."""
        limits = self.owner.limits
        size = len(data)
        if self.link is None:
            self.stats.send_failures += 1
            return False
        if size + ITEM_OVERHEAD_BYTES_MAX + BATCH_OVERHEAD_BYTES_MAX > limits.frame_bytes_max:
            self.stats.send_failures += 1
            log.warning("dropping a raft message of %d bytes to %s: too large", size, self.label)
            return False
        items = self.items
        if (
            len(items) >= 2 * limits.queue_messages_max
            or self.items_bytes + size > limits.queue_bytes_max
        ):
            self.stats.send_failures += 1
            return False
        head = item_head(size)
        items.append(head)
        items.append(data)
        self.items_bytes += len(head) + size
        return True

    def flush(self) -> None:
        """Write the queue as batch frames (one unless it exceeds a frame), if writable."""
        link = self.link
        items = self.items
        if link is None or not items or link.paused:
            return
        self.items = []
        frame_limit = self.owner.limits.frame_bytes_max - BATCH_OVERHEAD_BYTES_MAX
        if self.items_bytes <= frame_limit:
            frames = [batch_frame(items, self.items_bytes)]
        else:
            frames = _cut_frames(items, frame_limit)
        self.items_bytes = 0
        count = len(items) // 2
        if not link.writelines(frames):
            self.stats.send_failures += count
            self.owner.mark_unreachable(self.member_id)
            return
        stats = self.stats
        stats.sent_messages += count
        stats.sent_frames += len(frames)
        for frame in frames:
            stats.sent_bytes += len(frame)

    def delay(self, data: bytes, delay_s: float) -> None:
        """Fault injection: queue `data` after `delay_s` (FIFO with other delayed messages)."""
        assert delay_s > 0
        if len(self._delayed) >= self.owner.limits.queue_messages_max:
            self.stats.send_failures += 1
            return
        loop = self.owner.loop
        due = loop.time() + delay_s
        self._delayed.append((due, data))
        if self._delay_timer is None:
            self._delay_timer = loop.call_at(due, self._release_delayed)

    def _release_delayed(self) -> None:
        self._delay_timer = None
        loop = self.owner.loop
        now = loop.time()
        delayed = self._delayed
        released = False
        while delayed and delayed[0][0] <= now:
            _, data = delayed.popleft()
            if self.enqueue(data):
                released = True
            else:
                self.owner.mark_unreachable(self.member_id)
        if released:
            self.owner.mark_dirty(self)
        if delayed:
            self._delay_timer = loop.call_at(delayed[0][0], self._release_delayed)

    # --- connection ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, keep the link until it is lost, back off, repeat (until cancelled)."""
        owner = self.owner
        attempt = 0
        while True:
            url = self.urls[self._url_index % len(self.urls)]
            try:
                link, _ack = await owner.dial(url, tpb.STREAM_MESSAGES, self.member_id)
            except (
                PeerUnreachableError,
                PeerHandshakeError,
                ClusterIdMismatchError,
                TransportConfigError,
            ) as exc:
                self.stats.dial_failures += 1
                self._url_index += 1
                self._log_dial_failure(exc)
            else:
                attempt = 0
                self._attach(link, url)
                try:
                    await link.lost
                finally:
                    self._detach(link)
            await asyncio.sleep(owner.backoff_s(attempt))
            attempt = min(attempt + 1, _ATTEMPT_CAP)

    def _attach(self, link: Link, url: PeerURL) -> None:
        assert self.link is None
        assert not self.items, "nothing is queued while disconnected"
        link.handler = self
        link.on_writable = self.flush
        self.link = link
        self.connected_url = url
        self.connected_since = time.monotonic()
        self.stats.connects += 1
        if self.last_error:
            log.info("connected to peer %s at %s (after: %s)", self.label, url, self.last_error)
        else:
            log.info("connected to peer %s at %s", self.label, url)
        self.last_error = ""

    def _detach(self, link: Link) -> None:
        if self.link is not link:
            return
        link.abort()
        self.link = None
        self.connected_url = None
        self.connected_since = None
        lost = len(self.items) // 2
        self.items = []
        self.items_bytes = 0
        if lost:
            self.stats.send_failures += lost
            self.owner.mark_unreachable(self.member_id)
        log.info("lost the connection to peer %s", self.label)

    def _log_dial_failure(self, exc: Exception) -> None:
        text = str(exc)
        repeated = text == self.last_error
        self.last_error = text
        if isinstance(exc, PeerHandshakeError | ClusterIdMismatchError | TransportConfigError):
            log.log(logging.DEBUG if repeated else logging.ERROR, "%s", text)
        else:
            log.log(logging.DEBUG if repeated else logging.INFO, "%s", text)

    # --- LinkHandler: nothing is expected back on a message stream -----------------------------

    def frame_received(self, frame: tpb.Frame, size_bytes: int) -> None:
        raise FrameError(f"unexpected {frame.WhichOneof('body')} on a message stream")

    def link_lost(self, exc: Exception | None) -> None:
        return None  # run() is waiting on link.lost

    def close(self) -> None:
        """Stop everything for this peer (removed, or the transport stops)."""
        if self._delay_timer is not None:
            self._delay_timer.cancel()
            self._delay_timer = None
        self._delayed.clear()
        for task in (self.task, self.snapshot_task):
            if task is not None:
                task.cancel()
        if self.link is not None:
            self._detach(self.link)


def _cut_frames(items: list[bytes], frame_limit: int) -> list[bytes]:
    """Several batch frames, each within frame_limit (every message fits one: enqueue checks)."""
    frames: list[bytes] = []
    start = 0
    size = 0
    for i in range(0, len(items), 2):
        item_bytes = len(items[i]) + len(items[i + 1])
        assert item_bytes <= frame_limit
        if size + item_bytes > frame_limit:
            frames.append(batch_frame(items[start:i], size))
            start = i
            size = 0
        size += item_bytes
    frames.append(batch_frame(items[start:], size))
    assert len(frames) >= 2
    return frames
