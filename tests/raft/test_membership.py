"""Membership changes (thesis §4.1, §4.3): one at a time, in the log and in snapshots."""

from __future__ import annotations

import pytest

from petcd.errors import ConfChangeError, ProposalDroppedError
from petcd.pb.raft_pb2 import (
    CONF_CHANGE_ADD_LEARNER_NODE,
    CONF_CHANGE_ADD_NODE,
    CONF_CHANGE_REMOVE_NODE,
    CONF_CHANGE_TRANSITION_JOINT_EXPLICIT,
    MSG_PRE_VOTE,
    MSG_VOTE,
    ConfChange,
    ConfChangeSingle,
    ConfChangeV2,
    Message,
)
from petcd.raft import StateType

from .harness import Cluster


def _change(c: Cluster, leader: int, cc: ConfChange | ConfChangeV2) -> None:
    c.node(leader).propose_conf_change(cc)
    c.stabilize()
    c.tick(leader)
    c.stabilize()


def _add(c: Cluster, leader: int, id_: int, learner: bool = False) -> None:
    kind = CONF_CHANGE_ADD_LEARNER_NODE if learner else CONF_CHANGE_ADD_NODE
    c.add_member(id_, None)
    _change(c, leader, ConfChange(type=kind, node_id=id_))
    for _ in range(3):
        c.tick(leader)
        c.stabilize()


def test_add_voter_changes_the_quorum() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    _add(c, 1, 4)
    assert c.raft(1).trk.config.voters == {1, 2, 3, 4}
    assert c.raft(4).trk.config.voters == {1, 2, 3, 4}
    # With 4 voters a quorum is 3: 1 and 2 alone cannot commit.
    c.isolate(3)
    c.isolate(4)
    committed = c.raft(1).raft_log.committed
    c.propose(1, b"x")
    assert c.raft(1).raft_log.committed == committed


def test_learner_receives_the_log_but_never_votes_or_counts() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    _add(c, 1, 4, learner=True)
    c.propose(1, b"for the learner")
    c.tick(1)
    c.stabilize()
    assert b"for the learner" in c.payloads(4)
    assert c.raft(1).trk.config.learners == {4}
    # A learner never campaigns, however long it waits.
    c.isolate(4)
    c.tick(4, 100)
    assert c.node(4).state == StateType.FOLLOWER
    c.recover()
    # It does not count toward a quorum: with 2 and 3 gone, 1 + learner 4 commit nothing.
    c.isolate(2)
    c.isolate(3)
    committed = c.raft(1).raft_log.committed
    c.propose(1, b"y")
    assert c.raft(1).raft_log.committed == committed
    # A candidate does not even ask it for a vote.
    c.recover()
    c.sent.clear()
    c.node(2).campaign()
    c.stabilize()
    assert not [m for m in c.sent if m.to == 4 and m.type in (MSG_VOTE, MSG_PRE_VOTE)]


def test_promote_learner() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    _add(c, 1, 4, learner=True)
    _change(c, 1, ConfChange(type=CONF_CHANGE_ADD_NODE, node_id=4))
    assert c.raft(1).trk.config.voters == {1, 2, 3, 4}
    assert c.raft(1).trk.config.learners == set()
    assert not c.raft(4).is_learner


def test_remove_member() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    _change(c, 1, ConfChange(type=CONF_CHANGE_REMOVE_NODE, node_id=3))
    assert c.raft(1).trk.config.voters == {1, 2}
    c.isolate(3)
    c.propose(1, b"two of two")
    assert b"two of two" in c.payloads(2)


def test_removed_leader_hands_over_leadership() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    _change(c, 1, ConfChange(type=CONF_CHANGE_REMOVE_NODE, node_id=1))
    # The first TimeoutNow may reach 2 before it applied the change (it then declines to
    # campaign); the leader retries after an election timeout.
    for _ in range(25):
        c.tick(1)
        c.stabilize()
    leader = c.leader()
    assert leader in (2, 3)
    assert c.raft(leader).trk.config.voters == {2, 3}
    with pytest.raises(ProposalDroppedError):
        c.node(1).propose(b"removed")


def test_one_pending_conf_change_at_a_time() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(2)
    c.isolate(3)
    c.node(1).propose_conf_change(ConfChange(type=CONF_CHANGE_ADD_NODE, node_id=4))
    with pytest.raises(ProposalDroppedError):
        c.node(1).propose_conf_change(ConfChange(type=CONF_CHANGE_ADD_NODE, node_id=5))
    c.recover()
    c.stabilize()
    c.tick(1)
    c.stabilize()
    # Applied now: the next change is accepted.
    c.node(1).propose_conf_change(ConfChange(type=CONF_CHANGE_ADD_NODE, node_id=5))


