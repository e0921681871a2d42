"""Snapshot streaming: a backend file goes to a follower in chunks, on its own connection.

Why a separate connection: a snapshot can be hundreds of MB; on the message connection it would
sit in front of heartbeats for seconds and the follower would start elections. On its own
connection (its own TCP flow and socket buffers) it only shares the event loop, and every step
on the loop is bounded by one chunk.

Sender (`send_snapshot_stream`, one task per transfer, at most one per peer):

    dial STREAM_SNAPSHOT -> SnapshotHeader(message, size_bytes)
    repeat: read the next chunk in a worker thread (one read ahead), with the running CRC-32
            of the file so far; write SnapshotChunk(offset, crc32, data); wait until the socket
            buffer drains (and, with snapshot_send_bytes_per_s, until the rate allows more)
    SnapshotEnd(size_bytes, crc32) -> wait for SnapshotResult -> report_snapshot(peer, ok)

Receiver (`SnapshotReceiver`, the handler of an accepted snapshot connection):

    SnapshotHeader: check it (a MSG_SNAP to us from the connection's member, index > 0, size
                    within limits), path = snapshot_path_for(index), write to path + ".part"
    SnapshotChunk:  must continue exactly at the bytes received so far; queued for a worker
                    thread that extends the running CRC-32, compares it and writes; reading from
                    the socket pauses while the queue holds more than snapshot_queue_bytes_max
    SnapshotEnd:    size and CRC-32 must match; fsync the file, rename it to path, fsync the
                    directory, call on_snapshot(message, path), answer SnapshotResult(ok)

Why a running CRC-32 and not a CRC per chunk plus a SHA-256: one pass over the data per side
instead of two (checksums were most of the CPU a transfer costs), and it still catches a
damaged chunk at that chunk and a lost, repeated or reordered chunk anywhere. It guards against
accidents, not an attacker: TLS does that.

Any failure on the receiver (bad CRC, short file, I/O error, a stall) removes the partial
file, answers SnapshotResult(ok=False, reason) when the connection still works, and never calls
on_snapshot. The sender reports failure unless it got ok=True.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import zlib
from typing import IO, TYPE_CHECKING

from petcd.errors import FrameError, PeerUnreachableError, PetcdError, SnapshotTransferError
from petcd.pb import raft_pb2
from petcd.pb import transport_pb2 as tpb
from petcd.transport.frame import chunk_frame_head
from petcd.transport.link import Link, describe

if TYPE_CHECKING:
    from petcd.transport.peer import OutboundPeer
    from petcd.transport.transport import Transport

log = logging.getLogger("petcd.transport")


# --- sender ------------------------------------------------------------------------------------


class _ResultWaiter:
    """Handler of the sender's link: the only frame coming back is the SnapshotResult."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.future: asyncio.Future[tpb.SnapshotResult] = asyncio.get_running_loop().create_future()

    def frame_received(self, frame: tpb.Frame, size_bytes: int) -> None:
        if frame.WhichOneof("body") != "snapshot_result" or self.future.done():
            raise FrameError(f"unexpected {frame.WhichOneof('body')} on a snapshot stream")
        self.future.set_result(frame.snapshot_result)

    def link_lost(self, exc: Exception | None) -> None:
        if not self.future.done():
            error = PeerUnreachableError(self.target, f"snapshot stream lost ({describe(exc)})")
            self.future.set_exception(error)


def _read_chunk(file: IO[bytes], size: int, crc: int) -> tuple[bytes, int]:
    """Worker thread: the next chunk and the running CRC-32 extended over it."""
    data = file.read(size)
    return data, zlib.crc32(data, crc)


def _corrupt(owner: Transport, index: int, data: bytes) -> bytes:
    """Fault injection: damage chunk `index` after its CRC was computed (as a bad link would)."""
    if owner.faults.corrupt_snapshot_chunk != index or not data:
        return data
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0xFF
    log.warning("fault injection: corrupting snapshot chunk %d", index)
    return bytes(damaged)


async def send_snapshot_stream(
    owner: Transport, peer: OutboundPeer, message: raft_pb2.Message, db_path: str
) -> None:
    """Stream `db_path` to `peer`, then report_snapshot(peer, ok). Cancel = no report."""
    assert message.type == raft_pb2.MSG_SNAP
    assert message.to == peer.member_id
    stats = peer.stats
    ok = False
    try:
        ok = await _stream(owner, peer, message, db_path)
    except (PetcdError, OSError) as exc:
        log.warning("snapshot to peer %s failed: %s", peer.label, describe(exc))
    if ok:
        stats.snapshots_sent += 1
        log.info("sent snapshot at index %d to peer %s", _index(message), peer.label)
    else:
        stats.snapshot_send_failures += 1
    owner.report_snapshot_result(peer.member_id, ok)


