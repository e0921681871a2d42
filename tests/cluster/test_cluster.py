"""3- and 5-member petcd clusters on loopback: replication, failover, partitions, membership.

After every test, every running member has the same HashKV at the same revision.
"""

from __future__ import annotations

import pathlib
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import grpc
import pytest

from petcd import errors
from petcd.client import Client
from petcd.pb import rpc_pb2, rpc_pb2_grpc
from tests.cluster.support import (
    assert_same_hashkv,
    member_id,
    petcd_cluster,
    set_faults,
    status,
    wait_leader,
)
from tests.support.petcd_process import PETCD_BIN
from tests.support.process import EtcdCluster, EtcdProcess, etcdctl, free_port, wait_for

pytestmark = pytest.mark.integration
T = TypeVar("T")


@pytest.mark.parametrize("n", [3, 5])
def test_write_through_each_read_through_every_other(tmp_path: pathlib.Path, n: int) -> None:
    cluster = petcd_cluster(n, tmp_path / f"c{n}")
    try:
        for i, member in enumerate(cluster.members):
            with Client([member.endpoint]) as client:
                client.put(f"from/{i}", f"member-{i}")
        for member in cluster.members:
            with Client([member.endpoint]) as client:
                kvs = client.get("from/", prefix=True).kvs  # linearizable, on any member
                assert [kv.value for kv in kvs] == [f"member-{i}".encode() for i in range(n)]
        # etcdctl sees one cluster: every member lists the same members with names.
        listed = etcdctl("3.5", cluster.members[-1].endpoint, "member", "list")
        assert listed.returncode == 0 and listed.stdout.count("started") == n
        assert_same_hashkv(cluster.members)
    finally:
        cluster.cleanup()


def _writer(endpoints: list[str], stop: threading.Event, acked: list[float]) -> None:
    # A short timeout, as the loadgen's failover scenario: a write whose proposal went to the
    # dead leader is lost, and only its timeout lets this writer try again.
    with Client(endpoints, timeout=0.25) as client:
        n = 0
        while not stop.is_set():
            try:
                client.put(f"load/{n % 100}", str(n))
                acked.append(time.monotonic())
            except errors.PetcdError:
                pass
            n += 1


def test_leader_kill_9_under_load_fails_over_fast(cluster3: EtcdCluster) -> None:
    leader = wait_leader(cluster3.members)
    others = [m for m in cluster3.members if m is not leader]
    stop = threading.Event()
    acked: list[float] = []
    threads = [
        threading.Thread(target=_writer, args=([m.endpoint for m in others], stop, acked))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(acked) > 50, timeout=30)
        killed_at = time.monotonic()
        leader.kill()
        wait_for(lambda: bool(acked) and acked[-1] > killed_at + 0.01, timeout=30)
        gap = next(t for t in acked if t > killed_at) - killed_at
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    # Target: writes succeed again within two election timeouts (1 s each).
    assert gap < 2.0, f"writes resumed {gap:.2f} s after the leader was killed"
    new_leader = wait_leader(others)
    assert new_leader is not leader
    leader.launch()
    leader.wait_ready()


def test_partitioned_minority_refuses_then_catches_up(cluster3: EtcdCluster) -> None:
    leader = wait_leader(cluster3.members)
    minority = next(m for m in cluster3.members if m is not leader)
    majority = [m for m in cluster3.members if m is not minority]
    ids = {m.name: member_id(m) for m in cluster3.members}
    set_faults(minority, {"partition": [ids[m.name] for m in majority]})
    try:
        with Client([majority[0].endpoint], timeout=3) as client:
            for i in range(20):
                client.put(f"part/{i}", str(i))
        # Requests fail within the server's request timeout (7 s) with "no leader".
        # (The client would retry a read elsewhere; ask over raw gRPC to see the answer.)
        with grpc.insecure_channel(minority.endpoint) as channel:
            kv = rpc_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError) as read:
                kv.Range(rpc_pb2.RangeRequest(key=b"part/0"), timeout=10)
            assert read.value.code() == grpc.StatusCode.UNAVAILABLE
            # etcd's answers: the read was pending when the member lost its leader.
            assert read.value.details() in ("etcdserver: no leader", "etcdserver: leader changed")
        with Client([minority.endpoint], timeout=10) as isolated:
            with pytest.raises(errors.PetcdError) as write:
                isolated.put("part/never", "x")
            assert write.value.code == errors.GrpcCode.UNAVAILABLE
            assert write.value.message == "etcdserver: no leader"
            # A serializable read is served locally, from what it had.
            assert isolated.get("part/0", serializable=True).count == 0
        with Client([m.endpoint for m in majority]) as client:
            assert client.get("part/", prefix=True, count_only=True).count == 20
    finally:
        set_faults(minority, {"heal": True})
    with Client([minority.endpoint], timeout=5) as healed:
        wait_for(
            lambda: (
                healed.get("part/", prefix=True, count_only=True, serializable=True).count == 20
            ),
            timeout=20,
        )
        assert healed.get("part/19").kvs[0].value == b"19"
    # The returning member did not disrupt the leader (pre-vote, check-quorum).
    assert wait_leader(cluster3.members) is leader


