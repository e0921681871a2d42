"""Peer RPC: calls by member id and by URL, timeouts, remote errors, the joining member."""

from __future__ import annotations

import asyncio

import pytest

from petcd import errors
from petcd.errors import (
    PeerHandshakeError,
    PeerRemoteError,
    PeerTimeoutError,
    PeerUnreachableError,
    TransportConfigError,
)
from petcd.transport import TransportLimits
from tests.transport.helpers import CLUSTER, MemberFactory


async def _echo(payload: bytes) -> bytes:
    return b"echo:" + payload


async def test_call_by_id_and_by_url(members: MemberFactory) -> None:
    a, b = await members(1), await members(2)
    b.t.register("echo", _echo)
    a.t.add_peer(2, [b.url])
    assert await a.t.call(2, "echo", b"by id", timeout_s=2.0) == b"echo:by id"
    assert await a.t.call(b.url, "echo", b"by url", timeout_s=2.0) == b"echo:by url"
    big = bytes(range(256)) * 4096  # 1 MiB each way
    assert await a.t.call(2, "echo", big, timeout_s=5.0) == b"echo:" + big


async def test_concurrent_calls_share_one_connection(members: MemberFactory) -> None:
    a, b = await members(1), await members(2)
    order: list[int] = []

    async def slow_reverse(payload: bytes) -> bytes:
        n = int(payload)
        await asyncio.sleep(0.001 * (20 - n))  # later calls finish first: responses by id
        order.append(n)
        return payload[::-1]

    b.t.register("rev", slow_reverse)
    a.t.add_peer(2, [b.url])
    calls = [a.t.call(2, "rev", str(n).encode(), timeout_s=5.0) for n in range(10, 20)]
    results = await asyncio.gather(*calls)
    assert results == [str(n).encode()[::-1] for n in range(10, 20)]
    assert order != sorted(order)  # they really overlapped
    assert len(a.t._rpc_clients) == 1


async def test_timeout_cancels_the_remote_handler(members: MemberFactory) -> None:
    a, b = await members(1), await members(2)
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def hang(payload: bytes) -> bytes:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return b""

    b.t.register("hang", hang)
    a.t.add_peer(2, [b.url])
    with pytest.raises(PeerTimeoutError) as info:
        await a.t.call(2, "hang", timeout_s=0.3)
    assert info.value.method == "hang"
    assert info.value.code == errors.GrpcCode.DEADLINE_EXCEEDED
    assert started.is_set()
    async with asyncio.timeout(5):
        await cancelled.wait()  # the callee gave up too: the deadline travelled with the call


async def test_remote_petcd_error_comes_back_as_itself(members: MemberFactory) -> None:
    a, b = await members(1), await members(2)

    async def lease_gone(payload: bytes) -> bytes:
        raise errors.LeaseNotFoundError()

    async def not_leader(payload: bytes) -> bytes:
        raise errors.NotLeaderError()

    b.t.register("lease", lease_gone)
    b.t.register("leader", not_leader)
    a.t.add_peer(2, [b.url])
    with pytest.raises(errors.LeaseNotFoundError):
        await a.t.call(2, "lease", timeout_s=2.0)
    with pytest.raises(errors.NotLeaderError) as info:
        await a.t.call(2, "leader", timeout_s=2.0)
    assert info.value.code == errors.GrpcCode.FAILED_PRECONDITION


async def test_remote_failure_and_unknown_method(members: MemberFactory) -> None:
    a, b = await members(1), await members(2)

    async def broken(payload: bytes) -> bytes:
        raise KeyError("no such thing")

    b.t.register("broken", broken)
    a.t.add_peer(2, [b.url])
    with pytest.raises(PeerRemoteError, match="KeyError"):
        await a.t.call(2, "broken", timeout_s=2.0)
    with pytest.raises(PeerRemoteError, match="no such method"):
        await a.t.call(2, "nothing-here", timeout_s=2.0)
    b.t.register("echo", _echo)  # the connection survived both failures
    assert await a.t.call(2, "echo", b"!", timeout_s=2.0) == b"echo:!"
    with pytest.raises(TransportConfigError):
        b.t.register("echo", _echo)


async def test_unreachable_and_unknown_targets(members: MemberFactory) -> None:
    a = await members(1)
    gone = await members(2)
    url = gone.url
    await gone.t.stop()
    a.t.add_peer(2, [url])
    with pytest.raises(PeerUnreachableError):
        await a.t.call(2, "echo", timeout_s=2.0)
    with pytest.raises(PeerUnreachableError):
        await a.t.call(url, "echo", timeout_s=2.0)
    with pytest.raises(PeerUnreachableError, match="not a known peer"):
        await a.t.call(7, "echo", timeout_s=2.0)
    with pytest.raises(TransportConfigError):
        await a.t.call("not a url", "echo", timeout_s=2.0)


async def test_connection_lost_during_a_call(members: MemberFactory) -> None:
    a, b = await members(1), await members(2)
    entered = asyncio.Event()

    async def hang(payload: bytes) -> bytes:
        entered.set()
        await asyncio.Event().wait()
        return b""

    b.t.register("hang", hang)
    a.t.add_peer(2, [b.url])
    call = asyncio.ensure_future(a.t.call(2, "hang", timeout_s=10.0))
    async with asyncio.timeout(5):
        await entered.wait()
    await b.t.stop()
    with pytest.raises(PeerUnreachableError, match="connection lost"):
        await call


async def test_callee_bounds_calls_in_flight(members: MemberFactory) -> None:
    limits = TransportLimits(rpc_inflight_max=4)
    a = await members(1)
    b = await members(2, limits=limits)
    running = 0
    peak = 0
    release = asyncio.Event()

    async def hold(payload: bytes) -> bytes:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        return payload

    b.t.register("hold", hold)
    a.t.add_peer(2, [b.url])
    calls = [asyncio.ensure_future(a.t.call(2, "hold", b"%d" % i, 5.0)) for i in range(20)]
    await asyncio.sleep(0.2)  # let requests pile up (not a synchronisation: the bound is checked)
    assert peak <= 4
    release.set()
    assert await asyncio.gather(*calls) == [b"%d" % i for i in range(20)]
    assert peak == 4


async def test_joining_member_calls_by_url_then_learns_its_ids(members: MemberFactory) -> None:
    leader = await members(1)

    async def member_list(payload: bytes) -> bytes:
        return b"1,3"

    leader.t.register("members", member_list)
    joiner = await members(0, cluster_id=0, seed=3)  # knows neither its id nor the cluster's
    assert await joiner.t.call(leader.url, "members", timeout_s=2.0) == b"1,3"
    joiner.t.set_identity(3, CLUSTER)
    joiner.t.add_peer(1, [leader.url])
    leader.t.add_peer(3, [joiner.url])
    assert await joiner.t.call(1, "members", timeout_s=2.0) == b"1,3"
    async with asyncio.timeout(5):
        while leader.t.active_since(3) is None or joiner.t.active_since(1) is None:
            await asyncio.sleep(0.005)


async def test_a_member_cannot_dial_itself(members: MemberFactory) -> None:
    a = await members(1)
    a.t.register("echo", _echo)
    with pytest.raises(PeerHandshakeError, match="dialled itself"):
        await a.t.call(a.url, "echo", timeout_s=2.0)
