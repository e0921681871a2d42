"""DirLock: one holder per directory, inside one process and across processes."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from petcd.errors import DataDirLockedError
from petcd.wal import WAL, DirLock

_HOLDER = """
import sys
from petcd.wal import WAL
wal = WAL.open(sys.argv[1])
print("locked", flush=True)
sys.stdin.readline()  # hold the WAL open until the parent writes a line
wal.close()
print("released", flush=True)
"""


def test_a_second_lock_fails_until_the_first_is_released(tmp_path: pathlib.Path) -> None:
    lock = DirLock(str(tmp_path))
    assert lock.held
    with pytest.raises(DataDirLockedError) as info:
        DirLock(str(tmp_path))
    assert str(tmp_path) in info.value.message
    lock.release()
    lock.release()
    assert not lock.held
    with DirLock(str(tmp_path)) as again:
        assert again.held
    assert not again.held


def test_another_process_cannot_open_the_same_wal(tmp_path: pathlib.Path) -> None:
    waldir = str(tmp_path / "wal")
    WAL.create(waldir, b"m", 4096).close()
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, waldir],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        try:
            assert child.stdout.readline() == "locked\n"
            with pytest.raises(DataDirLockedError):
                WAL.open(waldir)
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline() == "released\n"
        finally:
            child.stdin.close()
            assert child.wait(timeout=30) == 0
    WAL.open(waldir).close()


def test_a_killed_holder_releases_the_lock(tmp_path: pathlib.Path) -> None:
    waldir = str(tmp_path / "wal")
    WAL.create(waldir, b"m", 4096).close()
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, waldir], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == b"locked\n"
        child.kill()
        child.wait(timeout=30)
    WAL.open(waldir).close()
