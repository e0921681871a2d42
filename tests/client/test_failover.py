"""Endpoint failover, TLS, and etcd 3.4 compatibility.

- a dead endpoint first in the list: reads and writes go on to the live one (a write may be
  retried because the dead endpoint never accepted a connection);
- a 3-member cluster losing the member a client talks to: reads move on, and a watch resumes
  on another member without missing or repeating an event written meanwhile;
- the client over TLS (server certificate checked, and with client certificate auth);
- the same client against Debian's etcd 3.4.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Callable

import pytest

from petcd import errors
from petcd.client import AsyncClient, Client, TLSConfig, compare_version, op_put
from tests.support import EtcdCluster, EtcdProcess, free_port
from tests.support.certs import make_certs

WAIT_S = 20.0


def test_dead_endpoint_is_skipped(etcd35_module: EtcdProcess) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with Client([dead, etcd35_module.endpoint]) as client:
        assert client.put("/fo/k", "v").header.revision > 0
        assert client.endpoint == etcd35_module.endpoint
        assert client.get("/fo/k").kvs[0].value == b"v"


async def test_async_dead_endpoint_is_skipped(etcd35_module: EtcdProcess) -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with AsyncClient([dead, etcd35_module.endpoint]) as client:
        await client.put("/fo/ak", "v")
        assert (await client.get("/fo/ak")).kvs[0].value == b"v"
        assert client.endpoint == etcd35_module.endpoint


def test_cluster_member_loss_moves_reads_and_resumes_watches(
    etcd_cluster_factory: Callable[..., EtcdCluster],
) -> None:
    cluster = etcd_cluster_factory(3)
    leader = cluster.leader()
    # the client's member is a follower: killing a leader would stall writes for an election
    # (a proposal forwarded to a dead leader hangs until etcd's request timeout)
    victim = next(m for m in cluster.members if m is not leader)
    endpoints = [victim.endpoint] + [m.endpoint for m in cluster.members if m is not victim]
    with Client(endpoints, timeout=WAIT_S) as client, Client([leader.endpoint]) as writer:
        assert client.endpoint == victim.endpoint
        watch = client.watch("/c/", prefix=True)
        writer.put("/c/0", "before")
        first = watch.get(timeout=WAIT_S)
        assert first is not None and first.events[0].kv.value == b"before"
        victim.kill()
        revisions = [writer.put(f"/c/{i}", f"after-{i}").header.revision for i in range(1, 4)]
        assert client.get("/c/3").kvs[0].value == b"after-3"  # a read moves to a live member
        assert client.endpoint != victim.endpoint
        seen: list[int] = []
        while len(seen) < 3:
            response = watch.get(timeout=WAIT_S)
            assert response is not None
            seen.extend(e.kv.mod_revision for e in response.events)
        assert seen == revisions  # each event once, in order, none lost while disconnected
        assert client.txn([compare_version("/c/1", "=", 1)], [op_put("/c/1", "cas")]).succeeded
        watch.cancel()
        # MoveLeader must be sent to the leader; the other survivor takes over
        survivor = next(m for m in cluster.members if m not in (leader, victim))
        target = writer.status(survivor.endpoint).header.member_id
        with Client([survivor.endpoint]) as follower, pytest.raises(errors.NotLeaderError):
            follower.move_leader(target)
        writer.move_leader(target)
        assert writer.status().leader == target


def test_tls_with_server_and_client_certificates(tmp_path: pathlib.Path) -> None:
    certs = make_certs(tmp_path / "certs")
    with EtcdProcess("3.5", tmp_path / "etcd", tls=certs.server) as server:
        tls = TLSConfig(ca_file=certs.ca_file)
        with Client([f"https://{server.endpoint}"], tls=tls) as client:
            client.put("secure", "yes")
            assert client.get("secure").kvs[0].value == b"yes"
    with EtcdProcess("3.5", tmp_path / "etcd-mtls", tls=certs.mutual) as server:
        anonymous = TLSConfig(ca_file=certs.ca_file)
        # Refused in the handshake: Unavailable, or the deadline if the retries outlast it.
        refused = pytest.raises((errors.UnavailableError, errors.DeadlineExceededError))
        with Client([server.endpoint], tls=anonymous, timeout=1) as client, refused:
            client.get("mtls")  # no client certificate: the handshake fails
        tls = TLSConfig(
            ca_file=certs.ca_file, cert_file=certs.client_cert_file, key_file=certs.client_key_file
        )
        with Client([server.endpoint], tls=tls) as client:
            client.put("mtls", "yes")
            assert client.get("mtls").kvs[0].value == b"yes"


async def test_async_tls(tmp_path: pathlib.Path) -> None:
    certs = make_certs(tmp_path / "certs")
    with EtcdProcess("3.5", tmp_path / "etcd", tls=certs.server) as server:
        async with AsyncClient([server.endpoint], tls=TLSConfig(ca_file=certs.ca_file)) as client:
            await client.put("secure", "yes")
            watch = await client.watch("secure")
            await client.put("secure", "again")
            async with asyncio.timeout(WAIT_S):
                response = await anext(aiter(watch))
            assert response.events[0].kv.value == b"again"


def test_against_etcd34(etcd34: EtcdProcess) -> None:
    with Client([etcd34.endpoint]) as client:
        assert client.status().version.startswith("3.4")
        rev = client.put("k", "v").header.revision
        with client.watch("k", start_revision=rev) as watch:
            response = watch.get(timeout=WAIT_S)
            assert response is not None and response.events[0].kv.value == b"v"
        lease = client.lease_grant(10).ID
        assert client.lease_keep_alive_once(lease).TTL == 10
        assert client.txn([compare_version("k", "=", 1)], [op_put("k", "w")]).succeeded
        assert client.get("k").kvs[0].value == b"w"
