"""WAL behaviour through its public interface, on real files in a temporary directory."""

from __future__ import annotations

import os
import pathlib

import pytest

from petcd.errors import (
    CorruptFileError,
    DataDirLockedError,
    WalExistsError,
    WalFailedError,
    WalNotFoundError,
    WalSnapshotMismatchError,
)
from petcd.pb import raft_pb2
from petcd.wal import WAL, WalSnapshot, snap_dir, wal_dir
from petcd.wal.record import scan_segment
from tests.wal.helpers import entries, hard_state, read_back, segment_paths, summary

SEGMENT_BYTES = 4096


@pytest.fixture
def waldir(tmp_path: pathlib.Path) -> str:
    return str(tmp_path / "member" / "wal")


def _fill(waldir: str, last: int, per_save: int = 5, size: int = 100) -> None:
    """A closed WAL with entries 1..last (term 1), saved `per_save` at a time, commit = last."""
    with WAL.create(waldir, b"meta", SEGMENT_BYTES) as wal:
        for first in range(1, last + 1, per_save):
            batch = entries(first, min(last, first + per_save - 1), size=size)
            wal.save(hard_state(1, batch[-1].index), batch)


def test_layout_follows_etcd() -> None:
    assert wal_dir("/d") == "/d/member/wal"
    assert snap_dir("/d") == "/d/member/snap"


def test_create_gives_an_empty_log(waldir: str) -> None:
    assert not WAL.exists(waldir)
    wal = WAL.create(waldir, b"cluster-7", SEGMENT_BYTES)
    assert WAL.exists(waldir)
    assert wal.read_all() == (b"cluster-7", raft_pb2.HardState(), [])
    wal.close()
    [path] = segment_paths(waldir)
    assert os.path.basename(path) == "0000000000000000-0000000000000001.wal"
    assert os.path.getsize(path) == SEGMENT_BYTES  # preallocated
    assert read_back(waldir) == (b"cluster-7", raft_pb2.HardState(), [])


def test_create_refuses_an_existing_log_and_open_a_missing_one(waldir: str) -> None:
    with pytest.raises(WalNotFoundError):
        WAL.open(waldir)
    assert not os.path.exists(waldir)
    WAL.create(waldir, b"m", SEGMENT_BYTES).close()
    with pytest.raises(WalExistsError):
        WAL.create(waldir, b"m", SEGMENT_BYTES)
    os.remove(segment_paths(waldir)[0])
    with pytest.raises(WalNotFoundError):
        WAL.open(waldir)


def test_saves_come_back_across_segments(waldir: str) -> None:
    _fill(waldir, 120)
    paths = segment_paths(waldir)
    assert len(paths) > 3
    assert all(os.path.getsize(p) == SEGMENT_BYTES for p in paths)
    # Each name carries the first index its segment could hold: one past the last at the cut.
    firsts = [int(os.path.basename(p)[17:33], 16) for p in paths]
    assert firsts[0] == 1
    assert firsts == sorted(firsts)
    assert all((f - 1) % 5 == 0 for f in firsts)
    metadata, state, ents = read_back(waldir)
    assert metadata == b"meta"
    assert state == hard_state(1, 120)
    assert summary(ents) == summary(entries(1, 120, size=100))


def test_save_with_nothing_to_save_writes_nothing(waldir: str) -> None:
    with WAL.create(waldir, b"m", SEGMENT_BYTES) as wal:
        before = pathlib.Path(segment_paths(waldir)[0]).read_bytes()
        wal.save(None, [])
        wal.save(raft_pb2.HardState(), [])
        assert pathlib.Path(segment_paths(waldir)[0]).read_bytes() == before
        wal.save(hard_state(3, 0, vote=2), [])
    assert read_back(waldir)[1] == hard_state(3, 0, vote=2)


def test_later_records_win_as_raft_truncates_a_conflicting_tail(waldir: str) -> None:
    with WAL.create(waldir, b"m", SEGMENT_BYTES) as wal:
        wal.save(hard_state(1, 2), entries(1, 10, term=1, size=250))
        wal.save(None, entries(11, 20, term=1, size=250))  # crosses into a new segment
        assert len(segment_paths(waldir)) == 2
        wal.save(hard_state(2, 5), entries(6, 8, term=2))  # replaces 6..20, across segments
        assert wal.last_index == 8
        wal.save(None, entries(9, 9, term=2))
    _, state, ents = read_back(waldir)
    assert state == hard_state(2, 5)
    expected = entries(1, 5, term=1, size=250) + entries(6, 9, term=2)
    assert summary(ents) == summary(expected)


def test_read_all_returns_entries_after_the_snapshot(waldir: str) -> None:
    _fill(waldir, 30)
    with WAL.open(waldir) as wal:
        wal.save_snapshot(WalSnapshot(12, 1))
        wal.save_snapshot(WalSnapshot(30, 1))
    _, _, ents = read_back(waldir, snapshot=WalSnapshot(12, 1))
    assert [e.index for e in ents] == list(range(13, 31))
    _, _, ents = read_back(waldir, snapshot=WalSnapshot(30, 1))
    assert ents == []


