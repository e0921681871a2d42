"""WAL: raft's write-ahead log, a directory of preallocated, checksummed segment files.

Job: make raft's entries, hard state and snapshot markers durable before the server acts on
them, and give them back after a crash exactly as last written.

Files (see layout.py and record.py): "%016x-%016x.wal" % (seq, first_index), seqs consecutive,
each preallocated to `segment_size_bytes` and starting with a SEGMENT record that carries the
metadata, the latest hard state and the latest snapshot marker. A lock file keeps a second
process out.

Invariants:
  - `save` and `save_snapshot` issue one write and one fdatasync per call; their records are
    durable when they return, and not before;
  - a segment becomes visible only complete: it is prepared as a ".tmp" file (preallocated,
    header written, fsynced), renamed into place, and the directory is fsynced;
  - every segment but the last ends in zeros after its last record; the last one may end in a
    torn record (a crash during a write), which `open` zeroes out before appending again;
  - state in memory (offset, chain CRC, last index) changes only after a write is durable; a
    failed write is zeroed out again, and a failed sync stops the WAL (WalFailedError), since
    the kernel may have dropped the unsynced pages;
  - `release_before` removes the oldest segments only, never the last one, so seqs stay
    consecutive.

Not thread-safe by design beyond a mutex around each call: the server calls `save` from one
worker thread at a time.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from petcd.errors import (
    CorruptFileError,
    StorageError,
    StorageIOError,
    WalExistsError,
    WalFailedError,
    WalNotFoundError,
)
from petcd.pb import raft_pb2, wal_pb2
from petcd.wal.disk import Disk, storage_error
from petcd.wal.layout import TMP_SUFFIX, parse_segment_name, segment_name
from petcd.wal.lock import DirLock
from petcd.wal.record import (
    ENTRIES_RECORD_BYTES_TARGET,
    FRAMING_VERSION,
    RECORD_ENTRIES,
    RECORD_HARD_STATE,
    RECORD_SEGMENT,
    RECORD_SNAPSHOT,
    SegmentScan,
    frame,
    framed_bytes,
    scan_segment,
)
from petcd.wal.replay import (
    Replay,
    WalSnapshot,
    hard_state_is_empty,
    marker_to_pb,
)

log = logging.getLogger("petcd.wal")

SEGMENT_SIZE_BYTES_DEFAULT = 64 * 1024 * 1024
SEGMENT_SIZE_BYTES_MIN = 4096
SEGMENTS_MAX = 1 << 20  # more segment files than this in one directory is not a WAL we wrote
_VARINT_PREFIX_MAX = 1 << 14
# Entries{repeated Entry entries = 1}: field 1, wire type 2 (tag 0x0a), then a varint length.
# One precomputed prefix per entry length lets a save concatenate encoded entries directly.
_ENTRY_PREFIX = [b"\x0a" + bytes([n]) for n in range(128)] + [
    b"\x0a" + bytes([(n & 0x7F) | 0x80, n >> 7]) for n in range(128, _VARINT_PREFIX_MAX)
]


def _entry_prefix(length: int) -> bytes:
    if length < _VARINT_PREFIX_MAX:
        return _ENTRY_PREFIX[length]
    out = bytearray(b"\x0a")
    while length >= 0x80:  # bounded: at most 10 bytes for a 64-bit length
        out.append((length & 0x7F) | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out)


def _entries_payloads(entries: Sequence[raft_pb2.Entry]) -> list[bytes]:
    """Encode entries as walpb.Entries payloads of at most about ENTRIES_RECORD_BYTES_TARGET."""
    first = entries[0].index
    assert first >= 1
    assert entries[-1].index == first + len(entries) - 1, "entries of a save are contiguous"
    encoded = [entry.SerializeToString() for entry in entries]
    lengths = list(map(len, encoded))
    if max(lengths) < _VARINT_PREFIX_MAX and sum(lengths) < ENTRIES_RECORD_BYTES_TARGET:
        # The hot path, in C-level loops: interleave precomputed prefixes with the encodings.
        parts = [b""] * (2 * len(encoded))
        parts[::2] = [_ENTRY_PREFIX[n] for n in lengths]
        parts[1::2] = encoded
        return [b"".join(parts)]
    return _split_payloads(encoded)


def _split_payloads(encoded: list[bytes]) -> list[bytes]:
    """The rare path: big saves, split so no record grows past about the target size."""
    payloads: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for data in encoded:  # bounded by the entries of one save
        parts.append(_entry_prefix(len(data)))
        parts.append(data)
        size += len(data)
        if size >= ENTRIES_RECORD_BYTES_TARGET:
            payloads.append(b"".join(parts))
            parts.clear()
            size = 0
    if parts:
        payloads.append(b"".join(parts))
    assert payloads
    return payloads


@dataclass(slots=True)
class _Segment:
    """A segment file of this WAL. Invariant: max_index is the largest entry index in it."""

    seq: int
    first_index: int
    path: str
    max_index: int


class WAL:
    """An open write-ahead log. Build with `WAL.create` or `WAL.open`; `close` when done."""

    def __init__(
        self,
        dirpath: str,
        lock: DirLock,
        disk: Disk,
        segment_size_bytes: int,
        segments: list[_Segment],
        replay: Replay,
    ) -> None:
        assert replay.metadata is not None
        assert all(a.seq + 1 == b.seq for a, b in itertools.pairwise(segments))
        self.dirpath = dirpath
        self._lock = lock
        self._disk = disk
        self._segment_size_bytes = segment_size_bytes
        self._segments = segments
        self._metadata = replay.metadata
        self._hard_state = raft_pb2.HardState()
        self._hard_state.CopyFrom(replay.hard_state)  # the caller gets the other one
        self._marker: WalSnapshot | None = replay.markers[-1] if replay.markers else None
        self._last_index = replay.last_index
        self._pending: tuple[bytes, raft_pb2.HardState, list[raft_pb2.Entry]] | None = (
            replay.metadata,
            replay.hard_state,
            replay.entries,
        )
        self._fd = -1
        self._offset = 0  # where the next record goes in the last segment
        self._header_end = 0  # end of the last segment's SEGMENT record
        self._crc = 0  # chain CRC of the last record in the last segment
        self._failed: StorageError | None = None
        self._mu = threading.Lock()

    # --- building ------------------------------------------------------------------------

    @staticmethod
    def exists(dirpath: str) -> bool:
        """Whether `dirpath` holds any WAL segment file."""
        try:
            names = os.listdir(dirpath)
        except FileNotFoundError:
            return False
        return any(parse_segment_name(name) is not None for name in names)

    @classmethod
    def create(
        cls,
        dirpath: str,
        metadata: bytes,
        segment_size_bytes: int = SEGMENT_SIZE_BYTES_DEFAULT,
        *,
        disk: Disk | None = None,
    ) -> WAL:
        """A new, empty WAL in `dirpath` (created if needed) whose segments carry `metadata`."""
        _check_segment_size(segment_size_bytes)
        disk = disk if disk is not None else Disk()
        if cls.exists(dirpath):
            raise WalExistsError(dirpath)
        _make_dirs(dirpath, disk)
        lock = DirLock(dirpath)
        try:
            if cls.exists(dirpath):  # another process created it between the check and the lock
                raise WalExistsError(dirpath)
            _remove_tmp_files(dirpath, disk)
            replay = Replay(dirpath, None, keep_entries=True)
            replay.metadata = metadata
            wal = cls(dirpath, lock, disk, segment_size_bytes, [], replay)
            wal._start_segment(0, 1)
        except BaseException:
            lock.release()
            raise
        assert wal._fd >= 0
        return wal

    @classmethod
    def open(
        cls,
        dirpath: str,
        snapshot: WalSnapshot | None = None,
        segment_size_bytes: int = SEGMENT_SIZE_BYTES_DEFAULT,
        *,
        disk: Disk | None = None,
    ) -> WAL:
        """Open the WAL in `dirpath`, verifying every record; a torn tail is zeroed out.

        `read_all` then returns the entries after `snapshot.index`; the snapshot must have a
        marker in the log (WalSnapshotMismatchError otherwise).
        """
        _check_segment_size(segment_size_bytes)
        disk = disk if disk is not None else Disk()
        if not os.path.isdir(dirpath):
            raise WalNotFoundError(dirpath)
        lock = DirLock(dirpath)
        try:
            _remove_tmp_files(dirpath, disk)
            names = _segment_files(dirpath)
            replay = Replay(dirpath, snapshot, keep_entries=True)
            segments: list[_Segment] = []
            scan: SegmentScan | None = None
            for position, (seq, first_index, path) in enumerate(names):
                scan = scan_segment(path, _read_file(path), last=position == len(names) - 1)
                max_index = replay.add_segment(path, seq, first_index, scan)
                segments.append(_Segment(seq, first_index, path, max_index))
            assert scan is not None
            replay.check_snapshot()
            wal = cls(dirpath, lock, disk, segment_size_bytes, segments, replay)
            wal._resume(scan)
        except BaseException:
            lock.release()
            raise
        return wal

    @staticmethod
    def valid_snapshots(dirpath: str) -> list[WalSnapshot]:
        """Snapshot markers in the log whose index the latest hard state has committed.

        A marker past the commit index may belong to a snapshot whose hard state never became
        durable, so its snapshot file cannot be trusted yet (etcd applies the same rule).
        Reads without locking or repairing; corruption raises CorruptFileError.
        """
        names = _segment_files(dirpath)
        replay = Replay(dirpath, None, keep_entries=False)
        for position, (seq, first_index, path) in enumerate(names):
            scan = scan_segment(path, _read_file(path), last=position == len(names) - 1)
            replay.add_segment(path, seq, first_index, scan)
        seen: set[tuple[int, int]] = set()
        valid: list[WalSnapshot] = []
        for marker in replay.markers:  # bounded by the records read
            key = (marker.index, marker.term)
            if marker.index <= replay.hard_state.commit and key not in seen:
                seen.add(key)
                valid.append(marker)
        return valid

    # --- reading -------------------------------------------------------------------------

    def read_all(self) -> tuple[bytes, raft_pb2.HardState, list[raft_pb2.Entry]]:
        """(metadata, hard state, entries after the snapshot) as found by `open`. Call once."""
        pending, self._pending = self._pending, None
        assert pending is not None, "read_all is called once, after open or create"
        metadata, hard_state, entries = pending
        assert not entries or entries[-1].index - entries[0].index == len(entries) - 1
        return metadata, hard_state, entries

    @property
    def last_index(self) -> int:
        """Index of the last entry saved (or the latest snapshot marker, if that is higher)."""
        return self._last_index

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    # --- writing -------------------------------------------------------------------------

    def save(
        self,
        hard_state: raft_pb2.HardState | None,
        entries: Sequence[raft_pb2.Entry],
        sync: bool = True,
    ) -> None:
        """Append entries then the hard state: one write, one fdatasync. Durable on return.

        Entries start at most one past the last index; starting lower replaces the log from
        there on (raft's conflicting tail). An empty hard state and no entries is a no-op.
        `sync=False` (raft's `must_sync` is false: only the commit index moved) skips the
        fdatasync; the next synced save makes it durable, and losing it loses nothing raft
        cannot recompute.
        """
        has_state = hard_state is not None and not hard_state_is_empty(hard_state)
        if not entries and not has_state:
            return
        records: list[tuple[int, bytes]] = []
        if entries:
            records.extend((RECORD_ENTRIES, p) for p in _entries_payloads(entries))
        if has_state:
            assert hard_state is not None
            records.append((RECORD_HARD_STATE, hard_state.SerializeToString()))
        with self._mu:
            self._check_usable()
            if entries:
                assert entries[0].index >= 1
                assert entries[0].index <= self._last_index + 1, (
                    f"gap: entries start at {entries[0].index}, log ends at {self._last_index}"
                )
            self._append(records, sync=sync or bool(entries))
            if entries:
                last = entries[-1].index
                self._last_index = last
                segment = self._segments[-1]
                segment.max_index = max(segment.max_index, last)
            if has_state:
                assert hard_state is not None
                self._hard_state = raft_pb2.HardState()
                self._hard_state.CopyFrom(hard_state)

    def save_snapshot(self, snapshot: WalSnapshot) -> None:
        """Record that raft has a snapshot at (index, term): one write, one fdatasync."""
        assert snapshot.index >= 0
        assert snapshot.term >= 0
        marker = marker_to_pb(snapshot)
        with self._mu:
            self._check_usable()
            self._append([(RECORD_SNAPSHOT, marker.SerializeToString())])
            conf_state = marker.conf_state if marker.HasField("conf_state") else None
            self._marker = WalSnapshot(snapshot.index, snapshot.term, conf_state)
            self._last_index = max(self._last_index, snapshot.index)

    def release_before(self, index: int) -> None:
        """Remove the oldest segments whose entries are all < `index`; never the last one."""
        assert index >= 0
        with self._mu:
            self._check_usable()
            count = 0
            for segment in self._segments[:-1]:  # bounded by the segment count
                if segment.max_index >= index:
                    break
                count += 1
            if count == 0:
                return
            released, self._segments = self._segments[:count], self._segments[count:]
            assert self._segments, "the last segment is never released"
            try:
                for segment in released:  # oldest first: a crash leaves consecutive seqs
                    self._disk.remove(segment.path)
                self._disk.fsync_dir(self.dirpath)
            except OSError as exc:
                raise storage_error(self.dirpath, exc) from exc

    def close(self) -> None:
        """Close the last segment and release the directory lock. Closing twice is harmless."""
        with self._mu:
            fd, self._fd = self._fd, -1
            if fd >= 0:
                os.close(fd)
            self._lock.release()
            if self._failed is None:
                self._failed = WalFailedError(self.dirpath, "closed")
        assert self._fd == -1

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- internals -----------------------------------------------------------------------

    def _check_usable(self) -> None:
        assert self._fd >= 0 or self._failed is not None
        if self._failed is not None:
            raise WalFailedError(self.dirpath, self._failed.message)

    def _append(self, records: list[tuple[int, bytes]], sync: bool = True) -> None:
        """Write records at the end of the log, cutting a new segment first if they don't fit."""
        size = sum(framed_bytes(len(payload)) for _, payload in records)
        has_log_records = self._offset > self._header_end
        if has_log_records and self._offset + size > self._segment_size_bytes:
            self._cut()
        data, crc = frame(records, self._crc)
        assert len(data) == size
        path = self._segments[-1].path
        try:
            self._disk.write(self._fd, data, self._offset)
        except OSError as exc:
            error = storage_error(path, exc)
            self._undo_write(path, len(data), error)
            raise error from exc
        if sync:
            self._sync(path)
        self._offset += size
        self._crc = crc

    def _sync(self, path: str) -> None:
        assert self._fd >= 0
        assert self._failed is None
        try:
            self._disk.fdatasync(self._fd)
        except OSError as exc:
            # After a failed fsync the kernel may have dropped the dirty pages: nothing written
            # since the last good sync can be trusted, so this WAL takes no more records.
            self._failed = storage_error(path, exc)
            raise self._failed from exc

    def _undo_write(self, path: str, size: int, error: StorageError) -> None:
        """Zero what a failed write may have left, so the file is as before; else stop."""
        assert size > 0
        assert self._offset >= self._header_end
        try:
            file_size = os.fstat(self._fd).st_size
            end = min(self._offset + size, file_size)
            if end > self._offset:
                self._disk.write(self._fd, bytes(end - self._offset), self._offset)
            self._disk.fdatasync(self._fd)
        except OSError as exc:
            log.error("wal: cannot undo a failed write to %s: %s", path, exc)
            self._failed = error

    def _cut(self) -> None:
        """Close the full segment and continue in a new, preallocated one."""
        previous = self._segments[-1]
        old_fd = self._fd
        self._start_segment(previous.seq + 1, self._last_index + 1)
        os.close(old_fd)  # every write to it was synced when its save returned
        assert self._segments[-1].seq == previous.seq + 1

    def _start_segment(self, seq: int, first_index: int) -> None:
        """Prepare segment `seq` as a temp file, rename it into place, make it the last one."""
        assert seq == (self._segments[-1].seq + 1 if self._segments else 0)
        assert first_index >= 1
        header = wal_pb2.SegmentHeader(
            version=FRAMING_VERSION, seq=seq, first_index=first_index, prev_crc=self._crc
        )
        header.metadata = self._metadata
        if not hard_state_is_empty(self._hard_state):
            header.hard_state.CopyFrom(self._hard_state)
        if self._marker is not None:
            header.snapshot.CopyFrom(marker_to_pb(self._marker))
        data, crc = frame([(RECORD_SEGMENT, header.SerializeToString())], 0)
        path = os.path.join(self.dirpath, segment_name(seq, first_index))
        fd = self._write_new_file(path, data)
        self._segments.append(_Segment(seq, first_index, path, 0))
        self._fd = fd
        self._offset = self._header_end = len(data)
        self._crc = crc
        assert self._segments[-1].seq == seq

    def _write_new_file(self, path: str, data: bytes) -> int:
        """Create `path` atomically with `data` at its start, preallocated; return a write fd."""
        tmp = path + TMP_SUFFIX
        disk = self._disk
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise storage_error(tmp, exc) from exc
        try:
            disk.allocate(fd, max(self._segment_size_bytes, len(data)))
            disk.write(fd, data, 0)
            disk.fsync(fd)
        except OSError as exc:
            os.close(fd)
            _remove_quietly(tmp)
            raise storage_error(tmp, exc) from exc
        try:
            disk.rename(tmp, path)
            disk.fsync_dir(self.dirpath)
        except OSError as exc:
            # The rename may or may not be durable: stop rather than guess which.
            os.close(fd)
            self._failed = storage_error(path, exc)
            raise self._failed from exc
        return fd

    def _resume(self, scan: SegmentScan) -> None:
        """Continue writing the last segment after its last good record."""
        path = self._segments[-1].path
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise storage_error(path, exc) from exc
        self._offset = scan.end_offset
        self._header_end = scan.records[0].offset if scan.records else scan.end_offset
        self._crc = scan.crc
        if scan.torn_end > scan.end_offset:
            log.warning(
                "wal: zeroing a torn record at %s offset %d (%d bytes)",
                path,
                scan.end_offset,
                scan.torn_end - scan.end_offset,
            )
            try:
                self._disk.write(self._fd, bytes(scan.torn_end - scan.end_offset), self._offset)
                self._disk.fdatasync(self._fd)
            except OSError as exc:
                os.close(self._fd)
                self._fd = -1
                raise storage_error(path, exc) from exc
        assert self._header_end <= self._offset


def _make_dirs(dirpath: str, disk: Disk) -> None:
    """Create `dirpath` and missing parents, fsyncing each parent so the new entries last."""
    missing: list[str] = []
    path = os.path.abspath(dirpath)
    while not os.path.isdir(path) and len(missing) < 64:  # bounded by the path's depth
        missing.append(path)
        path = os.path.dirname(path)
    try:
        os.makedirs(dirpath, exist_ok=True)
        for created in reversed(missing):
            disk.fsync_dir(os.path.dirname(created))
    except OSError as exc:
        raise storage_error(dirpath, exc) from exc


def _check_segment_size(segment_size_bytes: int) -> None:
    assert segment_size_bytes >= SEGMENT_SIZE_BYTES_MIN, segment_size_bytes
    assert segment_size_bytes % 8 == 0, segment_size_bytes


def _segment_files(dirpath: str) -> list[tuple[int, int, str]]:
    """(seq, first_index, path) of every segment, by seq; seqs must be consecutive."""
    try:
        names = os.listdir(dirpath)
    except FileNotFoundError:
        raise WalNotFoundError(dirpath) from None
    except OSError as exc:
        raise storage_error(dirpath, exc) from exc
    found: list[tuple[int, int, str]] = []
    for name in names:
        parsed = parse_segment_name(name)
        if parsed is not None:
            found.append((parsed[0], parsed[1], os.path.join(dirpath, name)))
    if not found:
        raise WalNotFoundError(dirpath)
    if len(found) > SEGMENTS_MAX:
        raise CorruptFileError(dirpath, 0, f"{len(found)} segment files")
    found.sort()
    for (seq, _, _), (next_seq, _, next_path) in itertools.pairwise(found):
        if next_seq != seq + 1:
            raise CorruptFileError(next_path, 0, f"segment seq {seq + 1} is missing")
    return found


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise StorageIOError(path, exc.strerror or str(exc)) from exc


def _remove_tmp_files(dirpath: str, disk: Disk) -> None:
    """Remove segments a crash left half-prepared (they were never renamed into place)."""
    try:
        names = [n for n in os.listdir(dirpath) if n.endswith(TMP_SUFFIX)]
        for name in names:
            disk.remove(os.path.join(dirpath, name))
        if names:
            disk.fsync_dir(dirpath)
    except OSError as exc:
        raise storage_error(dirpath, exc) from exc


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError as exc:
        log.warning("wal: cannot remove %s: %s", path, exc)
