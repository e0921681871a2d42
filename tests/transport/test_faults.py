"""Fault injection: partitions both ways and one way, seeded drop rate, delay, heal."""

from __future__ import annotations

import asyncio

import pytest

from petcd.errors import PeerTimeoutError, PeerUnreachableError
from tests.transport.helpers import Member, MemberFactory, connect, eventually, heartbeat


async def _pong(payload: bytes) -> bytes:
    return b"pong"


async def _three(members: MemberFactory) -> tuple[Member, Member, Member]:
    a, b, c = [await members(i) for i in (1, 2, 3)]
    for m in (a, b, c):
        m.t.register("ping", _pong)
    await connect(a, b, c)
    return a, b, c


def _broadcast(sender: Member, term: int) -> None:
    sender.t.send([heartbeat(sender.id, to, term=term) for to in (1, 2, 3) if to != sender.id])


async def test_partition_both_ways_cuts_a_minority_off(members: MemberFactory) -> None:
    a, b, c = await _three(members)
    c.t.faults.partition({1, 2})  # one side suffices: c drops what it sends and receives
    for m in (a, b, c):
        _broadcast(m, term=1)
    await a.wait(lambda: [x.from_ for x in a.messages] == [2])
    await b.wait(lambda: [x.from_ for x in b.messages] == [1])
    # c's messages never left (one per peer); what reached c was discarded after decoding
    await eventually(lambda: c.t.stats[1].fault_drops == 2 and c.t.stats[2].fault_drops == 2)
    assert c.messages == []
    assert c.t.active_since(1) is None and c.t.reachable_peers() == []
    assert a.t.active_since(3) is not None  # a cannot tell (no loss is reported for drops)
    with pytest.raises(PeerUnreachableError, match="partitioned"):
        await c.t.call(1, "ping", timeout_s=1.0)
    with pytest.raises(PeerTimeoutError):  # c drops the request: the caller times out
        await a.t.call(3, "ping", timeout_s=0.3)
    # heal: traffic flows again, in order
    c.t.faults.heal()
    for m in (a, b, c):
        _broadcast(m, term=2)
    await c.wait(lambda: sorted((x.from_, x.term) for x in c.messages) == [(1, 2), (2, 2)])
    await a.wait(lambda: sorted((x.from_, x.term) for x in a.messages) == [(2, 1), (2, 2), (3, 2)])
    assert await c.t.call(1, "ping", timeout_s=1.0) == b"pong"


async def test_one_way_partitions(members: MemberFactory) -> None:
    a, b, _c = await _three(members)
    a.t.faults.partition({2}, direction="out")  # a -> b lost, b -> a fine
    a.t.send([heartbeat(1, 2, term=1)])
    b.t.send([heartbeat(2, 1, term=1)])
    await a.wait(lambda: len(a.messages) == 1)
    assert a.t.stats[2].fault_drops == 1
    assert a.t.active_since(2) is None and b.t.active_since(1) is not None
    assert await b.t.call(1, "ping", timeout_s=1.0) == b"pong"
    a.t.faults.heal({2})
    a.t.faults.partition({2}, direction="in")  # now the other way: b -> a lost
    a.t.send([heartbeat(1, 2, term=2)])
    b.t.send([heartbeat(2, 1, term=2)])
    await b.wait(lambda: [m.term for m in b.messages] == [2])
    await eventually(lambda: a.t.stats[2].fault_drops == 2)
    assert [m.term for m in a.messages] == [1]
    assert await a.t.call(2, "ping", timeout_s=1.0) == b"pong"
    assert a.t.faults.partitioned_in == {2} and a.t.faults.partitioned_out == set()


async def _drop_run(members: MemberFactory, seed: int) -> list[int]:
    a = await members(10 + seed, seed=seed)
    b = await members(20 + seed)
    await connect(a, b)
    a.t.faults.drop_rate = 0.3
    a.t.send([heartbeat(a.id, b.id, term=i + 1) for i in range(1000)])
    dropped = a.t.stats[b.id].fault_drops
    await b.wait(lambda: len(b.messages) == 1000 - dropped)
    return [m.term for m in b.messages]


async def test_drop_rate_is_seeded(members: MemberFactory) -> None:
    first = await _drop_run(members, seed=5)
    again = await _drop_run(members, seed=5)
    other = await _drop_run(members, seed=6)
    assert first == again  # same seed, same sends: the same messages dropped
    assert first != other
    assert 600 <= len(first) <= 800  # ~30 % dropped
    assert first == sorted(first)  # survivors still in order


async def test_delay_keeps_order_and_takes_its_time(members: MemberFactory) -> None:
    a, b = await members(1), await members(2)
    await connect(a, b)
    a.t.faults.delay_s = 0.15
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    for i in range(10):
        a.t.send([heartbeat(1, 2, term=i * 3 + k + 1) for k in range(3)])
        await asyncio.sleep(0.005)
    await b.wait(lambda: len(b.messages) == 30)
    assert loop.time() - sent_at >= 0.15
    assert [m.term for m in b.messages] == list(range(1, 31))
    a.t.faults.delay_s = 0.0
    a.t.send([heartbeat(1, 2, term=99)])
    await b.wait(lambda: b.messages[-1].term == 99)
