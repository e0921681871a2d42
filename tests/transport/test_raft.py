"""Three raft RawNodes driven by a tiny asyncio loop over three real Transports: they elect a
leader, commit proposals, survive a partitioned leader, and a lagging member catches up through
a snapshot streamed by the transport. This is the wiring the server does."""

from __future__ import annotations

import asyncio
import pathlib
import random
from collections.abc import AsyncIterator, Callable

import pytest

from petcd.pb.raft_pb2 import ENTRY_CONF_CHANGE, ConfChange, ConfState, Message
from petcd.raft import Config, MemoryStorage, Peer, RawNode, Ready, StateType
from petcd.transport import Transport
from tests.transport.helpers import CLUSTER, eventually

TICK_S = 0.02
IDS = (1, 2, 3)


class RaftMember:
    """A member without a server: RawNode + MemoryStorage + Transport + a list as its state."""

    def __init__(self, member_id: int, workdir: pathlib.Path) -> None:
        self.id = member_id
        self.workdir = workdir
        self.storage = MemoryStorage()
        config = Config(
            id=member_id,
            election_tick=10,
            heartbeat_tick=1,
            storage=self.storage,
            check_quorum=True,
            pre_vote=True,
            rng=random.Random(member_id),
        )
        self.node = RawNode(config)
        self.node.bootstrap([Peer(id=i) for i in IDS])
        self.applied: list[bytes] = []  # the state machine: payloads in commit order
        self.applied_index = 0
        self.conf_state = ConfState()
        self.is_leader = False
        self.received_files: dict[int, str] = {}
        self.snapshot_reports: list[tuple[int, bool]] = []
        self.wake = asyncio.Event()
        self.transport = Transport(
            member_id,
            CLUSTER,
            on_message=self._step,
            on_snapshot=self._snapshot_received,
            report_unreachable=self._unreachable,
            report_snapshot=self._report_snapshot,
            snapshot_path_for=lambda index: str(workdir / f"received-{index}.db"),
            snapshot_source=self._snapshot_file,
            rng=random.Random(100 + member_id),
        )

    # --- transport callbacks -------------------------------------------------------------------

    def _step(self, m: Message) -> None:
        self.node.step(m)
        self.wake.set()

    def _unreachable(self, member_id: int) -> None:
        self.node.report_unreachable(member_id)
        self.wake.set()

    def _report_snapshot(self, member_id: int, ok: bool) -> None:
        self.snapshot_reports.append((member_id, ok))
        self.node.report_snapshot(member_id, ok)
        self.wake.set()

    def _snapshot_received(self, m: Message, path: str) -> None:
        self.received_files[m.snapshot.metadata.index] = path
        self._step(m)

    def _snapshot_file(self, m: Message) -> str:
        """MSG_SNAP came out of raft: the backend copy of that index (written at compaction)."""
        return str(self.workdir / f"state-{m.snapshot.metadata.index}.db")

    # --- the driver ----------------------------------------------------------------------------

    async def run(self) -> None:
        ticker = asyncio.ensure_future(self._tick())
        try:
            while True:  # until cancelled
                await self.wake.wait()
                self.wake.clear()
                while self.node.has_ready():
                    self._handle(self.node.ready())
        finally:
            ticker.cancel()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.node.tick()
            self.wake.set()

    def _handle(self, rd: Ready) -> None:
        if rd.soft_state is not None:
            self.is_leader = rd.soft_state.raft_state == StateType.LEADER
        if self.is_leader:  # a leader may send before persisting (rawnode.py, rule 2)
            self.transport.send(rd.messages)
        if rd.snapshot is not None and rd.snapshot.metadata.index > 0:
            self._restore(rd.snapshot.metadata.index)
            self.storage.apply_snapshot(rd.snapshot)
            self.conf_state.CopyFrom(rd.snapshot.metadata.conf_state)
        self.storage.append(list(rd.entries))
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)
        if not self.is_leader:
            self.transport.send(rd.messages)
        for entry in rd.committed_entries:
            if entry.type == ENTRY_CONF_CHANGE:
                cc = ConfChange.FromString(entry.data)
                self.conf_state = self.node.apply_conf_change(cc)
            elif entry.data:
                self.applied.append(entry.data)
            self.applied_index = entry.index
        self.node.advance(rd)

    def _restore(self, index: int) -> None:
        path = self.received_files[index]
        self.applied = [p for p in pathlib.Path(path).read_bytes().split(b"\n") if p]
        self.applied_index = index

    def compact(self) -> int:
        """Snapshot the state at the applied index, write its file, drop the log before it."""
        index = self.applied_index
        state = b"\n".join(self.applied)
        (self.workdir / f"state-{index}.db").write_bytes(state)
        self.storage.create_snapshot(index, self.conf_state, b"")
        self.storage.compact(index)
        return index


