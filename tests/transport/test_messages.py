"""Raft messages between real transports on loopback: order, batching, drops, reconnects."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from petcd.errors import PeerClusterIdMismatchError, PeerHandshakeError, TransportConfigError
from petcd.transport import Transport, TransportLimits
from tests.transport.helpers import (
    CLUSTER,
    MemberFactory,
    append,
    connect,
    eventually,
    heartbeat,
)

FAST = TransportLimits(backoff_initial_s=0.01, backoff_max_s=0.05, connect_timeout_s=0.5)


async def test_three_members_in_order_per_peer(members: MemberFactory) -> None:
    a, b, c = [await members(i) for i in (1, 2, 3)]
    await connect(a, b, c)
    rounds, per_round = 50, 20
    for r in range(rounds):  # many loop iterations, each with a few sends per peer
        for sender in (a, b, c):
            out = []
            for k in range(per_round):
                for to in (1, 2, 3):
                    if to != sender.id:
                        out.append(heartbeat(sender.id, to, term=r * per_round + k + 1))
            sender.t.send(out)
        await asyncio.sleep(0)
    total = rounds * per_round
    for receiver in (a, b, c):
        await receiver.wait(lambda r=receiver: len(r.messages) == 2 * total)
        for sender in (a, b, c):
            if sender is not receiver:
                terms = [m.term for m in receiver.from_(sender.id)]
                assert terms == list(range(1, total + 1))
    for sender in (a, b, c):
        assert sender.unreachable == []


async def test_sends_of_one_iteration_travel_in_one_frame(members: MemberFactory) -> None:
    a, b = await members(1), await members(2)
    await connect(a, b)
    for i in range(10):  # ten send() calls, no await between them: one loop iteration
        a.t.send([append(1, 2, index=i * 50 + k + 1) for k in range(50)])
    await b.wait(lambda: len(b.messages) == 500)
    assert b.t.stats[1].received_frames == 1
    assert a.t.stats[2].sent_frames == 1
    assert a.t.stats[2].sent_messages == 500
    assert [m.index for m in b.messages] == list(range(500))
    assert a.t.stats[2].sent_bytes == b.t.stats[1].received_bytes


async def test_a_huge_burst_is_cut_into_frames_below_the_limit(members: MemberFactory) -> None:
    limits = TransportLimits(
        frame_bytes_max=64 * 1024, queue_bytes_max=4 << 20, snapshot_chunk_bytes=32 * 1024
    )
    a = await members(1, limits=limits)
    b = await members(2, limits=limits)
    await connect(a, b)
    a.t.send([append(1, 2, index=i + 1, data=b"p" * 1000) for i in range(1000)])
    await b.wait(lambda: len(b.messages) == 1000)
    assert [m.index for m in b.messages] == list(range(1000))
    frames = b.t.stats[1].received_frames
    assert 16 <= frames <= 20  # ~1 MB in frames of at most 64 KiB


async def test_message_larger_than_a_frame_is_dropped(members: MemberFactory) -> None:
    limits = TransportLimits(
        frame_bytes_max=64 * 1024, queue_bytes_max=1 << 20, snapshot_chunk_bytes=32 * 1024
    )
    a = await members(1, limits=limits)
    b = await members(2, limits=limits)
    await connect(a, b)
    a.t.send([append(1, 2, index=1, data=b"x" * 70_000), heartbeat(1, 2, term=9)])
    await b.wait(lambda: len(b.messages) == 1)
    assert b.messages[0].term == 9
    await a.wait(lambda: a.unreachable == [2])
    assert a.t.stats[2].send_failures == 1


async def test_messages_for_another_member_are_dropped(members: MemberFactory) -> None:
    a, b = await members(1), await members(2)
    await connect(a, b)
    a.t.send([heartbeat(1, 2, term=1)])
    # a buggy sender: same stream, but addressed elsewhere / pretending to be someone else
    a.t._peers[2].enqueue(heartbeat(1, 3, term=2).SerializeToString())
    a.t._peers[2].enqueue(heartbeat(4, 2, term=3).SerializeToString())
    a.t.send([heartbeat(1, 2, term=4)])
    await b.wait(lambda: len(b.messages) == 2)
    assert [m.term for m in b.messages] == [1, 4]
    assert b.t.misaddressed_drops == 2


async def test_unknown_peer_is_reported_unreachable(members: MemberFactory) -> None:
    a = await members(1)
    a.t.send([heartbeat(1, 9), heartbeat(1, 9)])
    await a.wait(lambda: a.unreachable == [9])
    assert a.t.unknown_peer_drops == 2


async def test_down_peer_reported_unreachable_then_reconnected(members: MemberFactory) -> None:
    a = await members(1, limits=FAST)
    b = await members(2, limits=FAST)
    await connect(a, b)
    url = b.url
    await b.t.stop()
    await eventually(lambda: a.t.active_since(2) is None)
    a.t.send([heartbeat(1, 2)])
    await a.wait(lambda: 2 in a.unreachable)
    assert a.t.stats[2].send_failures == 1
    await eventually(lambda: a.t.stats[2].dial_failures >= 3)  # it keeps trying, backing off
    assert a.t.reachable_peers() == []
    # the peer comes back on the same URL: the link returns within the backoff
    b2 = await members(2, start=False, limits=FAST)
    await b2.start(url)
    await eventually(lambda: a.t.active_since(2) is not None)
    assert a.t.stats[2].connects == 2
    a.t.send([heartbeat(1, 2, term=7)])
    await b2.wait(lambda: [m.term for m in b2.messages] == [7])


def test_backoff_doubles_to_the_cap_with_seeded_jitter() -> None:
    def delays(seed: int) -> list[float]:
        t = Transport(1, CLUSTER, on_message=lambda m: None, rng=random.Random(seed))
        return [t.backoff_s(attempt) for attempt in range(10)]

    first = delays(7)
    assert first == delays(7)  # the jitter comes from the injected generator
    assert first != delays(8)
    for attempt, delay in enumerate(first):
        base = min(1.0, 0.05 * 2**attempt)
        assert base / 2 <= delay <= base


async def test_backoff_bounds_dial_attempts(members: MemberFactory) -> None:
    a = await members(1)  # default limits: 50 ms doubling to 1 s
    free = await members(2)
    url = free.url
    await free.t.stop()
    a.t.add_peer(2, [url])
    started = asyncio.get_running_loop().time()
    await eventually(lambda: a.t.stats[2].dial_failures >= 4)
    elapsed = asyncio.get_running_loop().time() - started
    # after 4 failures at least 3 backoffs have passed: >= (50 + 100 + 200 ms) / 2
    assert elapsed >= 0.175
    assert a.t.active_since(2) is None


async def test_cluster_id_mismatch_is_refused_on_both_sides(
    members: MemberFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="petcd.transport")
    a = await members(1, cluster_id=0xAAA)
    b = await members(2, cluster_id=0xBBB)
    a.t.add_peer(2, [b.url])
    await eventually(lambda: a.t.stats[2].dial_failures >= 1)
    assert a.t.active_since(2) is None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("refused" in e and "cluster ID mismatch" in e for e in errors)  # listener
    assert any(e.startswith("etcdserver: cluster ID mismatch: peer") for e in errors)  # dialer
    assert "is in cluster bbb, this member is in cluster aaa" in a.t.last_error(2)
    b.t.register("ping", _pong)
    with pytest.raises(PeerClusterIdMismatchError) as info:
        await a.t.call(2, "ping", b"", timeout_s=2.0)
    assert info.value.remote_cluster_id == 0xBBB
    assert info.value.local_cluster_id == 0xAAA
    a.t.send([heartbeat(1, 2)])
    await a.wait(lambda: 2 in a.unreachable)
    assert b.messages == []


async def _pong(payload: bytes) -> bytes:
    return b"pong"


async def test_another_member_at_the_url_is_refused(members: MemberFactory) -> None:
    a, b = await members(1), await members(2)
    a.t.add_peer(3, [b.url])  # member 3 expected, member 2 listens there
    await eventually(lambda: a.t.stats[3].dial_failures >= 1)
    assert a.t.active_since(3) is None
    b.t.register("ping", _pong)
    with pytest.raises(PeerHandshakeError, match="this is member 2, not member 3"):
        await a.t.call(3, "ping", timeout_s=2.0)
    assert await a.t.call(b.url, "ping", timeout_s=2.0) == b"pong"  # by URL: anyone is fine


async def test_update_and_remove_peer(members: MemberFactory) -> None:
    a, b = await members(1), await members(2)
    b_elsewhere = await members(2, start=False)
    other_url = await b_elsewhere.start()
    await connect(a, b)
    since = a.t.active_since(2)
    assert since is not None
    a.t.update_peer(2, [b.url])  # same URL: the link stays
    assert a.t.active_since(2) == since
    a.t.update_peer(2, [other_url])  # member 2 moved: reconnect to the new URL
    await eventually(lambda: (a.t.active_since(2) or 0) > since)
    a.t.send([heartbeat(1, 2, term=5)])
    await b_elsewhere.wait(lambda: len(b_elsewhere.messages) == 1)
    assert b.messages == []
    a.t.remove_peer(2)
    assert a.t.peers() == {}
    assert a.t.active_since(2) is None
    a.t.send([heartbeat(1, 2)])
    await a.wait(lambda: a.unreachable == [2])


async def test_peer_configuration_errors(members: MemberFactory) -> None:
    a = await members(1)
    with pytest.raises(TransportConfigError):
        a.t.add_peer(2, ["ftp://127.0.0.1:1"])
    with pytest.raises(TransportConfigError):
        a.t.add_peer(2, ["http://127.0.0.1"])
    with pytest.raises(TransportConfigError):
        a.t.add_peer(2, [])
    with pytest.raises(TransportConfigError):
        a.t.add_peer(1, ["http://127.0.0.1:1"])
    a.t.add_peer(2, ["http://127.0.0.1:1"])
    with pytest.raises(TransportConfigError):
        a.t.add_peer(2, ["http://127.0.0.1:1"])
    with pytest.raises(TransportConfigError):
        a.t.update_peer(3, ["http://127.0.0.1:1"])
    with pytest.raises(TransportConfigError):
        await members(3, start=False, limits=TransportLimits(frame_bytes_max=0))
    https = await members(4, start=False)
    with pytest.raises(TransportConfigError, match="no TLS"):
        await https.start("https://127.0.0.1:0")


async def test_peers_added_before_start_are_dialled_at_start(members: MemberFactory) -> None:
    b = await members(2)
    a = await members(1, start=False)
    a.t.add_peer(2, [b.url])
    await a.start()
    await eventually(lambda: a.t.active_since(2) is not None)
    assert a.t.reachable_peers() == [2]
