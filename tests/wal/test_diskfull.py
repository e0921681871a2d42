"""A full disk gives a clean typed error and no damage.

Two ways, both unprivileged: a fault-injecting Disk that runs out of space when a file grows
(preallocated space stays writable, as on a real file system), and a child process under
RLIMIT_FSIZE, where the kernel itself refuses to grow a file (EFBIG). After the error the log on
disk holds exactly the saves that returned; the WAL keeps working once space is back, or, if it
cannot undo a half-done write, refuses further saves (WalFailedError) until reopened.
"""

from __future__ import annotations

import errno
import os
import pathlib
import subprocess
import sys

import pytest

from petcd.errors import DiskFullError, StorageIOError, WalFailedError
from petcd.pb import raft_pb2
from petcd.wal import WAL, Disk, Snapshotter
from tests.wal.helpers import copy_dir, entries, hard_state, read_back, segment_paths, summary

SEGMENT_BYTES = 4096


class FaultyDisk(Disk):
    """A Disk with `space_bytes` left for files to grow into; writes inside a file's current
    size need no space. `fail_writes` / `fail_syncs` make every write / sync fail."""

    def __init__(self, space_bytes: int) -> None:
        self.space_bytes = space_bytes
        self.fail_writes = False
        self.fail_syncs = False

    def _grow(self, fd: int, end: int) -> int:
        """Take space for growing the file to `end`; return how far it may really grow."""
        size = os.fstat(fd).st_size
        growth = max(0, end - size)
        allowed = min(growth, self.space_bytes)
        self.space_bytes -= allowed
        return size + allowed if growth else end

    def write(self, fd: int, data: bytes, offset: int) -> None:
        if self.fail_writes:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        limit = self._grow(fd, offset + len(data))
        if limit < offset + len(data):
            super().write(fd, data[: max(0, limit - offset)], offset)  # a partial write
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().write(fd, data, offset)

    def allocate(self, fd: int, size_bytes: int) -> None:
        if self._grow(fd, size_bytes) < size_bytes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().allocate(fd, size_bytes)

    def fdatasync(self, fd: int) -> None:
        if self.fail_syncs:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().fdatasync(fd)


def _bytes(path: str) -> bytes:
    return pathlib.Path(path).read_bytes()


def test_no_space_for_a_new_segment(tmp_path: pathlib.Path) -> None:
    waldir = str(tmp_path / "wal")
    disk = FaultyDisk(space_bytes=SEGMENT_BYTES)  # room for the first segment only
    wal = WAL.create(waldir, b"m", SEGMENT_BYTES, disk=disk)
    saved: list[raft_pb2.Entry] = []
    with pytest.raises(DiskFullError) as info:
        for first in range(1, 1000, 5):  # bounded: 4 KiB of segment fills long before
            batch = entries(first, first + 4, size=100)
            wal.save(hard_state(1, first), batch)
            saved.extend(batch)
    assert ".tmp" in info.value.path
    assert not [n for n in os.listdir(waldir) if n.endswith(".tmp")]  # the half-made one is gone
    assert len(segment_paths(waldir)) == 1
    assert summary(read_back_copy(waldir, tmp_path)) == summary(saved)  # nothing damaged
    disk.space_bytes = 10 * SEGMENT_BYTES  # space comes back: the same WAL goes on
    more = entries(len(saved) + 1, len(saved) + 40, size=100)
    wal.save(None, more)
    wal.close()
    assert len(segment_paths(waldir)) > 1
    assert summary(read_back(waldir)[2]) == summary(saved + more)


def read_back_copy(waldir: str, tmp_path: pathlib.Path) -> list[raft_pb2.Entry]:
    """The log as a fresh open would find it, while the WAL itself stays open."""
    return read_back(copy_dir(waldir, str(tmp_path / "copy")))[2]


def test_a_half_written_save_is_undone_and_the_wal_goes_on(tmp_path: pathlib.Path) -> None:
    waldir = str(tmp_path / "wal")
    disk = FaultyDisk(space_bytes=SEGMENT_BYTES + 1000)
    wal = WAL.create(waldir, b"m", SEGMENT_BYTES, disk=disk)
    wal.save(hard_state(1, 1), entries(1, 3))
    path = segment_paths(waldir)[0]
    before = _bytes(path)
    # One save bigger than the segment: the file must grow past its preallocation, and the
    # disk has only 1000 bytes more, so the write stops half way with ENOSPC.
    with pytest.raises(DiskFullError):
        wal.save(hard_state(1, 3), [entries(4, 4)[0], raft_pb2.Entry(index=5, data=b"z" * 5000)])
    after = _bytes(path)
    assert after[: len(before)] == before
    assert after[len(before) :] == bytes(len(after) - len(before))  # the partial write is zeroed
    wal.save(hard_state(1, 4), entries(4, 4))  # the WAL still works
    wal.close()
    _, state, log = read_back(waldir)
    assert state == hard_state(1, 4)
    assert summary(log) == summary(entries(1, 4))


