"""A member whose essential task fails stops (and `petcd` exits non-zero), never half alive."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from petcd import errors
from petcd.pb import internal_pb2, rpc_pb2
from petcd.server.config import resolve
from petcd.server.etcdserver import EtcdServer
from petcd.wal import WAL
from tests.support.process import free_port


async def test_a_failed_wal_write_stops_the_member(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer = free_port()
    config = resolve(
        {
            "data-dir": str(tmp_path / "m"),
            "listen-peer-urls": f"http://127.0.0.1:{peer}",
            "initial-advertise-peer-urls": f"http://127.0.0.1:{peer}",
            "initial-cluster": f"default=http://127.0.0.1:{peer}",
        },
        environ={},
    )
    server = EtcdServer(config)
    await server.start()
    try:
        await asyncio.wait_for(server.wait_applied(1), timeout=10)  # elected itself

        def broken_save(*_args: object) -> None:
            raise OSError(5, "injected: Input/output error")

        monkeypatch.setattr(WAL, "save", broken_save)
        put = internal_pb2.InternalRaftRequest(put=rpc_pb2.PutRequest(key=b"k", value=b"v"))
        with pytest.raises(errors.StoppedError):
            await asyncio.wait_for(server.propose(put), timeout=10)
        await asyncio.wait_for(server.stopped.wait(), timeout=10)
        assert server.failed
    finally:
        await server.stop()
