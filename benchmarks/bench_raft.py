"""The raft core alone: committed entries per second through a 3-member in-memory cluster.

Three RawNodes with MemoryStorage, driven exactly as the server drives them (persist the
Ready, send its messages, apply its committed entries, advance), with messages passed
between them in memory. The leader receives proposals in batches of 100 (`propose_batch`),
one batch per round of the loop, so replication is pipelined as in a busy server. An entry
counts once every member has applied it. No disk, no network, no serialisation: this is the
cost of consensus itself in Python.

Figures: raft.entries_per_s (target: at least 100,000 on the 2-core machine) and
raft.us_per_entry (CPU time per committed entry, all three members together).
"""

from __future__ import annotations

import random
import time

from benchmarks.common import record
from petcd.pb.raft_pb2 import ENTRY_CONF_CHANGE, ConfChange, Message
from petcd.raft import Config, MemoryStorage, Peer, RawNode, StateType

BATCH = 100
PAYLOAD = b"k" * 16 + b"v" * 48  # a small put: key and value bytes
TOTAL_ENTRIES = 300_000
WARMUP_ENTRIES = 20_000
MAX_ROUNDS = 1_000_000


class Member:
    __slots__ = ("applied", "inbox", "is_leader", "node", "storage")

    def __init__(self, id_: int, peers: list[Peer]) -> None:
        self.storage = MemoryStorage()
        cfg = Config(
            id=id_,
            election_tick=10,
            heartbeat_tick=1,
            storage=self.storage,
            max_inflight_msgs=256,
            rng=random.Random(id_),
        )
        self.node = RawNode(cfg)
        self.node.bootstrap(peers)
        self.inbox: list[Message] = []
        self.is_leader = False
        self.applied = 0


def handle_ready(m: Member, members: dict[int, Member]) -> bool:
    node = m.node
    if not node.has_ready():
        return False
    rd = node.ready()
    if rd.soft_state is not None:
        m.is_leader = rd.soft_state.raft_state == StateType.LEADER
    if m.is_leader:
        for msg in rd.messages:
            members[msg.to].inbox.append(msg)
    if rd.entries:
        m.storage.append(rd.entries)
    if rd.hard_state is not None:
        m.storage.set_hard_state(rd.hard_state)
    if not m.is_leader:
        for msg in rd.messages:
            members[msg.to].inbox.append(msg)
    ents = rd.committed_entries
    if ents:
        for e in ents:
            if e.type == ENTRY_CONF_CHANGE:
                node.apply_conf_change(ConfChange.FromString(e.data))
        m.applied = ents[-1].index
    node.advance(rd)
    return True


def pump(members: dict[int, Member]) -> None:
    for m in members.values():
        while handle_ready(m, members):
            pass
    for m in members.values():
        if m.inbox:
            msgs = m.inbox
            m.inbox = []
            for msg in msgs:
                m.node.step(msg)


def cluster() -> dict[int, Member]:
    peers = [Peer(i) for i in (1, 2, 3)]
    members = {i: Member(i, peers) for i in (1, 2, 3)}
    for _ in range(5):
        pump(members)
    members[1].node.campaign()
    for _ in range(20):
        pump(members)
    assert members[1].node.state == StateType.LEADER
    return members


def run(total: int) -> tuple[float, float, int]:
    """(wall seconds, cpu seconds, entries) to commit and apply `total` entries everywhere."""
    members = cluster()
    leader = members[1]
    start_index = leader.node.raft.raft_log.last_index()
    target = start_index + total
    batch = [PAYLOAD] * BATCH
    proposed = 0
    wall = time.perf_counter()
    cpu = time.process_time()
    for _ in range(MAX_ROUNDS):
        if proposed < total:
            leader.node.propose_batch(batch)
            proposed += BATCH
        pump(members)
        if min(m.applied for m in members.values()) >= target:
            break
    else:
        raise AssertionError("benchmark did not converge")
    return time.perf_counter() - wall, time.process_time() - cpu, total


def main() -> None:
    run(WARMUP_ENTRIES)
    wall, cpu, n = run(TOTAL_ENTRIES)
    print(f"3 members, batches of {BATCH}, {len(PAYLOAD)}-byte payloads, {n:,} entries")
    record("raft.entries_per_s", n / wall, "entries/s", batch=BATCH, payload_bytes=len(PAYLOAD))
    record("raft.us_per_entry", cpu / n * 1e6, "us/entry (cpu, all 3 members)")


if __name__ == "__main__":
    main()
