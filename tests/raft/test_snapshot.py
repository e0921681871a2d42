"""Snapshots and log compaction (Raft §7): a follower behind compaction gets a snapshot."""

from __future__ import annotations

from petcd.pb.raft_pb2 import MSG_SNAP
from petcd.raft import ProgressState, StateType

from .harness import Cluster


def _compact(c: Cluster, id_: int) -> int:
    """Snapshot member id_ at its applied index and drop its log up to there."""
    m = c.members[id_]
    applied = m.applied[-1].index
    m.storage.create_snapshot(applied, m.conf_state, b"state@%d" % applied)
    m.storage.compact(applied)
    return applied


def test_follower_behind_compaction_gets_a_snapshot_and_continues() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(3)
    for i in range(20):
        c.propose(1, b"e%d" % i)
    c.tick(1)
    c.stabilize()
    snap_index = _compact(c, 1)
    c.recover()
    c.sent.clear()
    for _ in range(5):
        c.tick(1)
        c.stabilize()
    snaps = [m for m in c.sent if m.type == MSG_SNAP]
    assert len(snaps) == 1 and snaps[0].to == 3
    assert snaps[0].snapshot.metadata.index == snap_index
    # Member 3 installed the snapshot (persisted it first) and continued with the log.
    assert c.members[3].storage.snapshot().metadata.index == snap_index
    assert c.raft(3).raft_log.first_index() == snap_index + 1
    assert list(c.members[3].conf_state.voters) == [1, 2, 3]
    c.propose(1, b"after")
    c.tick(1)
    c.stabilize()
    assert c.payloads(3)[-1] == b"after"
    pr = c.raft(1).trk.progress[3]
    assert pr.state == ProgressState.REPLICATE
    assert pr.match == c.raft(1).raft_log.last_index()


def test_failed_snapshot_is_retried_after_report() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(3)
    for i in range(5):
        c.propose(1, b"e%d" % i)
    _compact(c, 1)
    c.recover()
    c.drop_types = {MSG_SNAP}
    c.tick(1)
    c.stabilize()
    pr = c.raft(1).trk.progress[3]
    assert pr.state == ProgressState.SNAPSHOT
    # The transport reports the failure; the leader probes again and resends.
    c.node(1).report_snapshot(3, False)
    assert pr.state == ProgressState.PROBE
    c.recover()
    for _ in range(3):
        c.tick(1)
        c.stabilize()
    assert pr.state == ProgressState.REPLICATE
    assert c.raft(3).raft_log.committed == c.raft(1).raft_log.committed


def test_stale_snapshot_is_ignored() -> None:
    c = Cluster([1, 2])
    c.elect(1)
    for i in range(5):
        c.propose(1, b"e%d" % i)
    c.tick(1)
    c.stabilize()
    snap = c.members[1].storage.create_snapshot(3, c.members[1].conf_state, b"old")
    from petcd.pb.raft_pb2 import Message

    before = c.raft(2).raft_log.last_index()
    c.node(2).step(Message(type=MSG_SNAP, from_=1, to=2, term=c.node(1).term, snapshot=snap))
    assert c.raft(2).raft_log.last_index() == before
    assert c.node(2).state == StateType.FOLLOWER
    rd = c.node(2).ready()
    assert rd.snapshot is None
    c.node(2).advance(rd)


def test_restart_from_snapshot_and_log() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    for i in range(10):
        c.propose(1, b"e%d" % i)
    c.tick(1)
    c.stabilize()
    _compact(c, 2)
    c.propose(1, b"late")
    c.tick(1)
    c.stabilize()
    c.restart(2)
    c.tick(1)
    c.stabilize()
    assert c.raft(2).raft_log.committed == c.raft(1).raft_log.committed
    assert c.raft(2).trk.config.voters == {1, 2, 3}
