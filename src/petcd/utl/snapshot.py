"""Offline snapshot tools: status of a snapshot file, and restore of a member's data directory.

A snapshot file is what `etcdctl snapshot save` (or petcd's client) writes from the Maintenance
Snapshot stream: a consistent copy of the LMDB backend followed by a 32-byte SHA-256 trailer of
everything before it (etcd's format; detected by `size % 512 == 32`).

Restore builds a new member's data directory, as `etcdutl snapshot restore` does:

    <data-dir>/member/snap/db                 the backend, with members rewritten from
                                              --initial-cluster and the consistent index set
    <data-dir>/member/snap/<term>-<index>.snap a raft snapshot at index = number of members,
                                              term 1, whose conf state lists every member
    <data-dir>/member/wal/                    a WAL with the member/cluster ids, a marker for
                                              that snapshot and a hard state committing it

so the restored member starts with all the data and a fresh raft log of its new cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile

from petcd import errors
from petcd.membership import RaftCluster
from petcd.membership.ids import cluster_id, member_id
from petcd.mvcc import DB_NAMES, Backend, WatchableStore
from petcd.pb import internal_pb2, raft_pb2
from petcd.wal import WAL, Snapshotter, WalSnapshot

TRAILER_BYTES = 32


@dataclasses.dataclass(slots=True)
class SnapshotStatus:
    hash: int
    revision: int
    total_keys: int
    total_size: int


def has_trailer(path: str) -> bool:
    return os.path.getsize(path) % 512 == TRAILER_BYTES


def verify_trailer(path: str) -> None:
    """Check the SHA-256 trailer; raise CorruptFileError naming the file if it does not match."""
    size = os.path.getsize(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        remaining = size - TRAILER_BYTES
        while remaining > 0:
            chunk = f.read(min(remaining, 1 << 20))
            assert chunk, "file shrank while reading"
            digest.update(chunk)
            remaining -= len(chunk)
        trailer = f.read(TRAILER_BYTES)
    if digest.digest() != trailer:
        raise errors.CorruptFileError(path, size - TRAILER_BYTES, "snapshot SHA-256 mismatch")


def _copy_backend(path: str, target: str, skip_hash_check: bool) -> None:
    """Copy the backend part of a snapshot file (without its trailer) to `target`."""
    trailer = has_trailer(path)
    if trailer and not skip_hash_check:
        verify_trailer(path)
    elif not trailer and not skip_hash_check:
        raise errors.CorruptFileError(
            path, os.path.getsize(path), "no SHA-256 trailer (use --skip-hash-check)"
        )
    length = os.path.getsize(path) - (TRAILER_BYTES if trailer else 0)
    with open(path, "rb") as src, open(target, "wb") as dst:
        remaining = length
        while remaining > 0:
            chunk = src.read(min(remaining, 1 << 20))
            assert chunk
            dst.write(chunk)
            remaining -= len(chunk)
        dst.flush()
        os.fsync(dst.fileno())


def status(path: str) -> SnapshotStatus:
    with tempfile.TemporaryDirectory(prefix="petcdutl-") as scratch:
        db = os.path.join(scratch, "db")
        _copy_backend(path, db, skip_hash_check=not has_trailer(path))
        backend = Backend(db)
        try:
            store = WatchableStore(backend)
            total_keys = sum(len(backend.items_raw(name)) for name in DB_NAMES)
            return SnapshotStatus(
                hash=store.hash(),
                revision=store.current_revision,
                total_keys=total_keys,
                total_size=os.path.getsize(path),
            )
        finally:
            backend.close()


def restore(
    path: str,
    data_dir: str,
    name: str,
    initial_cluster: dict[str, list[str]],
    token: str,
    skip_hash_check: bool = False,
) -> tuple[int, int]:
    """Create `data_dir` from a snapshot file; returns (member id, cluster id)."""
    if name not in initial_cluster:
        raise errors.StorageError(f"petcdutl: {name!r} is not in --initial-cluster")
    if os.path.exists(data_dir) and os.listdir(data_dir):
        raise errors.StorageError(f"petcdutl: data-dir {data_dir!r} exists and is not empty")
    ids = {n: member_id(urls, token) for n, urls in initial_cluster.items()}
    cid = cluster_id(list(ids.values()))
    snap_dir = os.path.join(data_dir, "member", "snap")
    wal_dir = os.path.join(data_dir, "member", "wal")
    os.makedirs(snap_dir, mode=0o700)
    db = os.path.join(snap_dir, "db")
    try:
        _copy_backend(path, db, skip_hash_check)
        index = len(ids)
        _rewrite_backend(db, ids, initial_cluster, cid, index)
        voters = sorted(ids.values())
        snapshot = raft_pb2.Snapshot(
            data=internal_pb2.SnapshotData(cluster_id=cid).SerializeToString(),
            metadata=raft_pb2.SnapshotMetadata(
                index=index, term=1, conf_state=raft_pb2.ConfState(voters=voters)
            ),
        )
        Snapshotter(snap_dir).save(snapshot)
        metadata = internal_pb2.WalMetadata(member_id=ids[name], cluster_id=cid)
        wal = WAL.create(wal_dir, metadata.SerializeToString())
        try:
            wal.save_snapshot(WalSnapshot(index, 1, snapshot.metadata.conf_state))
            wal.save(raft_pb2.HardState(term=1, commit=index), [])
        finally:
            wal.close()
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    return ids[name], cid


def _rewrite_backend(
    db: str,
    ids: dict[str, int],
    initial_cluster: dict[str, list[str]],
    cid: int,
    index: int,
) -> None:
    """Replace the members with the new cluster's and set the consistent index."""
    backend = Backend(db)
    try:
        store = WatchableStore(backend)
        batch = store.write_batch()
        try:
            for key, _value in backend.items_raw("members"):
                batch.delete_raw("members", key)
            for key, _value in backend.items_raw("members_removed"):
                batch.delete_raw("members_removed", key)
            cluster = RaftCluster(cid)
            cluster.save_cluster_id(batch)
            for member_name, mid in sorted(ids.items()):
                record = internal_pb2.MemberRecord(
                    id=mid, name=member_name, peer_urls=initial_cluster[member_name]
                )
                batch.put_raw("members", mid.to_bytes(8, "big"), record.SerializeToString())
            batch.reset_consistent_index(index, 1)
            batch.commit()
        except BaseException:
            batch.abort()
            raise
        backend.sync()
    finally:
        backend.close()
