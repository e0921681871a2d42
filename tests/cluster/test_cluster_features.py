"""Cluster features: leases and watches across leader changes, MoveLeader, Status per member,
the corruption check, and peer TLS."""

from __future__ import annotations

import pathlib
import threading
import time

import grpc
import lmdb
import pytest

from petcd import errors
from petcd.client import Client
from petcd.pb import kv_pb2, rpc_pb2, rpc_pb2_grpc
from tests.cluster.support import (
    assert_same_hashkv,
    member_id,
    petcd_cluster,
    set_faults,
    status,
    wait_leader,
)
from tests.support.certs import make_certs
from tests.support.petcd_process import PETCD_BIN
from tests.support.process import EtcdCluster, wait_for

pytestmark = pytest.mark.integration


def test_status_and_move_leader(cluster3: EtcdCluster) -> None:
    leader = wait_leader(cluster3.members)
    target = next(m for m in cluster3.members if m is not leader)
    target_id = member_id(target)
    for member in cluster3.members:
        st = status(member)
        assert st is not None and st.leader == member_id(leader)
        assert st.raftTerm >= 2 and st.raftIndex >= st.raftAppliedIndex > 0
        assert not st.isLearner and st.dbSize > 0
    with Client([target.endpoint]) as client, pytest.raises(errors.NotLeaderError):
        client.move_leader(member_id(leader))
    with Client([leader.endpoint]) as client:
        with pytest.raises(errors.BadLeaderTransfereeError):
            client.move_leader(12345)
        client.move_leader(target_id)
    assert wait_leader(cluster3.members) is target


def test_leases_and_watches_survive_leader_changes(cluster3: EtcdCluster) -> None:
    leader = wait_leader(cluster3.members)
    follower = next(m for m in cluster3.members if m is not leader)
    events: list[bytes] = []
    with Client([follower.endpoint]) as client:
        lease = client.lease_grant(6).ID
        client.put("held", "v", lease=lease)
        watch = client.watch("w/", prefix=True)
        reader = threading.Thread(
            target=lambda: events.extend(e.kv.value for r in watch for e in r.events),
            daemon=True,
        )
        reader.start()
        keeper = client.lease_keep_alive(lease, interval=1.0)
        try:
            client.put("w/1", "before")
            leader.kill()  # the follower's lease keep-alives go to the new leader
            wait_leader([m for m in cluster3.members if m is not leader])
            client.put("w/2", "after")
            time.sleep(8)  # longer than the lease's TTL: only keep-alives keep it
            assert client.get("held").count == 1
            ttl = client.lease_time_to_live(lease)
            assert 0 < ttl.TTL <= 6 and ttl.grantedTTL == 6
        finally:
            keeper.stop()
        wait_for(lambda: events == [b"before", b"after"], timeout=10)
        watch.cancel()
        # Without keep-alives the new leader expires it (within TTL + 1 s after the last one).
        wait_for(lambda: client.get("held").count == 0, timeout=10)
    leader.launch()
    leader.wait_ready()


def _corrupt_one_value(db_path: pathlib.Path) -> None:
    """Flip a byte of one stored value in a stopped member's backend, behind its back."""
    env = lmdb.open(str(db_path), subdir=False, max_dbs=16, lock=True)
    try:
        with env.begin(write=True) as txn:
            key_db = env.open_db(b"key", txn=txn)
            cursor = txn.cursor(db=key_db)
            assert cursor.last()
            kv = kv_pb2.KeyValue.FromString(cursor.value())
            kv.value = b"tampered"
            txn.put(cursor.key(), kv.SerializeToString(), db=key_db)
    finally:
        env.close()


def test_corruption_check_raises_corrupt_alarm(tmp_path: pathlib.Path) -> None:
    cluster = petcd_cluster(
        3, tmp_path / "corrupt", extra_args=["--experimental-corrupt-check-time=300ms"]
    )
    try:
        leader = wait_leader(cluster.members)
        victim = next(m for m in cluster.members if m is not leader)
        victim_id = member_id(victim)
        with Client([leader.endpoint]) as client:
            client.put("c", "1")
            assert_same_hashkv(cluster.members)
            victim.stop()
            _corrupt_one_value(victim.member_dir / "member" / "snap" / "db")
            victim.launch()
            victim.wait_ready()

            def alarmed() -> bool:
                return any(
                    a.alarm == 2 and a.memberID == victim_id for a in client.alarm_list().alarms
                )

            wait_for(alarmed, timeout=20, interval=0.2, what="a CORRUPT alarm for the member")
            with pytest.raises(errors.CorruptError):
                client.put("c", "2")
            assert client.get("c").kvs[0].value == b"1"  # reads are still served
    finally:
        cluster.cleanup()


def test_cluster_with_peer_tls(tmp_path: pathlib.Path) -> None:
    certs = make_certs(tmp_path / "certs")
    args = [
        f"--peer-cert-file={certs.server.cert_file}",
        f"--peer-key-file={certs.server.key_file}",
        f"--peer-trusted-ca-file={certs.server.ca_file}",
        "--peer-client-cert-auth",
    ]
    cluster = EtcdCluster(
        3, PETCD_BIN, tmp_path / "tls", extra_args=args, start=False, peer_scheme="https"
    )
    try:
        cluster.start()
        with Client([cluster.members[0].endpoint]) as client:
            client.put("tls", "yes")
        with Client([cluster.members[2].endpoint]) as client:
            assert client.get("tls").kvs[0].value == b"yes"
        assert "https://" in cluster.members[0].log_tail(100_000)
    finally:
        cluster.cleanup()


def test_hasleader_watch_ends_when_the_member_loses_its_leader(cluster3: EtcdCluster) -> None:
    leader = wait_leader(cluster3.members)
    minority = next(m for m in cluster3.members if m is not leader)
    others = [member_id(m) for m in cluster3.members if m is not minority]
    with grpc.insecure_channel(minority.endpoint) as channel:
        stub = rpc_pb2_grpc.WatchStub(channel)  # type: ignore[no-untyped-call]
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"hl"))
        stream = stub.Watch(iter([create]), metadata=[("hasleader", "true")], timeout=30)
        assert next(stream).created
        set_faults(minority, {"partition": others})
        started = time.monotonic()
        try:
            with pytest.raises(grpc.RpcError) as ended:
                next(stream)
        finally:
            set_faults(minority, {"heal": True})
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert ended.value.details() == "etcdserver: no leader"
        # 3 election timeouts without a leader (after the election timeout that loses it).
        assert 3.0 <= time.monotonic() - started <= 10.0
