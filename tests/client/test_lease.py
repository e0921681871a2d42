"""Leases against real etcd 3.5: grant, revoke, TTL queries, keep-alive once and in background.

Expiry is observed through a watch on the lease's key (the server deletes it), never by sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from petcd import errors
from petcd.client import AsyncClient, Client
from petcd.pb import kv_pb2
from tests.support import EtcdProcess, wait_for

WAIT_S = 15.0


@pytest.fixture
def client(etcd35_module: EtcdProcess) -> Iterator[Client]:
    with Client([etcd35_module.endpoint]) as c:
        yield c


def _wait_deleted(client: Client, key: str, from_revision: int) -> int:
    """The revision at which `key` was deleted (waits at most WAIT_S)."""
    with client.watch(key, start_revision=from_revision, no_put=True) as watch:
        response = watch.get(timeout=WAIT_S)
        assert response is not None
        assert response.events[0].type == kv_pb2.Event.DELETE
        return int(response.events[0].kv.mod_revision)


def test_grant_ttl_leases_revoke(client: Client) -> None:
    granted = client.lease_grant(60)
    assert granted.ID > 0 and granted.TTL == 60
    chosen = client.lease_grant(30, lease_id=0x1234)
    assert chosen.ID == 0x1234
    with pytest.raises(errors.LeaseExistError):
        client.lease_grant(30, lease_id=0x1234)
    with pytest.raises(errors.LeaseTTLTooLargeError):
        client.lease_grant(9_000_000_001)
    client.put("/lease/a", "1", lease=granted.ID)
    client.put("/lease/b", "2", lease=granted.ID)
    ttl = client.lease_time_to_live(granted.ID, keys=True)
    assert ttl.grantedTTL == 60 and 0 < ttl.TTL <= 60
    assert sorted(ttl.keys) == [b"/lease/a", b"/lease/b"]
    assert {lease.ID for lease in client.lease_leases().leases} >= {granted.ID, 0x1234}
    revoked = client.lease_revoke(granted.ID)
    assert client.get("/lease/", prefix=True).count == 0
    assert revoked.header.revision > 0
    assert client.lease_time_to_live(granted.ID).TTL == -1
    with pytest.raises(errors.LeaseNotFoundError):
        client.lease_revoke(granted.ID)
    client.lease_revoke(0x1234)


def test_keep_alive_once(client: Client) -> None:
    lease = client.lease_grant(20).ID
    response = client.lease_keep_alive_once(lease)
    assert lease == response.ID and response.TTL == 20
    client.lease_revoke(lease)
    with pytest.raises(errors.LeaseNotFoundError):
        client.lease_keep_alive_once(lease)


def test_background_keep_alive_outlives_the_ttl_and_stops_cleanly(client: Client) -> None:
    lease = client.lease_grant(3).ID
    start = client.put("/ka/key", "v", lease=lease).header.revision
    keepalive = client.lease_keep_alive(lease)
    assert keepalive.running
    # renewals every 1 s (TTL/3): 4 more renewals span 4 s, more than the 3 s TTL
    wait_for(lambda: keepalive.renewals >= 5, WAIT_S, what="4 more keep-alive renewals")
    assert client.get("/ka/key").count == 1  # alive after more than its TTL
    keepalive.stop()
    assert not keepalive.running
    assert keepalive.error is None and not keepalive.expired
    deleted_at = _wait_deleted(client, "/ka/key", start)  # expires once nobody renews
    assert deleted_at > start


def test_keep_alive_of_unknown_lease_fails(client: Client) -> None:
    with pytest.raises(errors.LeaseNotFoundError):
        client.lease_keep_alive(987654321)


async def test_async_leases(etcd35_module: EtcdProcess) -> None:
    async with AsyncClient([etcd35_module.endpoint]) as client:
        lease = (await client.lease_grant(2)).ID
        await client.put("/aka/key", "v", lease=lease)
        keepalive = await client.lease_keep_alive(lease, interval=0.2)
        watch = await client.watch("/aka/key")
        async with asyncio.timeout(WAIT_S):
            while keepalive.renewals < 12:  # 12 × 0.2 s > 2 s TTL
                await asyncio.sleep(0.05)  # polling a counter, not synchronising
        assert (await client.get("/aka/key")).count == 1
        await keepalive.stop()
        async with asyncio.timeout(WAIT_S):
            response = await anext(aiter(watch))
        assert response.events[0].type == kv_pb2.Event.DELETE
        ttl = await client.lease_time_to_live(lease)
        assert ttl.TTL == -1
        assert (await client.lease_keep_alive_once((await client.lease_grant(10)).ID)).TTL == 10
        with pytest.raises(errors.LeaseNotFoundError):
            await client.lease_revoke(lease)
        await watch.cancel()
