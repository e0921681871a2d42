"""The file operations that change a data directory, behind one small class.

Every write, preallocation and sync of the WAL and the Snapshotter goes through a `Disk`, so
tests (and a future simulator) can inject faults such as a full disk or a failing sync without
root privileges. The real `Disk` loops on short writes and fsyncs directories after entries in
them are created, renamed or removed, so a rename survives a power cut.

`storage_error` maps an OSError to the typed error a caller sees: ENOSPC, EDQUOT and EFBIG
(the file size limit) become DiskFullError, anything else StorageIOError.
"""

from __future__ import annotations

import errno
import os

from petcd.errors import DiskFullError, StorageError, StorageIOError

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# posix_fallocate is refused by some file systems; the segment then grows as it is written.
_NO_FALLOCATE_ERRNOS = frozenset({errno.EINVAL, errno.EOPNOTSUPP})


def storage_error(path: str, exc: OSError) -> StorageError:
    """The typed error for an OSError raised while working on `path`."""
    assert isinstance(exc, OSError)
    reason = exc.strerror or str(exc)
    if exc.errno in _FULL_ERRNOS:
        return DiskFullError(path, reason)
    return StorageIOError(path, reason)


class Disk:
    """Real file operations. Methods raise OSError; callers map it with `storage_error`."""

    def write(self, fd: int, data: bytes, offset: int) -> None:
        """Write all of `data` at `offset`, looping on short writes."""
        assert offset >= 0
        view = memoryview(data)
        done = 0
        while done < len(view):  # bounded: every pass writes at least one byte or raises
            written = os.pwrite(fd, view[done:], offset + done)
            assert written > 0, "pwrite made no progress"
            done += written
        assert done == len(data)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def allocate(self, fd: int, size_bytes: int) -> None:
        """Reserve `size_bytes` for the file so writes into it cannot run out of space."""
        assert size_bytes > 0
        try:
            os.posix_fallocate(fd, 0, size_bytes)
        except OSError as exc:
            if exc.errno not in _NO_FALLOCATE_ERRNOS:
                raise

    def fsync_dir(self, path: str) -> None:
        """Make the directory's entries (creations, renames, removals) durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)
