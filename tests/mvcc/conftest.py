from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from petcd.mvcc import Backend, WatchableStore


class FakeLessor:
    """LeaseHooks for tests: a fixed set of leases and the attachments the store reports."""

    def __init__(self, leases: set[int] | None = None) -> None:
        self.leases = {1} if leases is None else leases
        self.attached: dict[bytes, int] = {}

    def lease_exists(self, lease_id: int) -> bool:
        return lease_id in self.leases

    def attach(self, lease_id: int, key: bytes) -> None:
        assert key not in self.attached, (key, self.attached)
        self.attached[key] = lease_id

    def detach(self, lease_id: int, key: bytes) -> None:
        assert self.attached.get(key) == lease_id, (key, lease_id, self.attached)
        del self.attached[key]


@pytest.fixture
def db_path(tmp_path: pathlib.Path) -> str:
    return str(tmp_path / "member" / "snap" / "db")


@pytest.fixture
def store(db_path: str) -> Iterator[WatchableStore]:
    backend = Backend(db_path, quota_bytes=256 * 1024**2)
    s = WatchableStore(backend, FakeLessor())
    yield s
    backend.close()
