"""The LMDB backend: one memory-mapped file holding etcd's buckets as named databases.

Layout (etcd's bbolt layout, mirrored): `key` maps revision bytes (revision.py) to an encoded
mvccpb.KeyValue; `meta` holds `consistent_index` and `term` (8-byte big-endian) and the
compaction marks `scheduledCompactRev` / `finishedCompactRev` (17-byte revision keys); the
other databases belong to other packages and are written through raw puts.

Invariants:
- One write transaction at a time, always on the owner (event-loop) thread. Reads on that
  thread share one read transaction, renewed lazily after a commit; `sync()` and `copy_to()`
  may run in worker threads (LMDB is opened without thread-local reader slots).
- Commits are atomic: the consistent index written in a batch is durable together with the
  data of that batch or not at all (LMDB's copy-on-write B+tree with a double meta page).
- The map is `quota + headroom` bytes. Past the quota the server stops new writes (NOSPACE
  alarm; or the store itself with enforce_quota) while deletes and compaction still find
  free pages in the headroom; if LMDB itself runs out of map the transaction is aborted
  whole (BackendFullError).
- A copy started with `copy_to` is consistent (one read snapshot). Every commit after the
  snapshot is journaled for that copy (until `release_copy` or a bound), so that
  `swap_in` can bring the copy up to date and replace the live file (online defragmentation).

Durability: by default LMDB runs with metasync=False (one fdatasync per commit; a power loss
may undo the last commit, never corrupt). `unsafe_no_fsync=True` (etcd's --unsafe-no-fsync)
skips fsync: a power loss may corrupt the file. `full_sync=True` syncs the meta page too.
`commit_sync=False` (what the server uses, design.md "A write, end to end") commits without
fsync and leaves `sync()` to the owner: the server syncs from a worker thread every batch
interval and before a raft snapshot lets the WAL go, and replays the WAL after the stored
consistent index at start, so no acknowledged write depends on a backend fsync.
"""

from __future__ import annotations

import contextlib
import os
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

import lmdb

from petcd import errors
from petcd.mvcc import revision

DB_NAMES: tuple[str, ...] = (
    "key",
    "meta",
    "lease",
    "auth",
    "authUsers",
    "authRoles",
    "members",
    "members_removed",
    "cluster",
    "alarm",
)
META_CONSISTENT_INDEX = b"consistent_index"
META_TERM = b"term"
META_SCHEDULED_COMPACT = b"scheduledCompactRev"
META_FINISHED_COMPACT = b"finishedCompactRev"

DEFAULT_QUOTA_BYTES = 2 * 1024**3
NO_QUOTA_MAP_BYTES = 1 << 40
HEADROOM_MIN_BYTES = 64 * 1024**2
JOURNAL_MAX_OPS = 200_000  # a copy never swapped in (or released) costs at most this
MEASURE_EVERY_COMMITS = 32

# A raw operation on a database: (db name, key, value or None for a delete).
RawOp = tuple[str, bytes, bytes | None]


@dataclass(slots=True)
class CopyInfo:
    """What a consistent copy holds: its newest main revision and consistent index."""

    path: str
    revision: int
    consistent_index: int
    term: int
    size_bytes: int


@dataclass(slots=True)
class _Journal:
    """Commits made after a copy's snapshot. Invariant: ops are in commit order."""

    ops: list[RawOp] = field(default_factory=list)
    overflowed: bool = False
    copy_revision: int = -1


