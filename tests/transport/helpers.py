"""Test members: a Transport plus recorders of everything it hands to its server."""

from __future__ import annotations

import asyncio
import pathlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from petcd.pb.raft_pb2 import MSG_APP, MSG_HEARTBEAT, Entry, Message
from petcd.transport import Transport, TransportLimits, TransportTLS

CLUSTER = 0xC1
LOOPBACK = "http://127.0.0.1:0"


class Member:
    """One member's transport. Every callback is recorded and wakes `wait()`ers."""

    def __init__(
        self,
        member_id: int,
        cluster_id: int,
        snap_dir: pathlib.Path,
        *,
        tls: TransportTLS | None = None,
        limits: TransportLimits | None = None,
        seed: int = 0,
        on_message: Callable[[Message], None] | None = None,
    ) -> None:
        self.id = member_id
        self.snap_dir = snap_dir
        self.messages: list[Message] = []
        self.unreachable: list[int] = []
        self.snapshot_reports: list[tuple[int, bool]] = []
        self.snapshots: list[tuple[Message, str]] = []
        self.url = ""
        self._changed = asyncio.Event()
        self._extra = on_message
        self.transport = Transport(
            member_id,
            cluster_id,
            on_message=self._on_message,
            on_snapshot=self._on_snapshot,
            report_unreachable=self._on_unreachable,
            report_snapshot=self._on_report_snapshot,
            snapshot_path_for=lambda index: str(snap_dir / f"{index:016x}.snap.db"),
            tls=tls,
            rng=random.Random(seed or member_id),
            limits=limits,
        )

    @property
    def t(self) -> Transport:
        return self.transport

    def _on_message(self, m: Message) -> None:
        self.messages.append(m)
        if self._extra is not None:
            self._extra(m)
        self._changed.set()

    def _on_snapshot(self, m: Message, path: str) -> None:
        self.snapshots.append((m, path))
        self._changed.set()

    def _on_unreachable(self, member_id: int) -> None:
        self.unreachable.append(member_id)
        self._changed.set()

    def _on_report_snapshot(self, member_id: int, ok: bool) -> None:
        self.snapshot_reports.append((member_id, ok))
        self._changed.set()

    async def start(self, url: str = LOOPBACK) -> str:
        urls = await self.transport.start([url])
        self.url = urls[0]
        return self.url

    async def wait(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Until `condition()` holds, re-checked after every callback this member gets."""
        async with asyncio.timeout(timeout_s):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def from_(self, sender: int) -> list[Message]:
        return [m for m in self.messages if m.from_ == sender]


async def eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll a condition that no callback announces (connection state), under a timeout."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


async def connect(*members: Member) -> None:
    """Make every member a peer of every other and wait until all message links are up."""
    for a in members:
        for b in members:
            if a is not b and b.id not in a.t.peers():
                a.t.add_peer(b.id, [b.url])
    await eventually(
        lambda: all(
            a.t.active_since(b.id) is not None for a in members for b in members if a is not b
        )
    )


def heartbeat(frm: int, to: int, term: int = 1, context: bytes = b"") -> Message:
    return Message(type=MSG_HEARTBEAT, from_=frm, to=to, term=term, context=context)


def append(frm: int, to: int, index: int, data: bytes = b"x" * 64) -> Message:
    entry = Entry(term=1, index=index, data=data)
    return Message(type=MSG_APP, from_=frm, to=to, term=1, index=index - 1, entries=[entry])


MemberFactory = Callable[..., Awaitable[Member]]


async def member_factory(tmp_path: pathlib.Path) -> AsyncIterator[MemberFactory]:
    made: list[Member] = []

    async def make(
        member_id: int, cluster_id: int = CLUSTER, *, start: bool = True, **kwargs: Any
    ) -> Member:
        snap_dir = tmp_path / f"snap-{member_id}-{len(made)}"
        snap_dir.mkdir()
        member = Member(member_id, cluster_id, snap_dir, **kwargs)
        made.append(member)
        if start:
            await member.start()
        return member

    try:
        yield make
    finally:
        failures = []
        for member in made:
            try:
                await member.t.stop()
            except BaseException as exc:  # every member is stopped; a bug in any fails the test
                failures.append(exc)
        if failures:
            raise failures[0]
