"""The raft log's stable storage: the `Storage` protocol and `MemoryStorage`.

Raft reads what the caller has persisted through `Storage`; it never writes to it. The caller
(the server, the simulator) writes each Ready's entries, hard state and snapshot to its durable
store and into a `MemoryStorage` before it calls `RawNode.advance`.

Invariants of MemoryStorage:
- `_ents[0]` is a dummy entry carrying the index and term of the last compacted entry (the
  snapshot's), so `term(first_index() - 1)` is always answerable;
- `_ents[k].index == _ents[0].index + k` for every k (the log is contiguous);
- `first_index() == _ents[0].index + 1` and `last_index() == _ents[-1].index`.
"""

from __future__ import annotations

from typing import Protocol

from petcd.errors import (
    RaftCompactedError,
    RaftUnavailableError,
    SnapshotOutOfDateError,
)
from petcd.pb.raft_pb2 import ConfState, Entry, HardState, Snapshot

# "No size limit" for entry fetches: larger than any real log.
NO_LIMIT = (1 << 64) - 1
# The most an Entry's encoding adds to its data: 1+10 (term) + 1+10 (index) + 1+1 (type)
# + 1+5 (data tag and length) bytes.
_ENTRY_OVERHEAD_MAX = 30


def limit_size(ents: list[Entry], max_size: int) -> list[Entry]:
    """The longest prefix of `ents` whose encoded size stays within `max_size` (at least one).

    Invariant: never returns an empty list for a non-empty input, so a single entry larger than
    the limit still makes progress.
    """
    if max_size >= NO_LIMIT or len(ents) <= 1:
        return ents
    # Cheap upper bound first: an entry encodes to at most its data plus 30 bytes of tags and
    # varints (term, index, type, data length), so most batches need no exact sizing.
    if sum([len(e.data) for e in ents]) + _ENTRY_OVERHEAD_MAX * len(ents) <= max_size:
        return ents
    size = ents[0].ByteSize()
    for i in range(1, len(ents)):
        size += ents[i].ByteSize()
        if size > max_size:
            assert i >= 1
            return ents[:i]
    return ents


class Storage(Protocol):
    """What raft reads from the caller's persisted log.

    `entries(lo, hi, max_size)` returns the entries [lo, hi), at least one even if it exceeds
    max_size; it raises RaftCompactedError when lo is compacted away and RaftUnavailableError
    when the entries are not there. `term(i)` is answerable for i in
    [first_index() - 1, last_index()]. `snapshot()` may raise SnapshotTemporarilyUnavailableError.
    """

    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int, max_size: int) -> list[Entry]: ...

    def term(self, i: int) -> int: ...

    def last_index(self) -> int: ...

    def first_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...


class MemoryStorage:
    """A Storage held in memory, filled by the caller; the server fills it from the WAL."""

    __slots__ = ("_ents", "_hard_state", "_snapshot")

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        self._ents: list[Entry] = [Entry(term=0, index=0)]

    # --- the Storage protocol ------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        hs = HardState()
        hs.CopyFrom(self._hard_state)
        cs = ConfState()
        cs.CopyFrom(self._snapshot.metadata.conf_state)
        return hs, cs

    def entries(self, lo: int, hi: int, max_size: int) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise RaftCompactedError()
        assert lo <= hi, (lo, hi)
        if hi > offset + len(self._ents):
            raise RaftUnavailableError(
                f"entries [{lo}, {hi}) beyond last index {self.last_index()}"
            )
        if len(self._ents) == 1:
            raise RaftUnavailableError()
        return limit_size(self._ents[lo - offset : hi - offset], max_size)

    def term(self, i: int) -> int:
        offset = self._ents[0].index
        if i < offset:
            raise RaftCompactedError()
        if i - offset >= len(self._ents):
            raise RaftUnavailableError()
        term: int = self._ents[i - offset].term
        return term

    def last_index(self) -> int:
        index: int = self._ents[0].index + len(self._ents) - 1
        return index

    def first_index(self) -> int:
        index: int = self._ents[0].index + 1
        return index

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # --- writes by the caller ------------------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = HardState(term=hs.term, vote=hs.vote, commit=hs.commit)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader."""
        index = snap.metadata.index
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError()
        assert snap.metadata.term > 0, "a snapshot's term is never 0"
        self._snapshot = snap
        self._ents = [Entry(term=snap.metadata.term, index=index)]
        assert self.first_index() == index + 1

    def create_snapshot(self, i: int, conf_state: ConfState | None, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine at applied index i (not compacting)."""
        if i <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError()
        offset = self._ents[0].index
        assert i <= self.last_index(), f"snapshot {i} is beyond last index {self.last_index()}"
        snap = Snapshot(data=data)
        snap.metadata.index = i
        snap.metadata.term = self._ents[i - offset].term
        if conf_state is not None:
            snap.metadata.conf_state.CopyFrom(conf_state)
        self._snapshot = snap
        return snap

    def compact(self, compact_index: int) -> None:
        """Drop every entry up to compact_index; the caller snapshots first."""
        offset = self._ents[0].index
        if compact_index <= offset:
            raise RaftCompactedError()
        assert compact_index <= self.last_index(), (compact_index, self.last_index())
        i = compact_index - offset
        dummy = Entry(term=self._ents[i].term, index=self._ents[i].index)
        self._ents = [dummy, *self._ents[i + 1 :]]
        assert self._ents[0].index == compact_index

    def append(self, entries: list[Entry]) -> None:
        """Append entries, truncating any conflicting suffix first (entries are contiguous)."""
        if not entries:
            return
        first = self.first_index()
        last = entries[-1].index
        if last < first:
            return  # everything is already compacted
        if first > entries[0].index:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        assert offset <= len(self._ents), (
            f"missing log entry [last {self.last_index()}, append at {entries[0].index}]"
        )
        if offset < len(self._ents):
            self._ents = self._ents[:offset]
        self._ents.extend(entries)
        assert self.last_index() == last
