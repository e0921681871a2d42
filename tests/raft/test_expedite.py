"""expedite_election: a follower that saw the leader's connection break times out early."""

from __future__ import annotations

from petcd.raft import StateType
from tests.raft.harness import Cluster


def _cluster_with_leader() -> Cluster:
    cluster = Cluster([1, 2, 3], pre_vote=True, check_quorum=True)
    cluster.elect(1)
    assert cluster.leader() == 1
    return cluster


def test_follower_times_out_right_after_the_lease() -> None:
    cluster = _cluster_with_leader()
    cluster.isolate(1)  # the leader is gone
    node = cluster.node(2)
    node.expedite_election(1)
    cluster.tick(2, 10)
    assert node.state == StateType.FOLLOWER  # the leader's lease (10 ticks) still holds
    cluster.tick(2, 1)
    assert node.state == StateType.PRE_CANDIDATE
    cluster.tick(3, 11)  # member 3's lease has run out too: it grants the pre-vote and vote
    cluster.stabilize()
    assert cluster.leader() == 2


def test_expedite_only_ever_hastens_and_only_followers() -> None:
    cluster = _cluster_with_leader()
    follower = cluster.raft(2)
    follower.randomized_election_timeout = 10
    cluster.node(2).expedite_election(5)
    assert follower.randomized_election_timeout == 10
    leader = cluster.raft(1)
    before = leader.randomized_election_timeout
    cluster.node(1).expedite_election(1)
    assert leader.randomized_election_timeout == before
