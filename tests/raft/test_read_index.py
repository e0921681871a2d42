"""Linearizable reads with ReadIndex (thesis §6.4), on the leader and through a follower."""

from __future__ import annotations

import pytest

from petcd.errors import ProposalDroppedError
from petcd.pb.raft_pb2 import MSG_APP, MSG_HEARTBEAT, MSG_HEARTBEAT_RESP
from petcd.raft import ReadOnlyOption

from .harness import Cluster


def test_read_index_on_leader_waits_for_a_heartbeat_quorum() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.propose(1, b"x")
    committed = c.raft(1).raft_log.committed
    c.drop_types = {MSG_HEARTBEAT_RESP}
    c.node(1).read_index(b"ctx1")
    c.stabilize()
    assert c.members[1].read_states == []  # no quorum confirmed leadership yet
    c.recover()
    c.node(1).read_index(b"ctx2")
    c.stabilize()
    got = [(rs.index, rs.request_ctx) for rs in c.members[1].read_states]
    # Releasing ctx2 releases the earlier ctx1 too, each at its own recorded index.
    assert got == [(committed, b"ctx1"), (committed, b"ctx2")]
    hb = [m for m in c.sent if m.type == MSG_HEARTBEAT and m.context == b"ctx2"]
    assert {m.to for m in hb} == {2, 3}


def test_read_index_through_a_follower() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.propose(1, b"x")
    c.node(3).read_index(b"r")
    c.stabilize()
    (rs,) = c.members[3].read_states
    assert rs.request_ctx == b"r"
    assert rs.index == c.raft(1).raft_log.committed


def test_read_index_without_leader_is_refused() -> None:
    c = Cluster([1, 2, 3])
    with pytest.raises(ProposalDroppedError):
        c.node(2).read_index(b"r")


def test_new_leader_answers_only_after_committing_in_its_term() -> None:
    c = Cluster([1, 2, 3])
    c.drop_types = {MSG_APP}
    c.elect(1)
    # The new leader's empty entry is not committed yet: the read waits for it.
    c.node(1).read_index(b"early")
    c.stabilize()
    assert c.members[1].read_states == []
    c.recover()
    c.tick(1)
    c.stabilize()
    (rs,) = c.members[1].read_states
    assert rs.index == c.raft(1).raft_log.committed
    assert c.raft(1).raft_log.term(rs.index) == c.node(1).term


def test_single_member_read_index_is_immediate() -> None:
    c = Cluster([1])
    c.elect(1)
    c.node(1).read_index(b"solo")
    c.stabilize()
    assert [rs.request_ctx for rs in c.members[1].read_states] == [b"solo"]


def test_lease_based_reads_answer_at_once() -> None:
    c = Cluster([1, 2, 3], check_quorum=True, read_only_option=ReadOnlyOption.LEASE_BASED)
    c.elect(1)
    c.sent.clear()
    c.node(1).read_index(b"lease")
    c.stabilize()
    assert [rs.request_ctx for rs in c.members[1].read_states] == [b"lease"]
    assert not [m for m in c.sent if m.type == MSG_HEARTBEAT]
