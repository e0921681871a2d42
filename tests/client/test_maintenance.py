"""Cluster and Maintenance RPCs against real etcd 3.5 (and the snapshot against etcdutl)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from petcd import errors
from petcd.client import AsyncClient, Client
from petcd.pb import rpc_pb2
from tests.support import EtcdProcess, free_port, require_binary
from tests.support.petcd_process import PetcdProcess


def test_member_list_add_update_promote_remove(etcd35: EtcdProcess) -> None:
    with Client([etcd35.endpoint]) as client:

        def barrier() -> None:
            # etcd's raft drops a conf change proposed while the previous one is not yet
            # marked applied inside raft ("ignoring conf change"), and the call then hangs
            # until the request timeout. A write after each conf change orders them.
            client.put("/members/barrier", "")

        members = client.member_list().members
        assert len(members) == 1
        assert members[0].clientURLs == [etcd35.client_url]
        assert members[0].name == etcd35.name
        assert client.member_list(linearizable=True).members[0].ID == members[0].ID
        barrier()
        with pytest.raises(errors.MemberNotLearnerError):
            client.member_promote(members[0].ID)
        barrier()
        # a learner does not count for quorum, so adding one never blocks the single member
        url = f"http://127.0.0.1:{free_port()}"
        added = client.member_add([url], is_learner=True)
        assert added.member.isLearner and list(added.member.peerURLs) == [url]
        assert len(added.members) == 2
        barrier()
        # the same URL again: its member ID (SHA-1 of URLs and the unix second) exists if we are
        # within the same second, else the URL does
        with pytest.raises((errors.MemberExistError, errors.PeerURLExistError)):
            client.member_add([url], is_learner=True)
        barrier()
        with pytest.raises(errors.TooManyLearnersError):
            client.member_add([f"http://127.0.0.1:{free_port()}"], is_learner=True)
        barrier()
        with pytest.raises(errors.MemberBadURLsError):
            client.member_add(["not a url"])  # refused before raft
        new_url = f"http://127.0.0.1:{free_port()}"
        client.member_update(added.member.ID, [new_url])
        barrier()
        listed = {m.ID: m for m in client.member_list().members}
        assert list(listed[added.member.ID].peerURLs) == [new_url]
        with pytest.raises(errors.LearnerNotReadyError):
            client.member_promote(added.member.ID)  # refused before raft
        client.member_remove(added.member.ID)
        barrier()
        assert len(client.member_list().members) == 1
        with pytest.raises(errors.MemberNotFoundError):
            client.member_remove(added.member.ID)


def test_status_hash_defragment_and_alarms(etcd35: EtcdProcess) -> None:
    with Client([etcd35.endpoint]) as client:
        client.put("a", "1")
        status = client.status()
        assert status.version.startswith("3.5")
        assert status.leader == status.header.member_id
        assert status.dbSize > 0 and status.raftIndex > 0
        assert client.status(etcd35.endpoint).header.member_id == status.header.member_id
        assert client.hash().hash == client.hash().hash
        kv_hash = client.hash_kv()
        assert kv_hash.header.revision == client.get("a").header.revision
        client.defragment()
        member = status.header.member_id
        assert list(client.alarm_list().alarms) == []
        client.alarm_activate(member, "NOSPACE")
        (alarm,) = client.alarm_list().alarms
        assert (alarm.memberID, alarm.alarm) == (member, rpc_pb2.NOSPACE)
        with pytest.raises(errors.NoSpaceError):
            client.put("b", "2")
        client.delete("a")  # deletes still work under NOSPACE
        disarmed = client.alarm_disarm()
        assert [a.alarm for a in disarmed.alarms] == [rpc_pb2.NOSPACE]
        assert list(client.alarm_list().alarms) == []
        client.put("b", "2")


def test_move_leader_errors(etcd35_module: EtcdProcess) -> None:
    with Client([etcd35_module.endpoint]) as client, pytest.raises(errors.BadLeaderTransfereeError):
        client.move_leader(12345)


def test_snapshot_is_verified_and_readable_by_etcdutl(
    etcd35: EtcdProcess, tmp_path: pathlib.Path
) -> None:
    with Client([etcd35.endpoint]) as client:
        for i in range(200):
            client.put(f"snap/{i}", "x" * 500)
        revision = client.get("snap/0").header.revision
        result = client.snapshot(tmp_path / "snap.db")
    assert result.size_bytes == (tmp_path / "snap.db").stat().st_size
    assert result.size_bytes % 512 == 32  # the SHA-256 trailer, as etcdctl writes it
    assert not (tmp_path / "snap.db.part").exists()
    if isinstance(etcd35, PetcdProcess):
        # petcd's backend is LMDB, not bbolt: its offline tool reads the snapshot.
        tool = [str(pathlib.Path(sys.executable).with_name("petcdutl"))]
    else:
        tool = [str(pathlib.Path(require_binary("3.5")).with_name("etcdutl"))]
    out = subprocess.run(
        [*tool, "snapshot", "status", str(tmp_path / "snap.db"), "-w", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert f'"revision":{revision}' in out.stdout


async def test_async_cluster_and_maintenance(
    etcd35_module: EtcdProcess, tmp_path: pathlib.Path
) -> None:
    async with AsyncClient([etcd35_module.endpoint]) as client:
        members = (await client.member_list()).members
        status = await client.status()
        assert status.header.member_id == members[0].ID
        assert (await client.hash_kv()).hash == (await client.hash_kv()).hash
        assert (await client.hash()).header.revision > 0
        await client.defragment()
        assert list((await client.alarm_list()).alarms) == []
        result = await client.snapshot(tmp_path / "a.db")
        assert result.size_bytes % 512 == 32
        assert len(result.sha256) == 64