def test_invalid_changes_are_refused_at_proposal() -> None:
    c = Cluster([1])
    c.elect(1)
    with pytest.raises(ProposalDroppedError):
        c.node(1).propose_conf_change(ConfChange(type=CONF_CHANGE_REMOVE_NODE, node_id=1))
    cc = ConfChangeV2()
    cc.changes.append(ConfChangeSingle(type=CONF_CHANGE_ADD_NODE, node_id=2))
    cc.changes.append(ConfChangeSingle(type=CONF_CHANGE_ADD_NODE, node_id=3))
    cc.transition = CONF_CHANGE_TRANSITION_JOINT_EXPLICIT
    c.node(1).propose_conf_change(cc)  # joint: allowed


def test_invalid_applied_change_leaves_the_config_unchanged() -> None:
    c = Cluster([1])
    with pytest.raises(ConfChangeError):
        c.node(1).apply_conf_change(ConfChange(type=CONF_CHANGE_REMOVE_NODE, node_id=1))
    assert c.raft(1).trk.config.voters == {1}
    with pytest.raises(ConfChangeError):
        c.node(1).apply_conf_change(ConfChangeV2())  # leaving a joint state we are not in
    assert c.raft(1).trk.config.voters == {1}


def test_joint_consensus_enter_and_auto_leave() -> None:
    """§4.3: (1 2 3) -> (1 2 3)&&(1 2 4 5) -> (1 2 4 5), leaving the joint state on its own."""
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.add_member(4, None)
    c.add_member(5, None)
    cc = ConfChangeV2()
    cc.changes.append(ConfChangeSingle(type=CONF_CHANGE_ADD_NODE, node_id=4))
    cc.changes.append(ConfChangeSingle(type=CONF_CHANGE_ADD_NODE, node_id=5))
    cc.changes.append(ConfChangeSingle(type=CONF_CHANGE_REMOVE_NODE, node_id=3))
    c.node(1).propose_conf_change(cc)
    for _ in range(5):
        c.tick(1)
        c.stabilize()
    cfg = c.raft(1).trk.config
    assert not cfg.joint()
    # Two conf entries were applied: entering the joint state, then the automatic leave.
    v2 = [e for e in c.members[1].applied if e.type == 2]
    assert len(v2) == 2 and v2[1].data == b""
    assert cfg.voters == {1, 2, 4, 5}
    assert c.raft(5).trk.config.voters == {1, 2, 4, 5}


def test_joint_config_needs_both_majorities() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    for id_ in (4, 5, 6):
        c.add_member(id_, None)
    cc = ConfChangeV2(transition=CONF_CHANGE_TRANSITION_JOINT_EXPLICIT)
    for id_ in (4, 5, 6):
        cc.changes.append(ConfChangeSingle(type=CONF_CHANGE_ADD_NODE, node_id=id_))
    for id_ in (2, 3):
        cc.changes.append(ConfChangeSingle(type=CONF_CHANGE_REMOVE_NODE, node_id=id_))
    _change(c, 1, cc)
    cfg = c.raft(1).trk.config
    assert cfg.voters == {1, 4, 5, 6} and cfg.voters_outgoing == {1, 2, 3}
    # The new half alone (1, 4, 5, 6) cannot commit: the old half needs 2 of (1 2 3).
    c.isolate(2)
    c.isolate(3)
    committed = c.raft(1).raft_log.committed
    c.propose(1, b"x")
    assert c.raft(1).raft_log.committed == committed
    c.recover()
    c.tick(1)
    c.stabilize()
    assert c.raft(1).raft_log.committed > committed
    _change(c, 1, ConfChangeV2())  # explicit leave
    assert not c.raft(1).trk.config.joint()


def test_conf_state_travels_in_snapshots() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    _add(c, 1, 4, learner=True)
    m = c.members[1]
    applied = m.applied[-1].index
    snap = m.storage.create_snapshot(applied, m.conf_state, b"")
    assert list(snap.metadata.conf_state.voters) == [1, 2, 3]
    assert list(snap.metadata.conf_state.learners) == [4]
    m.storage.compact(applied)
    c.add_member(5, None)
    _change(c, 1, ConfChange(type=CONF_CHANGE_ADD_LEARNER_NODE, node_id=5))
    for _ in range(5):
        c.tick(1)
        c.stabilize()
    # Member 5 was added after the snapshot: it installs it and learns of itself from the log.
    assert c.members[5].storage.snapshot().metadata.index == applied
    assert c.raft(5).trk.config.learners == {4, 5}


def test_vote_requests_from_unknown_members_do_not_break_a_leader_with_lease() -> None:
    c = Cluster([1, 2, 3], check_quorum=True, pre_vote=True)
    c.elect(1)
    for id_ in (1, 2, 3):
        c.node(id_).step(Message(type=MSG_VOTE, from_=9, to=id_, term=50, index=999, log_term=49))
    c.stabilize()
    assert c.node(1).state == StateType.LEADER
    assert c.node(1).term == 2
