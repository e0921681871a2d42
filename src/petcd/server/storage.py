"""A member's durable raft state: the WAL, raft snapshot files and the raft log's MemoryStorage.

Layout of a data directory (etcd's):

    <data-dir>/member/wal/   WAL segments (petcd.wal)
    <data-dir>/member/snap/  raft snapshot files, and `db` — the LMDB backend (petcd.mvcc)

Opening follows etcd's restart path: load the newest snapshot that the WAL has a marker for,
open the WAL after it, read back the hard state and entries, and fill a raft MemoryStorage with
them. A new member creates the WAL with its member and cluster ids as metadata.
"""

from __future__ import annotations

import dataclasses
import os

from petcd import errors
from petcd.pb import internal_pb2, raft_pb2
from petcd.raft import MemoryStorage
from petcd.wal import WAL, Snapshotter, WalSnapshot


@dataclasses.dataclass(slots=True)
class Paths:
    data_dir: str
    member_dir: str
    wal_dir: str
    snap_dir: str
    backend_dir: str

    @classmethod
    def of(cls, data_dir: str, wal_dir: str = "") -> Paths:
        member = os.path.join(data_dir, "member")
        snap = os.path.join(member, "snap")
        return cls(
            data_dir=data_dir,
            member_dir=member,
            wal_dir=wal_dir or os.path.join(member, "wal"),
            snap_dir=snap,
            backend_dir=os.path.join(snap, "db"),
        )

    def make(self) -> None:
        for path in (self.data_dir, self.member_dir, self.snap_dir):
            os.makedirs(path, mode=0o700, exist_ok=True)


@dataclasses.dataclass(slots=True)
class RaftState:
    """What a member needs to start its raft node."""

    wal: WAL
    storage: MemoryStorage
    member_id: int
    cluster_id: int
    snapshot: raft_pb2.Snapshot | None
    #: True when the member is new (no WAL existed): raft must be bootstrapped.
    fresh: bool


def open_raft_state(paths: Paths, segment_size_bytes: int) -> RaftState:
    """Restart from an existing WAL (and newest matching snapshot)."""
    assert WAL.exists(paths.wal_dir)
    snapshotter = Snapshotter(paths.snap_dir)
    valid = WAL.valid_snapshots(paths.wal_dir)
    snapshot = snapshotter.load_newest(valid)
    marker = None
    if snapshot is not None:
        meta = snapshot.metadata
        marker = WalSnapshot(meta.index, meta.term, meta.conf_state)
    wal = WAL.open(paths.wal_dir, marker, segment_size_bytes=segment_size_bytes)
    metadata_raw, hard_state, entries = wal.read_all()
    metadata = internal_pb2.WalMetadata.FromString(metadata_raw)
    if metadata.member_id == 0:
        wal.close()
        raise errors.CorruptFileError(paths.wal_dir, 0, "WAL metadata has no member id")
    storage = MemoryStorage()
    if snapshot is not None:
        storage.apply_snapshot(snapshot)
    storage.set_hard_state(hard_state)
    if entries:
        storage.append(list(entries))
    return RaftState(wal, storage, metadata.member_id, metadata.cluster_id, snapshot, False)


def create_raft_state(
    paths: Paths, member_id: int, cluster_id: int, segment_size_bytes: int
) -> RaftState:
    """A brand-new member: an empty WAL whose metadata names the member and cluster."""
    assert member_id != 0
    metadata = internal_pb2.WalMetadata(member_id=member_id, cluster_id=cluster_id)
    wal = WAL.create(
        paths.wal_dir, metadata.SerializeToString(), segment_size_bytes=segment_size_bytes
    )
    return RaftState(wal, MemoryStorage(), member_id, cluster_id, None, True)
