"""Small builders shared by the WAL tests."""

from __future__ import annotations

import os
import shutil

from petcd.pb import raft_pb2
from petcd.wal import WAL


def entry(index: int, term: int = 1, data: bytes | None = None) -> raft_pb2.Entry:
    """An entry whose data names its own index and term unless given."""
    if data is None:
        data = f"{term}:{index}".encode()
    return raft_pb2.Entry(term=term, index=index, data=data)


def entries(first: int, last: int, term: int = 1, size: int = 0) -> list[raft_pb2.Entry]:
    """Entries first..last inclusive; `size` pads each one's data to that many bytes."""
    out = []
    for index in range(first, last + 1):
        data = f"{term}:{index}".encode()
        out.append(entry(index, term, data.ljust(size, b".")))
    return out


def hard_state(term: int, commit: int, vote: int = 0) -> raft_pb2.HardState:
    return raft_pb2.HardState(term=term, vote=vote, commit=commit)


def summary(ents: list[raft_pb2.Entry]) -> list[tuple[int, int, bytes]]:
    return [(e.index, e.term, e.data) for e in ents]


def segment_paths(dirpath: str) -> list[str]:
    return sorted(os.path.join(dirpath, n) for n in os.listdir(dirpath) if n.endswith(".wal"))


def read_back(dirpath: str, **kwargs: object) -> tuple[bytes, raft_pb2.HardState, list]:
    """Open, read everything, close."""
    wal = WAL.open(dirpath, **kwargs)  # type: ignore[arg-type]
    try:
        return wal.read_all()
    finally:
        wal.close()


def copy_dir(src: str, dst: str) -> str:
    shutil.copytree(src, dst)
    lock = os.path.join(dst, "petcd.lock")
    if os.path.exists(lock):
        os.remove(lock)
    return dst
