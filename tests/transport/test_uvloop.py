"""The same transport on uvloop (the server's loop when installed): messages, RPC, a
snapshot and TLS, in one scenario."""

from __future__ import annotations

import asyncio
import os
import pathlib

import pytest

from petcd.transport import TransportTLS
from tests.support.certs import make_certs
from tests.transport.helpers import MemberFactory, eventually, heartbeat, member_factory
from tests.transport.test_snapshot import snap_message

uvloop = pytest.importorskip("uvloop")


async def _echo(payload: bytes) -> bytes:
    return payload


async def _scenario(tmp_path: pathlib.Path) -> None:
    assert "uvloop" in type(asyncio.get_running_loop()).__module__
    factory = member_factory(tmp_path)
    make = await anext(factory)
    try:
        await _exercise(make, tmp_path)
    finally:
        await factory.aclose()


async def _exercise(make: MemberFactory, tmp_path: pathlib.Path) -> None:
    certs = make_certs(tmp_path / "certs")
    tls = TransportTLS(
        certs.server.cert_file, certs.server.key_file, certs.ca_file, client_cert_auth=True
    )
    a = await make(1, start=False, tls=tls)
    b = await make(2, start=False, tls=tls)
    await a.start("https://127.0.0.1:0")
    await b.start("https://127.0.0.1:0")
    a.t.add_peer(2, [b.url])
    b.t.register("echo", _echo)
    assert await a.t.call(2, "echo", b"uv", timeout_s=5.0) == b"uv"
    await eventually(lambda: a.t.active_since(2) is not None)
    a.t.send([heartbeat(1, 2, term=i + 1) for i in range(300)])
    await b.wait(lambda: len(b.messages) == 300)
    assert [m.term for m in b.messages] == list(range(1, 301))
    db = tmp_path / "db"
    db.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    a.t.send_snapshot(snap_message(1, 2, 5), str(db))
    await a.wait(lambda: a.snapshot_reports == [(2, True)])
    assert pathlib.Path(b.snapshots[0][1]).read_bytes() == db.read_bytes()


def test_everything_on_uvloop(tmp_path: pathlib.Path) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(_scenario(tmp_path), 60))