def test_when_the_undo_fails_too_the_wal_stops(tmp_path: pathlib.Path) -> None:
    waldir = str(tmp_path / "wal")
    disk = FaultyDisk(space_bytes=10 * SEGMENT_BYTES)
    wal = WAL.create(waldir, b"m", SEGMENT_BYTES, disk=disk)
    wal.save(hard_state(1, 1), entries(1, 3))
    disk.fail_writes = True
    with pytest.raises(StorageIOError):
        wal.save(None, entries(4, 4))
    disk.fail_writes = False
    with pytest.raises(WalFailedError):
        wal.save(None, entries(4, 4))
    wal.close()
    assert summary(read_back(waldir)[2]) == summary(entries(1, 3))


def test_a_failed_sync_stops_the_wal(tmp_path: pathlib.Path) -> None:
    waldir = str(tmp_path / "wal")
    disk = FaultyDisk(space_bytes=10 * SEGMENT_BYTES)
    wal = WAL.create(waldir, b"m", SEGMENT_BYTES, disk=disk)
    wal.save(hard_state(1, 1), entries(1, 3))
    disk.fail_syncs = True
    with pytest.raises(StorageIOError):
        wal.save(None, entries(4, 5))
    disk.fail_syncs = False
    with pytest.raises(WalFailedError) as info:
        wal.save(None, entries(6, 6))
    assert "Input/output error" in info.value.reason
    wal.close()
    # The unsynced save may or may not have reached the disk; nothing else is lost or damaged.
    log = summary(read_back(waldir)[2])
    assert log in (summary(entries(1, 3)), summary(entries(1, 5)))


_CHILD = """
import resource, signal, sys
from petcd.errors import DiskFullError
from petcd.pb import raft_pb2
from petcd.wal import WAL

waldir, limit = sys.argv[1], int(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    WAL.create(waldir + "-small", b"m", 2 * limit)  # cannot even preallocate
except DiskFullError as exc:
    print("create-full", exc.path, flush=True)
wal = WAL.create(waldir, b"m", 65536)
index = 0
def save(count, size):
    global index
    batch = [raft_pb2.Entry(term=1, index=index + k + 1, data=b"d" * size) for k in range(count)]
    wal.save(raft_pb2.HardState(term=1, commit=index), batch)
    index += count
    print("saved", index, flush=True)
for _ in range(30):
    save(50, 256)
try:
    save(2000, 256)  # half a MiB in one save: the file cannot grow that far
except DiskFullError as exc:
    print("full", exc.path, flush=True)
for _ in range(3):
    save(5, 256)
wal.close()
"""


def test_a_file_size_limit_in_a_child_gives_disk_full(tmp_path: pathlib.Path) -> None:
    waldir = str(tmp_path / "wal")
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, waldir, str(96 * 1024)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("create-full ")
    assert not WAL.exists(waldir + "-small")
    assert os.listdir(waldir + "-small") == ["petcd.lock"]
    full = [n for n, line in enumerate(lines) if line.startswith("full ")]
    assert len(full) == 1
    acked = [int(line.split()[1]) for line in lines if line.startswith("saved ")]
    assert acked[-1] == 30 * 50 + 15
    _, state, log = read_back(waldir)
    assert [e.index for e in log] == list(range(1, acked[-1] + 1))
    assert state.commit == acked[-1] - 5


def test_no_space_for_a_snapshot_file_leaves_nothing_behind(tmp_path: pathlib.Path) -> None:
    disk = FaultyDisk(space_bytes=100)
    snapper = Snapshotter(str(tmp_path), disk=disk)
    snapshot = raft_pb2.Snapshot(data=b"s" * 1000)
    snapshot.metadata.index, snapshot.metadata.term = 7, 2
    with pytest.raises(DiskFullError):
        snapper.save(snapshot)
    assert os.listdir(tmp_path) == []
    assert snapper.load_newest() is None
    disk.space_bytes = 10_000
    snapper.save(snapshot)
    assert snapper.load_newest() == snapshot
