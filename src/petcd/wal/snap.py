"""Snapshotter: raft snapshot files, one per snapshot, in the member's snap directory.

A file "%016x-%016x.snap" % (term, index) holds a walpb.SnapshotFile: an encoded
petcd.raftpb.Snapshot and the CRC-32 of those bytes. Saving writes "<name>.tmp", fsyncs it,
renames it into place and fsyncs the directory, so a file with a final name is complete.

Loading walks the files newest first (by index, then term) and returns the first that
verifies: CRC, decoding, and (term, index) in the file equal to its name. A file that fails is
logged as a warning and renamed "<name>.broken" (kept for inspection, never read again); a
missing or unreadable newest file never hides an older good one. With `valid`, only files
whose (index, term) matches a WAL snapshot marker are candidates: a snapshot file written
before its WAL marker became durable is not trusted.
"""

from __future__ import annotations

import logging
import os
import zlib

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from petcd.pb import raft_pb2, wal_pb2
from petcd.wal.disk import Disk, storage_error
from petcd.wal.layout import BROKEN_SUFFIX, TMP_SUFFIX, parse_snap_name, snap_name
from petcd.wal.replay import WalSnapshot

log = logging.getLogger("petcd.wal")

SNAP_FILES_MAX = 1 << 16  # bound on files considered per call


class Snapshotter:
    """Saves, loads and purges raft snapshot files in `snapdir` (created if missing)."""

    def __init__(self, snapdir: str, *, disk: Disk | None = None) -> None:
        self.snapdir = snapdir
        self._disk = disk if disk is not None else Disk()
        try:
            os.makedirs(snapdir, exist_ok=True)
        except OSError as exc:
            raise storage_error(snapdir, exc) from exc

    def save(self, snapshot: raft_pb2.Snapshot) -> None:
        """Write `snapshot` durably; an empty snapshot (index 0) is ignored, as etcd does."""
        index, term = snapshot.metadata.index, snapshot.metadata.term
        if index == 0:
            return
        data = snapshot.SerializeToString()
        content = wal_pb2.SnapshotFile(crc=zlib.crc32(data), data=data).SerializeToString()
        path = os.path.join(self.snapdir, snap_name(term, index))
        tmp = path + TMP_SUFFIX
        disk = self._disk
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                disk.write(fd, content, 0)
                disk.fsync(fd)
            finally:
                os.close(fd)
            disk.rename(tmp, path)
            disk.fsync_dir(self.snapdir)
        except OSError as exc:
            _remove_quietly(tmp)
            raise storage_error(path, exc) from exc
        assert os.path.basename(path) == snap_name(term, index)

    def load_newest(self, valid: list[WalSnapshot] | None = None) -> raft_pb2.Snapshot | None:
        """The newest snapshot file that verifies (and matches a marker in `valid`, if given)."""
        wanted = None if valid is None else {(s.index, s.term) for s in valid}
        for term, index, name in self._snap_files():  # newest first, bounded by the listing
            if wanted is not None and (index, term) not in wanted:
                continue
            path = os.path.join(self.snapdir, name)
            snapshot, problem = _read_snapshot(path, term, index)
            if snapshot is not None:
                assert snapshot.metadata.index == index
                return snapshot
            log.warning("wal: skipping broken snapshot file %s: %s", path, problem)
            self._set_aside(path)
        return None

    def purge(self, keep: int = 5) -> None:
        """Remove all but the `keep` newest snapshot files, and leftover temp files."""
        assert keep >= 1
        files = self._snap_files()
        doomed = [name for _, _, name in files[keep:]]
        doomed += [n for n in self._listdir() if n.endswith(TMP_SUFFIX)]
        if not doomed:
            return
        try:
            for name in doomed:
                self._disk.remove(os.path.join(self.snapdir, name))
            self._disk.fsync_dir(self.snapdir)
        except OSError as exc:
            raise storage_error(self.snapdir, exc) from exc

    def names(self) -> list[str]:
        """Snapshot file names, newest first."""
        return [name for _, _, name in self._snap_files()]

    def _snap_files(self) -> list[tuple[int, int, str]]:
        found: list[tuple[int, int, str]] = []
        for name in self._listdir():
            parsed = parse_snap_name(name)
            if parsed is not None:
                found.append((parsed[0], parsed[1], name))
        found.sort(key=lambda f: (f[1], f[0]), reverse=True)
        return found[:SNAP_FILES_MAX]

    def _listdir(self) -> list[str]:
        try:
            return os.listdir(self.snapdir)
        except OSError as exc:
            raise storage_error(self.snapdir, exc) from exc

    def _set_aside(self, path: str) -> None:
        try:
            self._disk.rename(path, path + BROKEN_SUFFIX)
            self._disk.fsync_dir(self.snapdir)
        except OSError as exc:
            raise storage_error(path, exc) from exc


def _read_snapshot(path: str, term: int, index: int) -> tuple[raft_pb2.Snapshot | None, str]:
    """(the snapshot, "") if the file verifies, else (None, what is wrong with it)."""
    assert index > 0
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or exc}"
    if not content:
        return None, "empty file"
    try:
        stored = wal_pb2.SnapshotFile.FromString(content)
        if zlib.crc32(stored.data) != stored.crc:
            return None, "checksum mismatch"
        snapshot = raft_pb2.Snapshot.FromString(stored.data)
    except DecodeError as exc:
        return None, f"undecodable: {exc}"
    if (snapshot.metadata.term, snapshot.metadata.index) != (term, index):
        meta = snapshot.metadata
        return None, f"holds snapshot {meta.term}/{meta.index}, not the one its name says"
    return snapshot, ""


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("wal: cannot remove %s: %s", path, exc)
