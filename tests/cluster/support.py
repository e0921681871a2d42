"""Helpers for cluster tests: petcd clusters, fault injection through the peer RPC, checks."""

from __future__ import annotations

import asyncio
import json
import pathlib
import time
from collections.abc import Sequence

import grpc

from petcd import errors
from petcd.client import Client
from petcd.pb import rpc_pb2, rpc_pb2_grpc
from petcd.transport import Transport
from tests.support.petcd_process import PETCD_BIN
from tests.support.process import EtcdCluster, EtcdProcess, wait_for

CLUSTER_ARGS = ("--experimental-peer-fault-injection",)


def petcd_cluster(n: int, data_dir: pathlib.Path, extra_args: Sequence[str] = ()) -> EtcdCluster:
    return EtcdCluster(n, PETCD_BIN, data_dir, extra_args=[*CLUSTER_ARGS, *extra_args])


def set_faults(member: EtcdProcess, spec: dict[str, object]) -> None:
    """Change a running member's transport faults (needs --experimental-peer-fault-injection)."""

    async def call() -> None:
        transport = Transport(0, 0, on_message=lambda _m: None)
        await transport.start()
        try:
            await transport.call(member.peer_url, "debug.faults", json.dumps(spec).encode(), 5.0)
        finally:
            await transport.stop()

    asyncio.run(call())


def member_id(member: EtcdProcess) -> int:
    with Client([member.endpoint]) as client:
        return int(client.status().header.member_id)


def status(member: EtcdProcess, timeout: float = 2.0) -> rpc_pb2.StatusResponse | None:
    with grpc.insecure_channel(member.endpoint) as channel:
        stub = rpc_pb2_grpc.MaintenanceStub(channel)  # type: ignore[no-untyped-call]
        try:
            response: rpc_pb2.StatusResponse = stub.Status(rpc_pb2.StatusRequest(), timeout=timeout)
            return response
        except grpc.RpcError:
            return None


def wait_leader(members: Sequence[EtcdProcess], timeout: float = 20.0) -> EtcdProcess:
    """Wait until the running members agree on a leader among them; return it."""
    found: list[EtcdProcess] = []

    def agreed() -> bool:
        leaders = set()
        for member in members:
            if not member.running():
                continue
            st = status(member)
            if st is None or st.leader == 0:
                return False
            leaders.add(st.leader)
        if len(leaders) != 1:
            return False
        leader_id = leaders.pop()
        for member in members:
            if member.running():
                st = status(member)
                if st is not None and st.header.member_id == leader_id:
                    found[:] = [member]
                    return True
        return False

    wait_for(agreed, timeout, interval=0.05, what="an agreed leader")
    return found[0]


def assert_same_hashkv(members: Sequence[EtcdProcess], timeout: float = 30.0) -> int:
    """Every running member reaches the same revision and has the same HashKV there."""
    running = [m for m in members if m.running()]
    with Client([running[0].endpoint]) as client:
        revision = client.get("any-key-at-all").header.revision

    def caught_up() -> bool:
        for member in running:
            with Client([member.endpoint]) as c:
                try:
                    if c.get("x", serializable=True).header.revision < revision:
                        return False
                except errors.PetcdError:
                    return False
        return True

    wait_for(caught_up, timeout, interval=0.05, what=f"every member at revision {revision}")
    hashes = {}
    for member in running:
        with Client([member.endpoint]) as client:
            hashes[member.name] = client.hash_kv(revision).hash
    assert len(set(hashes.values())) == 1, f"HashKV differs at revision {revision}: {hashes}"
    return revision


def time_until_write_succeeds(endpoints: Sequence[str], timeout: float) -> float:
    deadline = time.monotonic() + timeout
    start = time.monotonic()
    with Client(list(endpoints), timeout=0.5) as client:
        while time.monotonic() < deadline:
            try:
                client.put("probe", "x")
                return time.monotonic() - start
            except errors.PetcdError:
                continue
    raise TimeoutError("no write succeeded")
