"""The log: storage, unstable tail, conflicts, commit and apply cursors, progress."""

from __future__ import annotations

import pytest

from petcd.errors import RaftCompactedError, RaftUnavailableError, SnapshotOutOfDateError
from petcd.pb.raft_pb2 import ConfState, Entry, Snapshot, SnapshotMetadata
from petcd.raft.log import RaftLog, Unstable
from petcd.raft.storage import NO_LIMIT, MemoryStorage
from petcd.raft.tracker import Inflights, Progress, ProgressState


def ents(*terms: int, start: int = 1) -> list[Entry]:
    return [Entry(term=t, index=start + i, data=b"%d" % (start + i)) for i, t in enumerate(terms)]


def storage_with(*terms: int) -> MemoryStorage:
    s = MemoryStorage()
    s.append(ents(*terms))
    return s


def test_memory_storage_reads_and_errors() -> None:
    s = storage_with(1, 1, 2, 3)
    assert (s.first_index(), s.last_index()) == (1, 4)
    assert [e.index for e in s.entries(2, 4, NO_LIMIT)] == [2, 3]
    assert s.term(4) == 3
    with pytest.raises(RaftUnavailableError):
        s.term(5)
    s.create_snapshot(2, ConfState(voters=[1]), b"snap")
    s.compact(2)
    assert s.first_index() == 3 and s.term(2) == 1
    with pytest.raises(RaftCompactedError):
        s.entries(2, 4, NO_LIMIT)
    with pytest.raises(RaftCompactedError):
        s.term(1)
    with pytest.raises(RaftCompactedError):
        s.compact(2)
    with pytest.raises(SnapshotOutOfDateError):
        s.create_snapshot(1, None, b"")


def test_memory_storage_entries_size_limit_returns_at_least_one() -> None:
    s = storage_with(1, 1, 1, 1)
    one = s.entries(1, 5, 1)
    assert len(one) == 1
    two = s.entries(1, 5, one[0].ByteSize() * 2)
    assert len(two) == 2


def test_memory_storage_append_truncates_conflicts() -> None:
    s = storage_with(1, 1, 1, 1)
    s.append(ents(2, 2, start=3))
    assert [e.term for e in s.entries(1, 5, NO_LIMIT)] == [1, 1, 2, 2]
    s.append(ents(3, start=2))
    assert s.last_index() == 2 and s.term(2) == 3


def test_memory_storage_apply_snapshot() -> None:
    s = storage_with(1, 1)
    snap = Snapshot(
        metadata=SnapshotMetadata(index=10, term=4, conf_state=ConfState(voters=[1, 2]))
    )
    s.apply_snapshot(snap)
    assert (s.first_index(), s.last_index(), s.term(10)) == (11, 10, 4)
    _hs, cs = s.initial_state()
    assert list(cs.voters) == [1, 2]
    with pytest.raises(SnapshotOutOfDateError):
        s.apply_snapshot(snap)


def test_unstable_truncate_and_in_progress() -> None:
    u = Unstable(5)
    u.truncate_and_append(ents(1, 1, 1, start=5))
    assert [e.index for e in u.next_entries()] == [5, 6, 7]
    u.accept_in_progress()
    assert u.next_entries() == []
    # A conflicting append while 5..7 are being written: 6.. is handed out again.
    u.truncate_and_append(ents(2, start=6))
    assert [(e.index, e.term) for e in u.next_entries()] == [(6, 2)]
    # The old write finishing for (7, 1) must not mark the new entries stable.
    u.stable_to(7, 1)
    assert u.offset == 5
    u.stable_to(5, 1)
    assert u.offset == 6 and [e.index for e in u.entries] == [6]


@pytest.mark.parametrize(
    ("new", "conflict"),
    [
        (ents(1, 1, 2), 0),  # all present
        (ents(2, 3, start=3), 4),  # 3 matches, 4 is new
        (ents(1, 3, start=2), 3),  # term differs at 3
        (ents(9, start=5), 5),  # beyond the end
    ],
)
def test_find_conflict(new: list[Entry], conflict: int) -> None:
    log = RaftLog(storage_with(1, 1, 2))
    assert log.find_conflict(new) == conflict


def test_maybe_append_matches_and_commits() -> None:
    log = RaftLog(storage_with(1, 1, 2))
    assert log.maybe_append(3, 1, 3, ents(3, start=4)) is None  # (3, 1) does not match
    assert log.maybe_append(3, 2, 10, ents(3, 3, start=4)) == 5
    assert log.committed == 5  # commit is capped at the last new entry
    with pytest.raises(ValueError):
        log.maybe_append(1, 1, 5, ents(4, start=2))  # would rewrite committed entries


def test_find_conflict_by_term_skips_whole_terms() -> None:
    log = RaftLog(storage_with(1, 1, 2, 2, 2, 5, 5))
    assert log.find_conflict_by_term(7, 3) == (5, 2)
    assert log.find_conflict_by_term(7, 5) == (7, 5)
    assert log.find_conflict_by_term(4, 1) == (2, 1)


def test_committed_entries_only_once_persisted() -> None:
    s = storage_with(1, 1)
    log = RaftLog(s)
    log.append(ents(1, 1, start=3))
    log.commit_to(4)
    assert [e.index for e in log.next_committed_ents()] == [1, 2]
    s.append(log.unstable.next_entries())
    log.stable_to(4, 1)
    assert [e.index for e in log.next_committed_ents()] == [1, 2, 3, 4]


def test_commit_only_current_term() -> None:
    log = RaftLog(storage_with(1, 2, 2))
    assert not log.maybe_commit(2, 3)
    assert log.maybe_commit(2, 2)
    assert log.committed == 2


def test_inflights_window() -> None:
    inf = Inflights(3)
    for i in (5, 7, 9):
        inf.add(i, 10)
    assert inf.full()
    inf.free_le(7)
    assert len(inf) == 1 and not inf.full()
    byte_limited = Inflights(10, max_bytes=15)
    byte_limited.add(1, 10)
    assert not byte_limited.full()
    byte_limited.add(2, 10)
    assert byte_limited.full()


def test_progress_transitions() -> None:
    pr = Progress(11, Inflights(2), False)
    assert pr.state == ProgressState.PROBE
    pr.sent_entries(3, 0)
    assert pr.is_paused()  # one probe at a time
    assert pr.maybe_decr_to(10, 4)
    assert pr.next == 5 and not pr.is_paused()
    assert not pr.maybe_decr_to(10, 4)  # stale rejection
    assert pr.maybe_update(6)
    pr.become_replicate()
    assert pr.next == 7
    pr.sent_entries(2, 0)
    pr.sent_entries(2, 0)
    assert pr.next == 11 and pr.is_paused()
    pr.maybe_update(8)
    pr.inflights.free_le(8)
    assert not pr.inflights.full()
    pr.become_snapshot(20)
    assert pr.is_paused()
    pr.become_probe()
    assert pr.next == 21 and pr.state == ProgressState.PROBE
