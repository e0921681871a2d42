"""A small synchronous cluster of RawNodes for the raft tests (and the text scenarios).

Each member follows rawnode.py's persistence rules exactly: persist the Ready (hard state,
entries, snapshot) into its MemoryStorage, queue its messages, apply its committed entries
(conf changes through apply_conf_change), advance. Messages wait in per-member inboxes until
delivered; the test decides when (stabilize() delivers everything until quiet).

`out` collects a readable trace (used by the text scenarios).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from petcd.errors import ConfChangeError
from petcd.pb.raft_pb2 import (
    ENTRY_CONF_CHANGE,
    ENTRY_CONF_CHANGE_V2,
    ENTRY_NORMAL,
    ConfState,
    Entry,
    Message,
)
from petcd.raft import Config, MemoryStorage, Peer, RawNode, ReadState, Ready, StateType
from petcd.raft.raft import decode_conf_change
from petcd.raft.util import (
    describe_entries,
    describe_entry,
    describe_hard_state,
    describe_message,
    describe_snapshot,
)

STATE_NAMES = {
    StateType.FOLLOWER: "StateFollower",
    StateType.CANDIDATE: "StateCandidate",
    StateType.LEADER: "StateLeader",
    StateType.PRE_CANDIDATE: "StatePreCandidate",
}


@dataclass
class Member:
    id: int
    storage: MemoryStorage
    node: RawNode
    applied: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    conf_state: ConfState = field(default_factory=ConfState)
    is_leader: bool = False


class Cluster:
    """Members by id; `inbox[id]` holds messages waiting for delivery to id."""

    def __init__(
        self,
        ids: Iterable[int],
        *,
        seed: int = 0,
        **cfg: object,
    ) -> None:
        self.rng = random.Random(seed)
        self.cfg = dict(election_tick=10, heartbeat_tick=1)
        self.cfg.update(cfg)
        self.members: dict[int, Member] = {}
        self.inbox: dict[int, list[Message]] = {}
        self.blocked: set[tuple[int, int]] = set()
        self.drop_types: set[int] = set()
        self.out: list[str] = []
        self.sent: list[Message] = []  # every message handed to the network, in order
        self.trace = False
        peers = [Peer(i) for i in ids]
        for p in peers:
            self.add_member(p.id, peers)

    def log(self, line: str) -> None:
        if self.trace:
            self.out.append(line)

    # --- membership of the harness ---------------------------------------------------------

    def add_member(
        self, id_: int, peers: list[Peer] | None, storage: MemoryStorage | None = None
    ) -> Member:
        """A member; bootstrapped with `peers` when given, else empty (joins later)."""
        storage = storage if storage is not None else MemoryStorage()
        node = RawNode(self._config(id_, storage))
        if peers is not None:
            node.bootstrap(peers)
        m = Member(id_, storage, node)
        self.members[id_] = m
        self.inbox.setdefault(id_, [])
        for _ in range(10):
            if not self.process(id_):
                break
        return m

    def _config(self, id_: int, storage: MemoryStorage, applied: int = 0) -> Config:
        kwargs = dict(self.cfg)
        rng = kwargs.pop("rng", None)
        return Config(
            id=id_,
            storage=storage,
            applied=applied,
            rng=rng if isinstance(rng, random.Random) else random.Random(self.rng.random()),
            **kwargs,  # type: ignore[arg-type]
        )

    def restart(self, id_: int) -> None:
        """Crash and restart a member from what it persisted (its applied state kept)."""
        m = self.members[id_]
        applied = m.applied[-1].index if m.applied else 0
        applied = max(applied, m.storage.snapshot().metadata.index)
        m.node = RawNode(self._config(id_, m.storage, applied))
        m.is_leader = False
        self.inbox[id_] = []

    def node(self, id_: int) -> RawNode:
        return self.members[id_].node

    def raft(self, id_: int):  # type: ignore[no-untyped-def]
        return self.members[id_].node.raft

    def leader(self) -> int:
        leaders = [i for i, m in sorted(self.members.items()) if m.node.state == StateType.LEADER]
        return max(leaders, key=lambda i: self.node(i).term) if leaders else 0

    # --- network -----------------------------------------------------------------------------

    def isolate(self, id_: int) -> None:
        for other in self.members:
            if other != id_:
                self.blocked.add((id_, other))
                self.blocked.add((other, id_))

    def cut(self, a: int, b: int) -> None:
        self.blocked.add((a, b))
        self.blocked.add((b, a))

    def recover(self) -> None:
        self.blocked.clear()
        self.drop_types.clear()

    def send(self, msgs: Iterable[Message]) -> None:
        for m in msgs:
            self.sent.append(m)
            if (m.from_, m.to) in self.blocked or m.type in self.drop_types:
                self.log(f"  dropped: {describe_message(m)}")
                continue
            if m.to in self.inbox:
                self.inbox[m.to].append(m)

    def deliver(self, id_: int, filt: Callable[[Message], bool] | None = None) -> int:
        """Step every queued message for id_ (those passing filt); how many were delivered."""
        msgs = self.inbox[id_]
        keep = []
        take = []
        for m in msgs:
            (take if filt is None or filt(m) else keep).append(m)
        self.inbox[id_] = keep
        if take:
            self.log(f"> {id_} receiving messages")
        for m in take:
            self.log(f"  {describe_message(m)}")
            self.members[id_].node.step(m)
        return len(take)

    # --- Ready handling ----------------------------------------------------------------------

    def process(self, id_: int) -> bool:
        """Handle one Ready of id_ as the server would; whether there was one."""
        m = self.members[id_]
        node = m.node
        if not node.has_ready():
            return False
        rd = node.ready()
        self._describe_ready(id_, rd)
        if rd.soft_state is not None:
            m.is_leader = rd.soft_state.raft_state == StateType.LEADER
        if m.is_leader:
            self.send(rd.messages)  # a leader may send before persisting (rule 2)
        if rd.snapshot is not None:
            m.storage.apply_snapshot(rd.snapshot)
        if rd.entries:
            m.storage.append(rd.entries)
        if rd.hard_state is not None:
            m.storage.set_hard_state(rd.hard_state)
        if not m.is_leader:
            self.send(rd.messages)
        if rd.snapshot is not None:
            m.conf_state = rd.snapshot.metadata.conf_state
            m.applied = [e for e in m.applied if e.index <= rd.snapshot.metadata.index]
        for e in rd.committed_entries:
            self._apply(m, e)
        m.read_states.extend(rd.read_states)
        node.advance(rd)
        return True

    def _apply(self, m: Member, e: Entry) -> None:
        m.applied.append(e)
        if e.type in (ENTRY_CONF_CHANGE, ENTRY_CONF_CHANGE_V2):
            try:
                m.conf_state = m.node.apply_conf_change(decode_conf_change(e.type, e.data))
            except ConfChangeError as exc:
                self.log(f"  conf change refused: {exc.message}")
        else:
            assert e.type == ENTRY_NORMAL

    def _describe_ready(self, id_: int, rd: Ready) -> None:
        if not self.trace:
            return
        self.log(f"> {id_} handling Ready")
        if rd.soft_state is not None:
            self.log(f"  State:{STATE_NAMES[rd.soft_state.raft_state]} Lead:{rd.soft_state.lead}")
        if rd.hard_state is not None:
            self.log(f"  HardState {describe_hard_state(rd.hard_state)}")
        if rd.entries:
            self.log("  Entries:")
            for e in rd.entries:
                self.log(f"  {describe_entry(e)}")
        if rd.snapshot is not None:
            self.log(f"  Snapshot {describe_snapshot(rd.snapshot)}")
        if rd.committed_entries:
            self.log("  CommittedEntries:")
            for e in rd.committed_entries:
                self.log(f"  {describe_entry(e)}")
        if rd.messages:
            self.log("  Messages:")
            for msg in rd.messages:
                self.log(f"  {describe_message(msg)}")
        for rs in rd.read_states:
            self.log(f"  ReadState Index:{rs.index} Ctx:{rs.request_ctx.decode()}")

    def stabilize(self, ids: Iterable[int] | None = None, max_rounds: int = 1000) -> None:
        """Process Readys and deliver messages until nothing moves (bounded)."""
        which = sorted(ids) if ids is not None else None
        for _ in range(max_rounds):
            moved = False
            for id_ in sorted(self.members):
                if which is not None and id_ not in which:
                    continue
                while self.process(id_):
                    moved = True
            for id_ in sorted(self.members):
                if which is not None and id_ not in which:
                    continue
                if self.deliver(id_):
                    moved = True
            if not moved:
                return
        raise AssertionError("cluster did not stabilize")

    # --- conveniences ------------------------------------------------------------------------

    def tick(self, id_: int, n: int = 1) -> None:
        for _ in range(n):
            self.node(id_).tick()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for id_ in sorted(self.members):
                self.node(id_).tick()

    def elect(self, id_: int) -> None:
        self.node(id_).campaign()
        self.stabilize()
        assert self.node(id_).state == StateType.LEADER, self.node(id_).state

    def propose(self, id_: int, data: bytes) -> None:
        self.node(id_).propose(data)
        self.stabilize()

    def log_of(self, id_: int) -> list[Entry]:
        return self.raft(id_).raft_log.all_entries()  # type: ignore[no-any-return]

    def payloads(self, id_: int) -> list[bytes]:
        return [e.data for e in self.members[id_].applied if e.type == ENTRY_NORMAL and e.data]

    def describe_log(self, id_: int) -> str:
        return describe_entries(self.log_of(id_))
