"""Linearizable reads by ReadIndex (raft thesis §6.4): pending requests awaiting a heartbeat quorum.

The leader records its commit index when a read arrives, sends a heartbeat carrying the read's
context, and releases the read (and every read queued before it) once a quorum has echoed that
context: at that point no other leader can have committed anything newer.

Invariants: `queue` lists the contexts of `pending` in arrival order, each once; a released
read releases every earlier one too, with its own recorded index; at most `max_pending` reads
wait at once (more are refused by the caller).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from petcd.pb.raft_pb2 import Message


class ReadOnlyOption(enum.IntEnum):
    # Confirm leadership with a heartbeat quorum for every read batch (safe; the default).
    SAFE = 0
    # Trust the leader lease (needs check-quorum; unsafe with unbounded clock drift).
    LEASE_BASED = 1


@dataclass(slots=True)
class ReadState:
    """A read that may be served once the applied index reaches `index`."""

    index: int
    request_ctx: bytes


@dataclass(slots=True)
class ReadIndexStatus:
    req: Message
    index: int
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    __slots__ = ("max_pending", "option", "pending", "queue")

    def __init__(self, option: ReadOnlyOption, max_pending: int = 4096) -> None:
        self.option = option
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []
        self.max_pending = max_pending

    def full(self) -> bool:
        return len(self.queue) >= self.max_pending

    def add_request(self, index: int, m: Message) -> None:
        ctx = m.entries[0].data
        if ctx in self.pending:
            return
        assert not self.full()
        self.pending[ctx] = ReadIndexStatus(req=m, index=index)
        self.queue.append(ctx)
        assert len(self.queue) == len(self.pending)

    def recv_ack(self, id_: int, ctx: bytes) -> dict[int, bool] | None:
        """Record that id_ echoed ctx; the acks so far (None for an unknown context)."""
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks.add(id_)
        return dict.fromkeys(rs.acks, True)

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Release the read with ctx and every read queued before it."""
        if ctx not in self.pending:
            return []
        k = self.queue.index(ctx)
        released = [self.pending.pop(c) for c in self.queue[: k + 1]]
        del self.queue[: k + 1]
        assert len(self.queue) == len(self.pending)
        return released

    def last_pending_request_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""

    def reset(self) -> None:
        self.pending = {}
        self.queue = []