def test_a_snapshot_without_a_marker_is_refused(waldir: str) -> None:
    _fill(waldir, 30)
    with WAL.open(waldir) as wal:
        wal.save_snapshot(WalSnapshot(12, 1))
    with pytest.raises(WalSnapshotMismatchError) as info:
        WAL.open(waldir, WalSnapshot(13, 1))
    assert info.value.index == 13
    with pytest.raises(WalSnapshotMismatchError):
        WAL.open(waldir, WalSnapshot(12, 2))  # right index, wrong term
    read_back(waldir, snapshot=WalSnapshot(12, 1))  # the lock was released after the errors


def test_release_before_drops_only_old_segments(waldir: str) -> None:
    _fill(waldir, 120)
    count = len(segment_paths(waldir))
    with WAL.open(waldir) as wal:
        wal.save_snapshot(WalSnapshot(60, 1))
        wal.release_before(61)
        left = segment_paths(waldir)
        assert 1 < len(left) < count
        assert wal.segment_count == len(left)
        # Seqs stay consecutive; the first segment left may hold index 61 or less.
        seqs = [int(os.path.basename(p)[:16], 16) for p in left]
        assert seqs == list(range(seqs[0], seqs[0] + len(left)))
        assert int(os.path.basename(left[0])[17:33], 16) <= 61
    metadata, state, ents = read_back(waldir, snapshot=WalSnapshot(60, 1))
    assert metadata == b"meta"
    assert state == hard_state(1, 120)
    assert [e.index for e in ents] == list(range(61, 121))
    assert WAL.valid_snapshots(waldir) == [WalSnapshot(60, 1)]
    with pytest.raises(WalSnapshotMismatchError):
        WAL.open(waldir)  # entries 1..60 are gone: a snapshot is needed
    with WAL.open(waldir, WalSnapshot(60, 1)) as wal:
        wal.save_snapshot(WalSnapshot(120, 1))
        wal.release_before(10**9)  # never the last segment
        assert len(segment_paths(waldir)) == 1
    # The segment left was cut after the hard state and the marker were written: its header
    # carries them.
    assert read_back(waldir, snapshot=WalSnapshot(120, 1))[1:] == (hard_state(1, 120), [])
    assert WAL.valid_snapshots(waldir)[-1] == WalSnapshot(120, 1)


def test_valid_snapshots_needs_the_commit_to_cover_the_marker(waldir: str) -> None:
    conf = raft_pb2.ConfState(voters=[1, 2, 3])
    with WAL.create(waldir, b"m", SEGMENT_BYTES) as wal:
        wal.save(hard_state(1, 5), entries(1, 10))
        wal.save_snapshot(WalSnapshot(4, 1, conf))
        wal.save_snapshot(WalSnapshot(8, 1))
        assert WAL.valid_snapshots(waldir) == [WalSnapshot(4, 1, conf)]
        wal.save(hard_state(1, 8), [])
    assert WAL.valid_snapshots(waldir) == [WalSnapshot(4, 1, conf), WalSnapshot(8, 1)]


def test_a_snapshot_ahead_of_the_log_lets_entries_follow_it(waldir: str) -> None:
    """A follower that receives a snapshot beyond its log continues after the snapshot."""
    with WAL.create(waldir, b"m", SEGMENT_BYTES) as wal:
        wal.save(hard_state(1, 3), entries(1, 5))
        wal.save_snapshot(WalSnapshot(40, 3))
        assert wal.last_index == 40
        wal.save(hard_state(3, 40), entries(41, 44, term=3))
    _, state, ents = read_back(waldir, snapshot=WalSnapshot(40, 3))
    assert state == hard_state(3, 40)
    assert [e.index for e in ents] == [41, 42, 43, 44]
    with pytest.raises(WalSnapshotMismatchError) as info:
        WAL.open(waldir)
    assert "6..40" in info.value.reason


def test_big_entries_are_split_into_records_and_come_back(waldir: str) -> None:
    big = [raft_pb2.Entry(term=1, index=i, data=bytes([i]) * (3 << 20)) for i in (1, 2, 3)]
    with WAL.create(waldir, b"m", SEGMENT_BYTES) as wal:
        wal.save(hard_state(1, 3), big)
        wal.save(None, entries(4, 4))
    _, _, ents = read_back(waldir)
    assert summary(ents) == summary([*big, *entries(4, 4)])


def test_a_second_open_is_refused_while_the_log_is_open(waldir: str) -> None:
    wal = WAL.create(waldir, b"m", SEGMENT_BYTES)
    with pytest.raises(DataDirLockedError) as info:
        WAL.open(waldir)
    assert info.value.path == waldir
    wal.close()
    wal.close()  # twice is harmless
    with pytest.raises(WalFailedError):
        wal.save(None, entries(1, 1))
    read_back(waldir)


