"""Leader election rules (Raft §5.2, §5.4.1; thesis §4.2.3, §6.2, §9.6), one test per rule."""

from __future__ import annotations

import pytest

from petcd.pb.raft_pb2 import MSG_PRE_VOTE, MSG_VOTE, Message
from petcd.raft import StateType
from petcd.raft.raft import MSG_HEARTBEAT, MSG_VOTE_RESP

from .harness import Cluster


@pytest.mark.parametrize(
    ("size", "down", "expected"),
    [
        # §5.2: a candidate wins with votes from a majority of the voters.
        (1, set(), StateType.LEADER),
        (3, set(), StateType.LEADER),
        (3, {3}, StateType.LEADER),
        (3, {2, 3}, StateType.CANDIDATE),
        (5, {4, 5}, StateType.LEADER),
        (5, {3, 4, 5}, StateType.CANDIDATE),
    ],
)
def test_candidate_needs_a_majority(size: int, down: set[int], expected: StateType) -> None:
    c = Cluster(range(1, size + 1))
    for d in down:
        c.isolate(d)
    c.node(1).campaign()
    c.stabilize()
    assert c.node(1).state == expected
    assert c.node(1).term == 2


def test_pre_vote_candidate_needs_a_majority_too() -> None:
    c = Cluster([1, 2, 3], pre_vote=True)
    c.isolate(2)
    c.isolate(3)
    c.node(1).campaign()
    c.stabilize()
    # §9.6: the pre-candidate never raised its term, since it could not win.
    assert c.node(1).state == StateType.PRE_CANDIDATE
    assert c.node(1).term == 1


def test_one_vote_per_term() -> None:
    """§5.2: each member votes for at most one candidate in a term, first come first served."""
    c = Cluster([1, 2, 3])
    c.node(1).campaign()
    c.process(1)
    c.node(3).campaign()
    c.process(3)
    # Member 2 sees 1's request first, then 3's, both for term 2.
    c.deliver(2, lambda m: m.from_ == 1)
    c.deliver(2, lambda m: m.from_ == 3)
    c.process(2)
    resps = [m for m in c.inbox[1] + c.inbox[3] if m.from_ == 2 and m.type == MSG_VOTE_RESP]
    assert [(m.to, m.reject) for m in resps] == [(1, False), (3, True)]
    assert c.members[2].storage.hard_state.vote == 1


def test_split_vote_is_resolved_by_a_later_election() -> None:
    """§5.2: a split vote leaves no leader; randomised timeouts then elect one."""
    c = Cluster([1, 2, 3, 4], seed=7)
    c.cut(1, 3)
    c.cut(1, 4)
    c.cut(2, 3)
    c.cut(2, 4)
    c.node(1).campaign()
    c.node(3).campaign()
    c.stabilize()
    # {1, 2} and {3, 4} each have two votes of four: nobody wins term 2.
    assert c.leader() == 0
    assert {c.node(i).term for i in range(1, 5)} == {2}
    c.recover()
    for _ in range(200):
        c.tick_all()
        c.stabilize()
        if c.leader():
            break
    leader = c.leader()
    assert leader != 0
    assert c.node(leader).term > 2
    assert all(c.node(i).leader_id == leader for i in range(1, 5))


def test_randomized_election_timeouts_in_range() -> None:
    """Timeouts are drawn from [election, 2 x election) by the rng the caller passes in."""
    c = Cluster([1], election_tick=10)
    seen = set()
    r = c.raft(1)
    for _ in range(500):
        r._reset_randomized_election_timeout()
        seen.add(r.randomized_election_timeout)
    assert seen == set(range(10, 20))


def test_follower_campaigns_after_its_election_timeout() -> None:
    c = Cluster([1, 2, 3])
    r = c.raft(1)
    timeout = r.randomized_election_timeout
    c.tick(1, timeout - 1)
    assert c.node(1).state == StateType.FOLLOWER
    c.tick(1)
    assert c.node(1).state == StateType.CANDIDATE
    assert c.node(1).term == 2


def test_vote_refused_to_a_candidate_with_a_stale_log() -> None:
    """§5.4.1: a vote is granted only if the candidate's log is at least as up to date."""
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(3)
    c.propose(1, b"x")
    c.recover()
    c.isolate(1)
    # Member 3 lacks "x": member 2 refuses it, and 2 wins the next election instead.
    c.node(3).campaign()
    c.stabilize()
    assert c.node(3).state != StateType.LEADER
    c.node(2).campaign()
    c.stabilize()
    assert c.node(2).state == StateType.LEADER


