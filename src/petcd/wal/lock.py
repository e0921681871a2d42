"""DirLock: one process at a time per directory, with an flock on a lock file inside it.

flock locks belong to the open file description, so the lock is held exactly as long as the
DirLock's descriptor is open (a crashed process releases it; a second DirLock on the same
directory fails even inside one process). The lock file holds the owner's pid, for people.
"""

from __future__ import annotations

import fcntl
import os
from types import TracebackType

from petcd.errors import DataDirLockedError

LOCK_NAME = "petcd.lock"


class DirLock:
    """An exclusive lock on directory `path` (created if missing); raises DataDirLockedError."""

    def __init__(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        self._fd: int | None = None
        fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLockedError(path) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        try:  # the pid is for people looking at the directory; a full disk must not stop us
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        assert self._fd is not None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock up; releasing twice is harmless."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the flock
        assert self._fd is None

    def __enter__(self) -> DirLock:
        assert self._fd is not None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
