"""Replay: fold verified segments, oldest first, into the log as it was last written.

Pure: it takes SegmentScans (already CRC-checked by record.scan_segment) and builds what
`WAL.read_all` returns. Rules, as raft writes its log:
  - a save whose entries start at index i replaces every entry >= i written before it (raft
    truncates a conflicting tail), so the last write of an index wins;
  - only entries after the snapshot index are kept; a batch that starts at or below the snapshot
    index still truncates everything kept so far;
  - the latest HARD_STATE record wins; a segment header carries the hard state, the latest
    snapshot marker and the metadata current at its cut, so releasing old segments loses none;
  - entries after the snapshot must be contiguous from snapshot index + 1: a hole means the
    snapshot is older than the released segments (WalSnapshotMismatchError);
  - consecutive segments chain: a header's prev_crc is the previous segment's last data_crc,
    and its seq and first index match its file name (else CorruptFileError).

Invariant: entries[k].index == snapshot index + 1 + k.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from petcd.errors import CorruptFileError, WalSnapshotMismatchError
from petcd.pb import raft_pb2, wal_pb2
from petcd.wal.record import RECORD_ENTRIES, RECORD_HARD_STATE, RECORD_SNAPSHOT, SegmentScan


@dataclass(slots=True)
class WalSnapshot:
    """A snapshot marker: raft took (or received) a snapshot at (index, term)."""

    index: int
    term: int
    conf_state: raft_pb2.ConfState | None = None


def marker_from_pb(marker: wal_pb2.SnapshotMarker) -> WalSnapshot:
    conf_state = marker.conf_state if marker.HasField("conf_state") else None
    return WalSnapshot(marker.index, marker.term, conf_state)


def marker_to_pb(snapshot: WalSnapshot) -> wal_pb2.SnapshotMarker:
    marker = wal_pb2.SnapshotMarker(index=snapshot.index, term=snapshot.term)
    if snapshot.conf_state is not None:
        marker.conf_state.CopyFrom(snapshot.conf_state)
    return marker


def hard_state_is_empty(hard_state: raft_pb2.HardState) -> bool:
    return hard_state.term == 0 and hard_state.vote == 0 and hard_state.commit == 0


class Replay:
    """Accumulates segments into metadata, hard state, entries and snapshot markers."""

    def __init__(self, dirpath: str, snapshot: WalSnapshot | None, keep_entries: bool) -> None:
        self.dirpath = dirpath
        self.snapshot = snapshot if snapshot is not None else WalSnapshot(0, 0)
        self.keep_entries = keep_entries
        self.metadata: bytes | None = None
        self.hard_state = raft_pb2.HardState()
        self.entries: list[raft_pb2.Entry] = []
        self.markers: list[WalSnapshot] = []
        self.last_index = 0  # index after which the next save may append
        self._prev_seq: int | None = None
        self._prev_crc = 0
        self._prev_path = ""
        self._prev_end = 0
        assert self.snapshot.index >= 0

    def add_segment(self, path: str, seq: int, first_index: int, scan: SegmentScan) -> int:
        """Fold one segment in; returns the largest entry index it holds (0 if none)."""
        self._check_header(path, seq, first_index, scan.header)
        max_index = 0
        for record in scan.records:  # bounded by the records in the file
            try:
                if record.type == RECORD_ENTRIES:
                    batch = wal_pb2.Entries.FromString(record.payload).entries
                    max_index = max(max_index, self._add_entries(path, batch))
                elif record.type == RECORD_HARD_STATE:
                    self.hard_state = raft_pb2.HardState.FromString(record.payload)
                else:
                    assert record.type == RECORD_SNAPSHOT, record.type
                    self._add_marker(wal_pb2.SnapshotMarker.FromString(record.payload))
            except DecodeError as exc:
                raise CorruptFileError(path, record.offset, f"undecodable payload: {exc}") from exc
        self._prev_seq, self._prev_crc, self._prev_path = seq, scan.crc, path
        self._prev_end = scan.end_offset
        return max_index

    def _check_header(
        self, path: str, seq: int, first_index: int, header: wal_pb2.SegmentHeader
    ) -> None:
        name = os.path.basename(path)
        if header.seq != seq or header.first_index != first_index:
            raise CorruptFileError(
                path,
                0,
                f"header says seq {header.seq} index {header.first_index}, file name says {name}",
            )
        if self._prev_seq is not None:
            assert seq == self._prev_seq + 1, "the caller checks that seqs are consecutive"
            if header.prev_crc != self._prev_crc:
                raise CorruptFileError(
                    self._prev_path,
                    self._prev_end,
                    f"records missing: {name} continues another chain",
                )
        if self.metadata is None:
            self.metadata = header.metadata
        elif header.metadata != self.metadata:
            raise CorruptFileError(path, 0, "metadata differs from the previous segment's")
        if header.HasField("hard_state"):
            self.hard_state = header.hard_state
        if header.HasField("snapshot"):
            self._add_marker(header.snapshot)
        self.last_index = max(self.last_index, first_index - 1)

    def _add_marker(self, marker: wal_pb2.SnapshotMarker) -> None:
        self.markers.append(marker_from_pb(marker))
        self.last_index = max(self.last_index, marker.index)

    def _add_entries(self, path: str, batch: Sequence[raft_pb2.Entry]) -> int:
        assert len(batch) > 0, "the writer never saves an empty batch"
        first, last = batch[0].index, batch[-1].index
        assert first >= 1
        assert last == first + len(batch) - 1, "the writer checks batches are contiguous"
        self.last_index = last
        if not self.keep_entries:
            return last
        base = self.snapshot.index + 1
        if first <= base:
            self.entries.clear()
            if last >= base:
                self.entries.extend(batch[base - first :])
        else:
            keep = first - base
            if keep > len(self.entries):
                missing = f"entries {base + len(self.entries)}..{first - 1} are missing"
                raise WalSnapshotMismatchError(
                    self.dirpath, self.snapshot.index, self.snapshot.term, f"{missing} ({path})"
                )
            del self.entries[keep:]
            self.entries.extend(batch)
        assert not self.entries or self.entries[-1].index == base + len(self.entries) - 1
        return last

    def check_snapshot(self) -> None:
        """The snapshot the log is read from must have a marker in the log (unless index 0)."""
        snapshot = self.snapshot
        if snapshot.index == 0:
            return
        terms = {marker.term for marker in self.markers if marker.index == snapshot.index}
        if not terms:
            raise WalSnapshotMismatchError(
                self.dirpath, snapshot.index, snapshot.term, "no snapshot marker at that index"
            )
        if snapshot.term not in terms:
            raise WalSnapshotMismatchError(
                self.dirpath, snapshot.index, snapshot.term, f"marker terms are {sorted(terms)}"
            )
