"""Leadership transfer (thesis §3.10)."""

from __future__ import annotations

import pytest

from petcd.errors import ProposalDroppedError
from petcd.pb.raft_pb2 import MSG_APP, MSG_TIMEOUT_NOW
from petcd.raft import StateType

from .harness import Cluster


def test_transfer_to_an_up_to_date_follower() -> None:
    c = Cluster([1, 2, 3], check_quorum=True, pre_vote=True)
    c.elect(1)
    c.propose(1, b"x")
    c.node(1).transfer_leader(2)
    c.stabilize()
    assert c.node(2).state == StateType.LEADER
    assert c.node(1).state == StateType.FOLLOWER
    assert c.node(2).term == c.node(1).term == 3
    assert c.node(3).leader_id == 2


def test_transfer_to_a_lagging_follower_catches_it_up_first() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(3)
    for i in range(5):
        c.propose(1, b"e%d" % i)
    c.recover()
    c.sent.clear()
    c.node(1).transfer_leader(3)
    # Proposals are refused while the transfer is in progress.
    with pytest.raises(ProposalDroppedError):
        c.node(1).propose(b"during")
    c.stabilize()
    c.tick(1)
    c.stabilize()
    kinds = [m.type for m in c.sent if m.to == 3 and m.type in (MSG_APP, MSG_TIMEOUT_NOW)]
    assert MSG_APP in kinds and kinds.index(MSG_APP) < kinds.index(MSG_TIMEOUT_NOW)
    assert c.node(3).state == StateType.LEADER
    assert c.payloads(3)[-1] == b"e4"


def test_transfer_is_aborted_after_an_election_timeout() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(3)
    c.node(1).transfer_leader(3)
    assert c.raft(1).lead_transferee == 3
    c.tick(1, 10)
    c.stabilize()
    assert c.raft(1).lead_transferee == 0
    assert c.node(1).state == StateType.LEADER
    c.node(1).propose(b"accepted again")


def test_transfer_to_self_or_learner_is_ignored() -> None:
    c = Cluster([1, 2])
    c.elect(1)
    c.node(1).transfer_leader(1)
    assert c.raft(1).lead_transferee == 0
    c.node(1).transfer_leader(9)  # unknown member
    assert c.raft(1).lead_transferee == 0


def test_follower_forwards_a_transfer_request() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.node(3).transfer_leader(3)
    c.stabilize()
    assert c.node(3).state == StateType.LEADER
