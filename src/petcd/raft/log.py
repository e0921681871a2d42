"""The raft log: a persisted prefix in `Storage` and an unstable tail held in memory.

    storage:  [first_index ............ unstable.offset - 1]
    unstable:                            [offset ....... last_index]   (or a pending snapshot)

Invariants:
- `unstable.offset == storage.last_index() + 1` once the caller has persisted what Ready gave
  it (the unstable tail starts right after what is persisted);
- `applied <= applying <= committed <= last_index()`;
- committed entries are handed out for applying only up to `unstable.offset - 1`, i.e. only
  once they are persisted locally, and never while a snapshot is waiting to be persisted;
- entries in [offset, offset_in_progress) were handed out in a Ready and are being persisted;
  they are not handed out again unless a conflicting append truncates them.
"""

from __future__ import annotations

from petcd.errors import RaftCompactedError, RaftUnavailableError
from petcd.pb.raft_pb2 import Entry, Snapshot
from petcd.raft.storage import NO_LIMIT, Storage, limit_size


class Unstable:
    """Entries (and perhaps a snapshot) not yet persisted by the caller."""

    __slots__ = ("entries", "offset", "offset_in_progress", "snapshot", "snapshot_in_progress")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        # Invariant: entries[k].index == offset + k.
        self.offset = offset
        self.snapshot_in_progress = False
        # Invariant: offset <= offset_in_progress <= offset + len(entries).
        self.offset_in_progress = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            index: int = self.snapshot.metadata.index + 1
            return index
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            index: int = self.snapshot.metadata.index
            return index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.metadata.index == i:
                term: int = self.snapshot.metadata.term
                return term
            return None
        k = i - self.offset
        if k >= len(self.entries):
            return None
        term = self.entries[k].term
        return term

    def next_entries(self) -> list[Entry]:
        start = self.offset_in_progress - self.offset
        if start >= len(self.entries):
            return []
        return self.entries[start:]

    def next_snapshot(self) -> Snapshot | None:
        if self.snapshot is None or self.snapshot_in_progress:
            return None
        return self.snapshot

    def accept_in_progress(self) -> None:
        """Everything handed out so far is now being persisted by the caller."""
        if self.entries:
            self.offset_in_progress = self.offset + len(self.entries)
        if self.snapshot is not None:
            self.snapshot_in_progress = True

    def stable_to(self, index: int, term: int) -> None:
        """The caller persisted entries up to (index, term); ignored if they were replaced."""
        if index < self.offset:
            return
        got = self.maybe_term(index)
        if got is None or got != term:
            return  # the unstable tail was replaced while it was being written
        num = index + 1 - self.offset
        self.entries = self.entries[num:]
        self.offset = index + 1
        self.offset_in_progress = max(self.offset_in_progress, self.offset)
        assert self.offset_in_progress <= self.offset + len(self.entries)

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == index:
            self.snapshot = None
            self.snapshot_in_progress = False

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.metadata.index + 1
        self.offset_in_progress = self.offset
        self.entries = []
        self.snapshot = snap
        self.snapshot_in_progress = False

    def truncate_and_append(self, ents: list[Entry]) -> None:
        """Append ents, replacing whatever they conflict with (ents[0].index <= last + 1)."""
        assert ents
        first = ents[0].index
        end = self.offset + len(self.entries)
        assert first <= end, (first, end)
        if first == end:
            self.entries.extend(ents)
        elif first <= self.offset:
            # The log is being truncated to before our current offset.
            self.entries = list(ents)
            self.offset = first
            self.offset_in_progress = first
        else:
            self.entries = self.entries[: first - self.offset]
            self.entries.extend(ents)
            self.offset_in_progress = min(self.offset_in_progress, first)
        assert self.entries[-1].index == self.offset + len(self.entries) - 1

    def slice(self, lo: int, hi: int) -> list[Entry]:
        assert self.offset <= lo <= hi <= self.offset + len(self.entries), (lo, hi, self.offset)
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    """The whole log as raft sees it, with the commit and apply cursors."""

    __slots__ = ("applied", "applying", "committed", "max_applying_size", "storage", "unstable")

    def __init__(self, storage: Storage, max_applying_size: int = NO_LIMIT) -> None:
        first = storage.first_index()
        last = storage.last_index()
        assert first >= 1 and last >= first - 1, (first, last)
        self.storage = storage
        self.unstable = Unstable(last + 1)
        # Everything up to the snapshot is committed and applied.
        self.committed = first - 1
        self.applying = first - 1
        self.applied = first - 1
        self.max_applying_size = max_applying_size

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"applying={self.applying}, offset={self.unstable.offset}, "
            f"unstable={len(self.unstable.entries)})"
        )

    # --- indexes and terms ---------------------------------------------------------------------

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        if i is not None:
            return i
        return self.storage.first_index()

    def last_index(self) -> int:
        u = self.unstable
        if u.entries:
            return u.offset + len(u.entries) - 1
        i = u.maybe_last_index()
        if i is not None:
            return i
        return self.storage.last_index()

    def last_term(self) -> int:
        return self.term(self.last_index())

    def term(self, i: int) -> int:
        """The term of entry i; raises RaftCompactedError / RaftUnavailableError out of range."""
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        if i + 1 < self.first_index():
            raise RaftCompactedError()
        if i > self.last_index():
            raise RaftUnavailableError()
        return self.storage.term(i)

    def term_or_zero(self, i: int) -> int:
        """The term of entry i, or 0 when i is outside the log (compacted or beyond the end)."""
        try:
            return self.term(i)
        except (RaftCompactedError, RaftUnavailableError):
            return 0

    def match_term(self, i: int, term: int) -> bool:
        if i > self.last_index():
            return False
        return self.term_or_zero(i) == term

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """Whether a log ending at (last_index, term) is at least as up to date as ours (§5.4.1)."""
        our_index = self.last_index()
        our_term = self.term(our_index)
        return term > our_term or (term == our_term and last_index >= our_index)

    def persisted_index(self) -> int:
        """The last index known to be in stable storage (on disk at the caller)."""
        if self.unstable.snapshot is not None:
            return self.storage.last_index()
        return self.unstable.offset - 1

    # --- appending -----------------------------------------------------------------------------

    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        assert after >= self.committed, (
            f"after({after}) is out of range [committed({self.committed})]"
        )
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: list[Entry]) -> int:
        """The index of the first entry of ents that is not in our log (0 if all are)."""
        last = self.last_index()
        for e in ents:
            index: int = e.index
            if index > last or not self.match_term(index, e.term):
                return index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest (i, term_i) with i <= index and term_i <= term; (i, 0) once compacted.

        Used for the reject hint: the leader can skip every entry of a term the follower's log
        does not have at that position (raft thesis §5.3 optimisation).
        """
        assert index <= self.last_index()
        first = self.first_index()
        while True:
            if index < first - 1:
                return index, 0
            our = self.term_or_zero(index)
            if our <= term:
                return index, our
            index -= 1

    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: list[Entry]
    ) -> int | None:
        """Append ents after (index, log_term) if that entry matches; the new last index.

        Returns None when (index, log_term) does not match. Raises ValueError when ents
        conflict with a committed entry, which only a broken or malicious leader sends.
        """
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents) if ents else 0
        if ci != 0:
            if ci <= self.committed:
                raise ValueError(f"entry {ci} conflicts with committed entry {self.committed}")
            self.append(ents[ci - index - 1 :])
        self.commit_to(min(committed, last_new))
        return last_new

    # --- reading -------------------------------------------------------------------------------

    def entries(self, lo: int, max_size: int) -> list[Entry]:
        """Entries from lo to the end, limited in size; raises RaftCompactedError."""
        last = self.last_index()
        if lo > last:
            return []
        return self.slice(lo, last + 1, max_size)

    def slice(self, lo: int, hi: int, max_size: int) -> list[Entry]:
        """Entries [lo, hi) limited to max_size (at least one); raises RaftCompactedError."""
        if lo >= hi:
            return []
        first = self.first_index()
        if lo < first:
            raise RaftCompactedError()
        assert hi <= self.last_index() + 1, (lo, hi, self.last_index())
        offset = self.unstable.offset
        if lo >= offset:
            return limit_size(self.unstable.slice(lo, hi), max_size)
        cut = min(hi, offset)
        stored = self.storage.entries(lo, cut, max_size)
        if len(stored) < cut - lo or hi <= offset:
            return stored
        return limit_size(stored + self.unstable.slice(offset, hi), max_size)

    def all_entries(self) -> list[Entry]:
        """Every entry in the log (tests and simulation only)."""
        return self.entries(self.first_index(), NO_LIMIT)

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    # --- commit and apply ----------------------------------------------------------------------

    def commit_to(self, to_commit: int) -> None:
        """Raise the commit index (never lowers it)."""
        if to_commit > self.committed:
            assert to_commit <= self.last_index(), (to_commit, self.last_index())
            self.committed = to_commit

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit up to index if it is of `term` (only current-term entries count, §5.4.2)."""
        if index > self.committed and self.term_or_zero(index) == term:
            self.commit_to(index)
            return True
        return False

    def max_appliable_index(self) -> int:
        return min(self.committed, self.unstable.offset - 1)

    def has_next_committed_ents(self) -> bool:
        if self.unstable.snapshot is not None:
            return False
        return self.applying < self.max_appliable_index()

    def next_committed_ents(self) -> list[Entry]:
        """Committed, persisted entries not yet handed out for applying."""
        if self.unstable.snapshot is not None:
            return []
        lo = self.applying + 1
        hi = self.max_appliable_index() + 1
        if lo >= hi:
            return []
        return self.slice(lo, hi, self.max_applying_size)

    def accept_applying(self, index: int) -> None:
        assert self.applying <= index <= self.committed, (self.applying, index, self.committed)
        self.applying = index

    def applied_to(self, index: int) -> None:
        if index == 0 or index <= self.applied:
            return
        assert index <= self.committed, (
            f"applied({index}) is out of range [committed({self.committed})]"
        )
        self.applied = index
        self.applying = max(self.applying, index)

    def stable_to(self, index: int, term: int) -> None:
        self.unstable.stable_to(index, term)

    def stable_snap_to(self, index: int) -> None:
        self.unstable.stable_snap_to(index)

    def restore(self, snap: Snapshot) -> None:
        """Replace the log by a snapshot (the caller checked it is ahead of our commit)."""
        assert snap.metadata.index > self.committed
        self.committed = snap.metadata.index
        self.unstable.restore(snap)