def test_member_restarted_after_compaction_catches_up_by_snapshot(tmp_path: pathlib.Path) -> None:
    cluster = petcd_cluster(
        3,
        tmp_path / "snap",
        extra_args=["--snapshot-count=50", "--experimental-snapshot-catchup-entries=10"],
    )
    try:
        leader = wait_leader(cluster.members)
        follower = next(m for m in cluster.members if m is not leader)
        follower.stop()
        with Client([leader.endpoint]) as client:
            for i in range(300):
                client.put(f"s/{i % 30}", str(i))
        follower.launch()
        follower.wait_ready()
        with Client([follower.endpoint]) as client:
            wait_for(
                lambda: (
                    client.get("s/29", serializable=True).kvs[0].value == b"299"
                    if client.get("s/29", serializable=True).count
                    else False
                ),
                timeout=30,
            )
        assert "received snapshot" in follower.log_tail(200_000)
        assert_same_hashkv(cluster.members)
    finally:
        cluster.cleanup()


def test_learner_added_under_load_promoted_then_voter_removed(cluster3: EtcdCluster) -> None:
    leader = wait_leader(cluster3.members)
    stop = threading.Event()
    acked: list[float] = []
    writer = threading.Thread(
        target=_writer, args=([m.endpoint for m in cluster3.members], stop, acked)
    )
    writer.start()
    try:
        new_peer, new_client = free_port(), free_port()
        with Client([leader.endpoint]) as client:
            # etcd's strict reconfiguration check: every voter connected for 5 s first.
            added = _retry_unhealthy(
                lambda: client.member_add([f"http://127.0.0.1:{new_peer}"], is_learner=True)
            )
            assert added.member.isLearner
            initial = ",".join(
                [f"{m.name}={m.peer_url}" for m in cluster3.members]
                + [f"m3=http://127.0.0.1:{new_peer}"]
            )
            learner = EtcdProcess(
                PETCD_BIN,
                cluster3.data_dir / "m3",
                name="m3",
                client_port=new_client,
                peer_port=new_peer,
                initial_cluster=initial,
                cluster_token=cluster3.members[0].cluster_token,
                extra_args=[
                    "--initial-cluster-state=existing",
                    "--experimental-peer-fault-injection",
                ],
                start=False,
            )
            learner.launch()
            cluster3.members.append(learner)
            # A learner serves serializable reads and Status only.
            wait_for(lambda: status(learner) is not None, timeout=30)
            with (
                Client([learner.endpoint]) as lc,
                pytest.raises(errors.NotSupportedForLearnerError),
            ):
                lc.put("x", "y")
            wait_for(
                lambda: _try_promote(client, added.member.ID),
                timeout=30,
                interval=0.2,
                what="the learner to catch up and be promoted",
            )
            assert not any(m.isLearner for m in client.member_list().members)
            # Remove a voter (not the leader): the cluster goes on with 3.
            victim = next(m for m in cluster3.members[:3] if m is not leader)
            _retry_unhealthy(lambda: client.member_remove(member_id(victim)))
            wait_for(lambda: not victim.running(), timeout=30, what="the removed member to stop")
            cluster3.members.remove(victim)
            assert len(client.member_list().members) == 3
        wait_for(lambda: len(acked) > 20, timeout=30)
    finally:
        stop.set()
        writer.join(timeout=30)
    with Client([learner.endpoint]) as lc:
        lc.put("promoted", "yes")


def _retry_unhealthy(call: Callable[[], T], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except errors.UnhealthyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _try_promote(client: Client, member: int) -> bool:
    try:
        client.member_promote(member)
        return True
    except errors.LearnerNotReadyError:
        return False


def test_replace_a_dead_member(cluster3: EtcdCluster) -> None:
    """A member's machine is lost: remove it, add a new member, which catches up and votes."""
    leader = wait_leader(cluster3.members)
    dead = next(m for m in cluster3.members if m is not leader)
    dead_id = member_id(dead)
    with Client([leader.endpoint]) as client:
        for i in range(50):
            client.put(f"rep/{i}", str(i))
        dead.kill()
        cluster3.members.remove(dead)
        _retry_unhealthy(lambda: client.member_remove(dead_id))  # two of three remain: a quorum
        new_peer, new_client = free_port(), free_port()
        _retry_unhealthy(lambda: client.member_add([f"http://127.0.0.1:{new_peer}"]))
        initial = ",".join(
            [f"{m.name}={m.peer_url}" for m in cluster3.members]
            + [f"m9=http://127.0.0.1:{new_peer}"]
        )
        replacement = EtcdProcess(
            PETCD_BIN,
            cluster3.data_dir / "m9",
            name="m9",
            client_port=new_client,
            peer_port=new_peer,
            initial_cluster=initial,
            cluster_token=cluster3.members[0].cluster_token,
            extra_args=["--initial-cluster-state=existing"],
            start=False,
        )
        replacement.launch()
        cluster3.members.append(replacement)
        replacement.wait_ready()
        names = sorted(m.name for m in client.member_list().members)
        assert names == sorted(m.name for m in cluster3.members)
    with Client([replacement.endpoint]) as client:
        assert client.get("rep/49").kvs[0].value == b"49"
    # The new member counts toward the quorum: stopping another member leaves two of three.
    other = next(m for m in cluster3.members if m is not replacement and m is not leader)
    other.stop()
    with Client([leader.endpoint]) as client:
        client.put("after-replace", "ok")
    other.launch()
    other.wait_ready()