async def _stream(
    owner: Transport, peer: OutboundPeer, message: raft_pb2.Message, db_path: str
) -> bool:
    limits = owner.limits
    size = os.path.getsize(db_path)
    if size > limits.snapshot_bytes_max:
        raise SnapshotTransferError(peer.label, f"{db_path} has {size} bytes, over the limit")
    url = peer.connected_url or peer.urls[0]
    link, _ack = await owner.dial(url, tpb.STREAM_SNAPSHOT, peer.member_id)
    waiter = _ResultWaiter(peer.label)
    link.handler = waiter
    try:
        header = tpb.SnapshotHeader(message=message, size_bytes=size)
        link.write_frame(tpb.Frame(snapshot_header=header))
        crc = await _send_chunks(owner, peer, link, waiter, db_path, size)
        if not waiter.future.done():
            end = tpb.SnapshotEnd(size_bytes=size, crc32=crc)
            link.write_frame(tpb.Frame(snapshot_end=end))
        async with asyncio.timeout(limits.snapshot_result_timeout_s):
            result = await waiter.future
        if not result.ok:
            log.warning("peer %s refused the snapshot: %s", peer.label, result.reason)
        return bool(result.ok)
    finally:
        if not waiter.future.done():
            waiter.future.cancel()
        elif not waiter.future.cancelled():
            waiter.future.exception()  # retrieved: a failure was already raised another way
        link.close()


async def _send_chunks(
    owner: Transport,
    peer: OutboundPeer,
    link: Link,
    waiter: _ResultWaiter,
    db_path: str,
    size: int,
) -> int:
    """Write every chunk of the file; returns the CRC-32 of the whole file."""
    loop = owner.loop
    limits = owner.limits
    chunk_bytes = limits.snapshot_chunk_bytes
    rate = limits.snapshot_send_bytes_per_s
    file = await loop.run_in_executor(owner.executor, open, db_path, "rb")
    crc = 0
    offset = 0
    index = 0
    reading: asyncio.Future[tuple[bytes, int]] | None = None
    started = loop.time()
    try:
        if size:
            reading = loop.run_in_executor(
                owner.executor, _read_chunk, file, min(chunk_bytes, size), 0
            )
        while reading is not None and not waiter.future.done():  # one round per chunk
            data, crc = await reading
            reading = None
            end = offset + len(data)
            if not data or end > size:
                raise SnapshotTransferError(peer.label, f"{db_path} changed while being sent")
            if end < size:  # read the next chunk while this one goes out
                want = min(chunk_bytes, size - end)
                reading = loop.run_in_executor(owner.executor, _read_chunk, file, want, crc)
            sent = _corrupt(owner, index, data)
            # two writes, not writelines: asyncio would join them (one more copy of the data)
            link.write(chunk_frame_head(offset, crc, len(sent)))
            link.write(sent)
            peer.stats.snapshot_bytes_sent += len(sent)
            offset = end
            index += 1
            async with asyncio.timeout(limits.snapshot_stall_timeout_s):
                await link.drain()
                if rate:
                    await asyncio.sleep(max(0.0, started + offset / rate - loop.time()))
        assert offset <= size
        return crc
    finally:
        if reading is not None:  # close once the read in flight is done with the file
            reading.add_done_callback(lambda _: file.close())
        else:
            file.close()


# --- receiver ----------------------------------------------------------------------------------

_END = b""  # queue marker: SnapshotEnd arrived (real chunks are never empty: _chunk checks)