def map_bytes_for_quota(quota_bytes: int) -> int:
    """The LMDB map size for a quota: quota plus headroom for deletes and compaction."""
    if quota_bytes < 0:
        return NO_QUOTA_MAP_BYTES
    quota = quota_bytes or DEFAULT_QUOTA_BYTES
    headroom = max(HEADROOM_MIN_BYTES, quota // 4)
    return quota + headroom


def _open_env(path: str, map_bytes: int, no_commit_sync: bool, full_sync: bool) -> Any:
    try:
        env = lmdb.open(
            path,
            subdir=False,
            map_size=map_bytes,
            max_dbs=len(DB_NAMES) + 2,
            metasync=full_sync,
            sync=not no_commit_sync,
            max_spare_txns=2,
            lock=True,
        )
    except (lmdb.InvalidError, lmdb.CorruptedError, lmdb.VersionMismatchError) as exc:
        raise errors.CorruptFileError(path, 0, f"not a valid LMDB file: {exc}") from exc
    env.reader_check()  # slots left by a killed process
    return env


class Backend:
    """An LMDB environment with etcd's named databases. See the module docstring."""

    def __init__(
        self,
        path: str,
        quota_bytes: int = DEFAULT_QUOTA_BYTES,
        unsafe_no_fsync: bool = False,
        *,
        full_sync: bool = False,
        commit_sync: bool = True,
        enforce_quota: bool = False,
    ) -> None:
        assert path, "backend path required"
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        self.path = os.path.abspath(path)
        self.quota_bytes = DEFAULT_QUOTA_BYTES if quota_bytes == 0 else quota_bytes
        self.map_bytes = map_bytes_for_quota(quota_bytes)
        self.unsafe_no_fsync = unsafe_no_fsync
        self.full_sync = full_sync
        #: False: commits are not fsynced; the owner calls sync() (the server replays the WAL
        #: after the stored consistent index, so a lost commit is re-applied, design.md).
        self.commit_sync = commit_sync
        self.enforce_quota = enforce_quota  # see write_batch.py: off for replicated members
        self._lock = threading.Lock()  # orders commits against copy snapshots
        self._journals: dict[str, _Journal] = {}
        self._copies_running = 0  # the environment must not close under a running copy
        self._writing = False
        self._in_use_bytes = -1  # last measurement, plus quota costs committed since
        self._commits_since_measure = 0
        self._rtxn: Any = None
        self._rtxn_stale = True
        self._env: Any = None
        #: Bumped whenever the file is (re)opened: defragmentation and restore swap it, which
        #: ends every read transaction of the old one (see `snapshot_reader`).
        self.generation = 0
        self.dbs: dict[str, Any] = {}
        self._open()

    # --- lifecycle ---------------------------------------------------------------------------

    def _open(self) -> None:
        assert self._env is None
        self.generation += 1
        self._env = _open_env(
            self.path,
            self.map_bytes,
            self.unsafe_no_fsync or not self.commit_sync,
            self.full_sync,
        )
        with self._env.begin(write=True) as txn:
            self.dbs = {name: self._env.open_db(name.encode(), txn=txn) for name in DB_NAMES}
        self.key_db = self.dbs["key"]
        self.meta_db = self.dbs["meta"]
        self._rtxn = None
        self._rtxn_stale = True
        self._in_use_bytes = -1
        assert len(self.dbs) == len(DB_NAMES)

    def close(self) -> None:
        assert not self._writing, "close with a write transaction open"
        assert self._copies_running == 0, "a copy is still reading this backend"
        if self._env is None:
            return
        self._drop_reader()
        self._env.close()
        self._env = None
        self.dbs = {}

    @property
    def closed(self) -> bool:
        return self._env is None

    # --- transactions ------------------------------------------------------------------------

    def _drop_reader(self) -> None:
        if self._rtxn is not None:
            self._rtxn.abort()
            self._rtxn = None
        self._rtxn_stale = True

    def reader(self) -> Any:
        """The shared read transaction of the owner thread, showing the last commit."""
        if self._rtxn_stale:
            if self._rtxn is not None:
                self._rtxn.abort()
            self._rtxn = self._env.begin()
            self._rtxn_stale = False
        return self._rtxn

    def snapshot_reader(self) -> Any:
        """A read transaction of its own, fixed at the last commit, for reads that span many
        loop iterations (any thread; the caller aborts it). A swap (`generation` changes)
        invalidates it."""
        assert self._env is not None, "backend closed"
        return self._env.begin()

    def begin_write(self) -> Any:
        """Start the one write transaction (owner thread only)."""
        assert self._env is not None, "backend closed"
        assert not self._writing, "a write transaction is already open"
        txn = self._env.begin(write=True)
        self._writing = True
        return txn

    def commit_write(self, txn: Any, raw_ops: list[RawOp], cost_bytes: int = 0) -> None:
        """Commit a write transaction; `raw_ops` are its non-append writes, for journals;
        `cost_bytes` its quota cost (keeps the space estimate current between measures)."""
        assert self._writing
        assert cost_bytes >= 0
        self._in_use_bytes += cost_bytes
        self._commits_since_measure += 1
        try:
            with self._lock:
                txn.commit()
                for path, journal in list(self._journals.items()):
                    if not self._journal_append(journal, raw_ops):
                        del self._journals[path]  # too long: that copy can no longer be swapped
        except lmdb.MapFullError as exc:
            raise errors.BackendFullError() from exc
        finally:
            self._writing = False
            self._rtxn_stale = True

    def abort_write(self, txn: Any) -> None:
        assert self._writing
        txn.abort()
        self._writing = False

    @staticmethod
    def _journal_append(journal: _Journal, raw_ops: list[RawOp]) -> bool:
        """Append a commit's ops; False (and the journal emptied) once it outgrows the bound."""
        if len(journal.ops) + len(raw_ops) > JOURNAL_MAX_OPS:
            journal.overflowed = True
            journal.ops.clear()
            return False
        journal.ops.extend(raw_ops)
        return True

    # --- raw access for other packages -------------------------------------------------------

    def get_raw(self, db: str, key: bytes) -> bytes | None:
        assert db in self.dbs, db
        value: bytes | None = self.reader().get(key, db=self.dbs[db])
        return value

    def items_raw(self, db: str) -> list[tuple[bytes, bytes]]:
        assert db in self.dbs, db
        with self.reader().cursor(db=self.dbs[db]) as cursor:
            return list(cursor.iternext(keys=True, values=True))

    # --- sizes -------------------------------------------------------------------------------

    def size_bytes(self) -> int:
        """The size of the data file (etcd's dbSize)."""
        return os.stat(self.path).st_size

    def size_in_use_bytes(self) -> int:
        """Bytes held by live pages of every database (etcd's dbSizeInUse)."""
        txn = self.reader()
        page_bytes: int = self._env.stat()["psize"]
        pages = 2 + _pages(self._env.stat())  # two meta pages and the main database
        for db in self.dbs.values():
            pages += _pages(txn.stat(db))
        assert pages >= 2
        return pages * page_bytes

    def space_left_bytes(self) -> int:
        """Bytes under the quota, measured every MEASURE_EVERY commits or near the quota."""
        if self.quota_bytes < 0:
            return NO_QUOTA_MAP_BYTES
        stale = self._commits_since_measure >= MEASURE_EVERY_COMMITS
        if self._in_use_bytes < 0 or stale or self._in_use_bytes > self.quota_bytes * 0.9:
            self._in_use_bytes = self.size_in_use_bytes()
            self._commits_since_measure = 0
        return self.quota_bytes - self._in_use_bytes

    def hash(self) -> int:
        """CRC-32 of every database in name order (names, keys, values), leaving out the
        consistent index and term (etcd's Hash). Thread-safe: it takes its own snapshot."""
        assert self._env is not None
        crc = 0
        with self._env.begin() as txn:
            for name in sorted(self.dbs):
                crc = zlib.crc32(name.encode(), crc)
                with txn.cursor(db=self.dbs[name]) as cursor:
                    for k, v in cursor.iternext():
                        if name == "meta" and k in (META_CONSISTENT_INDEX, META_TERM):
                            continue
                        crc = zlib.crc32(v, zlib.crc32(k, crc))
        assert 0 <= crc < 1 << 32
        return crc

    def sync(self) -> None:
        """fsync the data file (thread-safe; used before a raft snapshot)."""
        assert self._env is not None
        self._env.sync(True)

    # --- copies, defragmentation, restore ----------------------------------------------------

    def copy_to(self, path: str, compact: bool = True) -> CopyInfo:
        """Write a consistent copy of the backend to the file `path` (thread-safe).

        Commits after the copy's snapshot are journaled until `swap_in(path)` or
        `release_copy(path)` (call it for a copy that is only streamed); the journal is dropped
        if it outgrows JOURNAL_MAX_OPS, and that copy can then no longer be swapped in.
        """
        assert self._env is not None
        path = os.path.abspath(path)
        assert path != self.path
        with self._lock:
            snapshot = self._env.begin()
            self._journals[path] = _Journal()
            self._copies_running += 1
        try:
            info = self._copy_snapshot(snapshot, path, compact)
        except BaseException:
            self._journals.pop(path, None)
            raise
        finally:
            snapshot.abort()
            with self._lock:
                self._copies_running -= 1
        self._journals[path].copy_revision = info.revision
        return info

    def _copy_snapshot(self, snapshot: Any, path: str, compact: bool) -> CopyInfo:
        rev = 0
        with snapshot.cursor(db=self.key_db) as cursor:
            if cursor.last():
                rev = revision.main_of(revision.from_bytes(cursor.key()))
        index = _u64(snapshot.get(META_CONSISTENT_INDEX, db=self.meta_db))
        term = _u64(snapshot.get(META_TERM, db=self.meta_db))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # A compacting copy can use our snapshot; a plain one takes its own later
            # snapshot, which the journal (started before) still covers.
            if compact:
                self._env.copyfd(fd, compact=True, txn=snapshot)
            else:
                self._env.copyfd(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        if not compact:
            rev, index, term = _copy_position(path)
        size = os.stat(path).st_size
        assert size > 0
        return CopyInfo(path, rev, index, term, size)

    def release_copy(self, path: str) -> None:
        """Stop journaling for a copy that will not be swapped in."""
        self._journals.pop(os.path.abspath(path), None)

    def swap_in(self, copied_path: str) -> None:
        """Bring a copy up to date and make it the live file (owner thread, no batch open)."""
        assert not self._writing, "swap with a write transaction open"
        assert self._copies_running == 0, "a copy is still reading this backend"
        copied_path = os.path.abspath(copied_path)
        journal = self._journals.pop(copied_path, None)
        if journal is None or journal.overflowed or journal.copy_revision < 0:
            raise errors.StorageError(f"petcd: copy {copied_path} cannot be swapped in")
        self._catch_up_copy(copied_path, journal)
        self._drop_reader()
        self._env.close()
        self._env = None
        os.replace(copied_path, self.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(copied_path + "-lock")
        _fsync_dir(self.path)
        self._open()

    def _catch_up_copy(self, copied_path: str, journal: _Journal) -> None:
        copy_env = _open_env(copied_path, self.map_bytes, False, False)
        try:
            with copy_env.begin(write=True) as wtxn:
                dbs = {name: copy_env.open_db(name.encode(), txn=wtxn) for name in DB_NAMES}
                start = revision.main_bytes(journal.copy_revision + 1)
                with self.reader().cursor(db=self.key_db) as cursor:
                    if cursor.set_range(start):
                        for key, value in cursor.iternext():
                            wtxn.put(key, value, db=dbs["key"], append=True)
                for db, key, value in journal.ops:
                    if value is None:
                        wtxn.delete(key, db=dbs[db])
                    else:
                        wtxn.put(key, value, db=dbs[db])
            copy_env.sync(True)
        finally:
            copy_env.close()

    def replace_with(self, snapshot_path: str) -> None:
        """Replace the whole backend with a copy of the backend file `snapshot_path`."""
        assert not self._writing
        assert self._copies_running == 0, "a copy is still reading this backend"
        snapshot_path = os.path.abspath(snapshot_path)
        assert snapshot_path != self.path
        _copy_position(snapshot_path)  # refuses a file that is not a backend
        tmp = self.path + ".restore"
        with open(snapshot_path, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        self._journals.clear()
        self._drop_reader()
        self._env.close()
        self._env = None
        os.replace(tmp, self.path)
        _fsync_dir(self.path)
        self._open()


def _pages(stat: dict[str, int]) -> int:
    return stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]


def _u64(raw: bytes | None) -> int:
    if raw is None:
        return 0
    assert len(raw) == 8, raw
    return int.from_bytes(raw, "big")


def _copy_position(path: str) -> tuple[int, int, int]:
    """(newest main revision, consistent index, term) of a backend file, read-only."""
    try:
        env = lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=len(DB_NAMES) + 2)
    except lmdb.Error as exc:
        raise errors.CorruptFileError(path, 0, f"not a valid LMDB file: {exc}") from exc
    try:
        with env.begin() as txn:
            try:
                key_db = env.open_db(b"key", txn=txn, create=False)
                meta_db = env.open_db(b"meta", txn=txn, create=False)
            except lmdb.NotFoundError as exc:
                raise errors.CorruptFileError(path, 0, "no key/meta database") from exc
            rev = 0
            with txn.cursor(db=key_db) as cursor:
                if cursor.last():
                    rev = revision.main_of(revision.from_bytes(cursor.key()))
            index = _u64(txn.get(META_CONSISTENT_INDEX, db=meta_db))
            term = _u64(txn.get(META_TERM, db=meta_db))
        return rev, index, term
    finally:
        env.close()


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