@pytest.fixture
async def cluster(tmp_path: pathlib.Path) -> AsyncIterator[dict[int, RaftMember]]:
    members = {}
    for i in IDS:
        workdir = tmp_path / f"m{i}"
        workdir.mkdir()
        members[i] = RaftMember(i, workdir)
    urls = {i: (await m.transport.start(["http://127.0.0.1:0"]))[0] for i, m in members.items()}
    for i, m in members.items():
        for j in IDS:
            if j != i:
                m.transport.add_peer(j, [urls[j]])
    drivers = [asyncio.ensure_future(m.run()) for m in members.values()]
    try:
        yield members
    finally:
        for d in drivers:
            d.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)
        for m in members.values():
            await m.transport.stop()


async def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    await eventually(condition, timeout_s)


def leader_of(members: dict[int, RaftMember], among: tuple[int, ...] = IDS) -> RaftMember | None:
    leaders = [members[i] for i in among if members[i].is_leader]
    if len(leaders) != 1:
        return None
    lead = leaders[0]
    agreed = all(members[i].node.leader_id == lead.id for i in among)
    return lead if agreed else None


def propose(leader: RaftMember, payloads: list[bytes]) -> None:
    leader.node.propose_batch(payloads)
    leader.wake.set()


async def test_elect_commit_partition_and_catch_up_by_snapshot(
    cluster: dict[int, RaftMember],
) -> None:
    members = cluster
    # 1. a leader is elected over the real transports
    await wait_until(lambda: leader_of(members) is not None)
    first = leader_of(members)
    assert first is not None
    # 2. proposals commit everywhere, in the same order
    batch1 = [b"a%03d" % i for i in range(100)]
    propose(first, batch1)
    await wait_until(lambda: all(m.applied == batch1 for m in members.values()))
    # 3. partition the leader from both others: the majority elects a new leader
    others = tuple(i for i in IDS if i != first.id)
    first.transport.faults.partition(set(others))
    await wait_until(lambda: leader_of(members, others) is not None)
    second = leader_of(members, others)
    assert second is not None and second.id != first.id
    batch2 = [b"b%03d" % i for i in range(50)]
    propose(second, batch2)
    await wait_until(lambda: all(members[i].applied == batch1 + batch2 for i in others))
    assert first.applied == batch1  # cut off: it saw none of them
    # 4. the new leader compacts its log: the old one can only catch up through a snapshot
    snapshot_index = second.compact()
    first.transport.faults.heal()
    await wait_until(lambda: first.applied == batch1 + batch2)
    assert snapshot_index in first.received_files  # the state came as a streamed file
    assert (first.id, True) in second.snapshot_reports
    # 5. and it keeps replicating afterwards
    batch3 = [b"c%03d" % i for i in range(20)]
    await wait_until(lambda: leader_of(members) is not None)
    leader = leader_of(members)
    assert leader is not None
    propose(leader, batch3)
    await wait_until(lambda: all(m.applied == batch1 + batch2 + batch3 for m in members.values()))