class SnapshotReceiver:
    """Handler of one accepted snapshot connection (see the module docstring)."""

    def __init__(self, owner: Transport, link: Link, sender_id: int) -> None:
        assert sender_id != 0
        self.owner = owner
        self.link = link
        self.sender_id = sender_id
        self.label = f"{sender_id:x}"
        self.message: raft_pb2.Message | None = None
        self.size_bytes = 0
        self.received_bytes = 0
        self.end: tpb.SnapshotEnd | None = None
        self.task: asyncio.Task[None] | None = None
        self._queue: collections.deque[tuple[bytes, int]] = collections.deque()
        self._queued_bytes = 0
        self._reading_paused = False
        self._arrived = asyncio.Event()
        self._ended = False

    # --- frames (on the loop) ------------------------------------------------------------------

    def frame_received(self, frame: tpb.Frame, size_bytes: int) -> None:
        body = frame.WhichOneof("body")
        if self.message is None:
            if body != "snapshot_header":
                raise FrameError(f"expected a snapshot header, got {body}")
            self._start(frame.snapshot_header)
        elif body == "snapshot_chunk" and not self._ended:
            self._chunk(frame.snapshot_chunk)
        elif body == "snapshot_end" and not self._ended:
            self._ended = True
            self.end = frame.snapshot_end
            self._queue.append((_END, 0))
            self._arrived.set()
        else:
            raise FrameError(f"unexpected {body} on a snapshot stream")

    def _start(self, header: tpb.SnapshotHeader) -> None:
        owner = self.owner
        message = header.message
        if message.type != raft_pb2.MSG_SNAP or message.to != owner.member_id:
            raise FrameError("the snapshot header does not carry a MSG_SNAP to this member")
        if message.from_ != self.sender_id or message.snapshot.metadata.index == 0:
            raise FrameError("the snapshot header's sender or index is wrong")
        if header.size_bytes > owner.limits.snapshot_bytes_max:
            raise FrameError(f"a snapshot of {header.size_bytes} bytes is over the limit")
        self.message = message
        self.size_bytes = header.size_bytes
        self.task = owner.spawn(self._run(), f"snapshot-from-{self.label}")

    def _chunk(self, chunk: tpb.SnapshotChunk) -> None:
        data = chunk.data
        if chunk.offset != self.received_bytes or not data:
            raise FrameError(f"snapshot chunk at {chunk.offset}, expected {self.received_bytes}")
        if self.received_bytes + len(data) > self.size_bytes:
            raise FrameError("snapshot chunks run past the announced size")
        self.received_bytes += len(data)
        self._queue.append((data, chunk.crc32))
        self._queued_bytes += len(data)
        self._arrived.set()
        if self._queued_bytes > self.owner.limits.snapshot_queue_bytes_max:
            self._pause_reading(True)

    def _pause_reading(self, pause: bool) -> None:
        transport = self.link.transport
        if pause == self._reading_paused or transport is None or transport.is_closing():
            return
        self._reading_paused = pause
        if pause:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def link_lost(self, exc: Exception | None) -> None:
        task = self.task
        if task is not None and not task.done():
            task.cancel()

    # --- the writer task -----------------------------------------------------------------------

    async def _run(self) -> None:
        message = self.message
        assert message is not None
        owner = self.owner
        path = owner.snapshot_path_for(message.snapshot.metadata.index)
        stats = owner.stats_for(self.sender_id)
        partial = path + ".part"
        result = tpb.SnapshotResult(ok=False)
        claimed = path not in owner.receiving_paths
        try:
            if not claimed:  # two senders (an old and a new leader) must not share a file
                raise SnapshotTransferError(self.label, f"{path} is already being received")
            owner.receiving_paths.add(path)
            await self._receive_into(partial)
            await owner.loop.run_in_executor(owner.executor, _publish, partial, path)
            owner.deliver_snapshot(message, path)
            result.ok = True
            stats.snapshots_received += 1
            log.info("received snapshot at index %d from peer %s", _index(message), self.label)
        except (SnapshotTransferError, OSError) as exc:
            result.reason = str(exc)
            stats.snapshot_receive_failures += 1
            log.warning("snapshot from peer %s failed: %s", self.label, describe(exc))
        finally:
            if claimed:
                owner.receiving_paths.discard(path)
                _remove_quietly(partial)
        self.link.write_frame(tpb.Frame(snapshot_result=result))
        self.link.close()

    async def _receive_into(self, partial: str) -> None:
        owner = self.owner
        loop = owner.loop
        limits = owner.limits
        stats = owner.stats_for(self.sender_id)
        crc = 0
        written = 0
        file = await loop.run_in_executor(owner.executor, open, partial, "wb")
        try:
            while True:  # bounded: every round consumes a queued chunk or times out
                if not self._queue:
                    self._arrived.clear()
                    async with asyncio.timeout(limits.snapshot_stall_timeout_s):
                        await self._arrived.wait()
                    continue
                data, expected_crc = self._queue.popleft()
                if not data:  # _END
                    break
                self._queued_bytes -= len(data)
                if self._queued_bytes <= limits.snapshot_queue_bytes_max // 2:
                    self._pause_reading(False)
                crc = await loop.run_in_executor(
                    owner.executor, _write_chunk, file, data, crc, expected_crc, written, self.label
                )
                written += len(data)
                stats.snapshot_bytes_received += len(data)
            self._check_end(written, crc)
            await loop.run_in_executor(owner.executor, _sync_and_close, file)
        except TimeoutError:
            raise SnapshotTransferError(self.label, "the snapshot stream stalled") from None
        finally:
            file.close()

    def _check_end(self, written: int, crc: int) -> None:
        end = self.end
        assert end is not None
        if written != self.size_bytes or end.size_bytes != self.size_bytes:
            raise SnapshotTransferError(self.label, f"got {written} of {self.size_bytes} bytes")
        if end.crc32 != crc:
            raise SnapshotTransferError(self.label, "CRC-32 of the received file does not match")


def _index(message: raft_pb2.Message) -> int:
    return int(message.snapshot.metadata.index)


def _write_chunk(
    file: IO[bytes], data: bytes, crc: int, expected_crc: int, offset: int, label: str
) -> int:
    """Worker thread: extend the running CRC over one chunk, check it, append the chunk."""
    crc = zlib.crc32(data, crc)
    if crc != expected_crc:
        raise SnapshotTransferError(label, f"chunk at offset {offset} failed its CRC-32")
    file.write(data)
    return crc


def _sync_and_close(file: IO[bytes]) -> None:
    file.flush()
    os.fsync(file.fileno())
    file.close()


def _publish(partial: str, path: str) -> None:
    """Worker thread: the verified, synced file takes its final name, durably."""
    os.replace(partial, path)
    directory = os.path.dirname(os.path.abspath(path))
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