def test_higher_term_turns_leader_into_follower() -> None:
    """§5.1: a member that sees a newer term becomes a follower of that term."""
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.node(1).step(Message(type=MSG_HEARTBEAT, from_=2, to=1, term=9))
    assert c.node(1).state == StateType.FOLLOWER
    assert c.node(1).term == 9
    assert c.node(1).leader_id == 2


def test_pre_vote_keeps_a_partitioned_member_from_inflating_terms() -> None:
    """thesis §9.6: without pre-vote, a partitioned member raises its term on every timeout and
    disrupts the leader when it returns; with pre-vote it stays at the cluster's term."""
    for pre_vote, expect_disrupt in ((False, True), (True, False)):
        c = Cluster([1, 2, 3], pre_vote=pre_vote)
        c.elect(1)
        c.isolate(3)
        for _ in range(100):
            c.tick(3)
            c.stabilize()
        inflated = c.node(3).term > c.node(1).term
        assert inflated == expect_disrupt
        c.recover()
        c.tick(3, 30)  # member 3 campaigns again, now reachable
        c.stabilize()
        c.tick(1)  # heartbeats reach 3
        c.stabilize()
        disrupted = c.node(1).term > 2
        assert disrupted == expect_disrupt, pre_vote
        if not expect_disrupt:
            assert c.node(1).state == StateType.LEADER
            assert c.node(3).leader_id == 1


def test_check_quorum_leader_steps_down_without_a_quorum() -> None:
    """thesis §6.2: a leader that hears from no quorum within an election timeout steps down."""
    c = Cluster([1, 2, 3], check_quorum=True)
    c.elect(1)
    c.isolate(1)
    c.tick(1, 10)
    assert c.node(1).state == StateType.LEADER  # first round: marks everyone inactive
    c.tick(1, 10)
    assert c.node(1).state == StateType.FOLLOWER
    assert c.node(1).term == 2


def test_check_quorum_leader_stays_with_a_quorum() -> None:
    c = Cluster([1, 2, 3], check_quorum=True)
    c.elect(1)
    c.isolate(3)
    for _ in range(50):
        c.tick(1)
        c.stabilize([1, 2])
    assert c.node(1).state == StateType.LEADER


@pytest.mark.parametrize("vote_type", [MSG_VOTE, MSG_PRE_VOTE])
def test_member_with_live_leader_ignores_vote_requests(vote_type: int) -> None:
    """thesis §4.2.3: within an election timeout of hearing from the leader, (pre-)vote requests
    are ignored (with check-quorum): a removed or partitioned member cannot depose it."""
    c = Cluster([1, 2, 3], check_quorum=True, pre_vote=True)
    c.elect(1)
    c.node(2).step(Message(type=vote_type, from_=3, to=2, term=5, index=100, log_term=4))
    assert c.node(2).term == 2
    c.process(2)
    assert c.inbox[3] == []
    # Once the leader has been silent for an election timeout, the request is considered.
    c.tick(2, 10)
    c.node(2).step(Message(type=vote_type, from_=3, to=2, term=5, index=100, log_term=4))
    c.process(2)
    assert [m.reject for m in c.inbox[3]] == [False]


def test_stale_term_messages_are_ignored() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.node(2).step(Message(type=MSG_VOTE, from_=3, to=2, term=1, index=100, log_term=1))
    assert c.node(2).term == 2
    assert c.raft(2).vote == 1


def test_candidate_steps_down_on_a_leader_of_its_term() -> None:
    c = Cluster([1, 2, 3])
    c.isolate(3)
    c.node(3).campaign()
    c.process(3)
    assert c.node(3).state == StateType.CANDIDATE
    # Meanwhile 1 wins term 2; its heartbeat makes candidate 3 a follower of 1.
    c.recover()
    c.inbox[1].clear()
    c.inbox[2].clear()
    c.node(1).campaign()
    c.stabilize()
    assert c.node(1).state == StateType.LEADER or c.node(3).state == StateType.LEADER
    leader = c.leader()
    assert all(c.node(i).leader_id == leader for i in (1, 2, 3))


def test_rejected_vote_keeps_the_election_timer_running() -> None:
    """§5.2: only a granted vote resets the timer, so a member with a better log still times
    out and campaigns while a stale candidate keeps retrying (simulator seed 118)."""
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.propose(1, b"x")
    c.tick(2, 5)
    elapsed = c.raft(2).election_elapsed
    c.node(2).step(Message(type=MSG_VOTE, from_=3, to=2, term=7, index=1, log_term=1))
    assert c.node(2).term == 7
    assert c.raft(2).vote == 0
    assert c.raft(2).election_elapsed == elapsed
    c.node(2).step(Message(type=MSG_VOTE, from_=3, to=2, term=8, index=100, log_term=8))
    assert c.raft(2).vote == 3
    assert c.raft(2).election_elapsed == 0