def test_open_removes_a_half_prepared_segment(waldir: str) -> None:
    _fill(waldir, 10)
    stray = os.path.join(waldir, "0000000000000009-0000000000000063.wal.tmp")
    pathlib.Path(stray).write_bytes(b"\x01" * 100)
    assert summary(read_back(waldir)[2]) == summary(entries(1, 10, size=100))
    assert not os.path.exists(stray)


def test_a_torn_tail_is_zeroed_and_the_log_continues(waldir: str) -> None:
    _fill(waldir, 10)
    last = segment_paths(waldir)[-1]
    with WAL.open(waldir) as wal:
        wal.save(None, entries(11, 11, size=300))
    data = bytearray(pathlib.Path(last).read_bytes())
    end = len(data.rstrip(b"\x00"))
    data[end - 200 : end] = bytes(200)  # the last record's final bytes never reached the disk
    pathlib.Path(last).write_bytes(bytes(data))
    with WAL.open(waldir) as wal:
        assert [e.index for e in wal.read_all()[2]] == list(range(1, 11))
        wal.save(None, entries(11, 12, term=2))
    assert [(e.index, e.term) for e in read_back(waldir)[2]][-3:] == [(10, 1), (11, 2), (12, 2)]


def _damage(path: str, offset: int, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes([value]))


def test_damage_in_an_older_segment_names_file_and_record(waldir: str) -> None:
    _fill(waldir, 60)
    path = segment_paths(waldir)[1]
    data = pathlib.Path(path).read_bytes()
    header_end = 16 + int.from_bytes(data[4:8], "little")
    header_end += -header_end % 8
    _damage(path, header_end + 40, data[header_end + 40] ^ 0x10)  # in the first entries record
    with pytest.raises(CorruptFileError) as info:
        WAL.open(waldir)
    assert info.value.path == path
    assert info.value.offset == header_end


def test_lost_tail_of_an_older_segment_is_caught_by_the_chain(waldir: str) -> None:
    _fill(waldir, 120)
    path = segment_paths(waldir)[1]
    data = bytearray(pathlib.Path(path).read_bytes())
    end = len(data.rstrip(b"\x00"))
    record_start = scan_segment(path, bytes(data), last=False).records[-1].offset
    data[record_start:end] = bytes(end - record_start)  # a whole record vanished
    pathlib.Path(path).write_bytes(bytes(data))
    with pytest.raises(CorruptFileError) as info:
        WAL.open(waldir)
    assert info.value.path == path
    assert "records missing" in info.value.reason


def test_a_missing_or_misnamed_segment_is_corruption(waldir: str) -> None:
    _fill(waldir, 120)
    paths = segment_paths(waldir)
    os.rename(paths[1], paths[1] + ".moved")
    with pytest.raises(CorruptFileError) as info:
        WAL.open(waldir)
    assert info.value.path == paths[2]
    os.rename(paths[1] + ".moved", paths[1])
    wrong = os.path.join(waldir, "0000000000000001-0000000000000099.wal")
    os.rename(paths[1], wrong)
    with pytest.raises(CorruptFileError) as info:
        WAL.open(waldir)
    assert info.value.path == wrong
    assert info.value.offset == 0


def test_release_before_keeps_the_segment_that_holds_the_index(waldir: str) -> None:
    with WAL.create(waldir, b"m", SEGMENT_BYTES) as wal:
        for first in (1, 4, 7, 10):  # three entries of 1200 bytes fill a 4 KiB segment
            wal.save(hard_state(1, first), entries(first, first + 2, size=1200))
        assert len(segment_paths(waldir)) == 4
        wal.release_before(6)  # segment 0 holds 1..3; segment 1 holds 6
        assert len(segment_paths(waldir)) == 3
        wal.release_before(7)
        assert len(segment_paths(waldir)) == 2
        wal.save_snapshot(WalSnapshot(6, 1))
    assert [e.index for e in read_back(waldir, snapshot=WalSnapshot(6, 1))[2]] == list(range(7, 13))


def test_segment_headers_carry_state_past_a_release(waldir: str) -> None:
    """The hard state and the marker were written only in the segment that gets released."""
    conf = raft_pb2.ConfState(voters=[1], learners=[2])
    with WAL.create(waldir, b"m", SEGMENT_BYTES) as wal:
        wal.save(hard_state(4, 3, vote=1), entries(1, 3, term=4, size=1200))
        wal.save_snapshot(WalSnapshot(3, 4, conf))
        wal.save(None, entries(4, 6, term=4, size=1200))  # no hard state; cuts segment 1
        assert len(segment_paths(waldir)) == 2
        wal.release_before(4)
        assert len(segment_paths(waldir)) == 1
    assert WAL.valid_snapshots(waldir) == [WalSnapshot(3, 4, conf)]
    _, state, ents = read_back(waldir, snapshot=WalSnapshot(3, 4))
    assert state == hard_state(4, 3, vote=1)
    assert [e.index for e in ents] == [4, 5, 6]
