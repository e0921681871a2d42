"""Log replication and commitment (Raft §5.3, §5.4.2), flow control, refused proposals."""

from __future__ import annotations

import pytest

from petcd.errors import ProposalDroppedError
from petcd.pb.raft_pb2 import MSG_APP, MSG_APP_RESP, Entry, Message
from petcd.raft import ProgressState, StateType

from .harness import Cluster


def test_committed_entries_reach_every_member() -> None:
    """§5.3: the leader appends, replicates, commits on a quorum; followers apply in order."""
    c = Cluster([1, 2, 3])
    c.elect(1)
    for i in range(5):
        c.node(1).propose(b"v%d" % i)
    c.stabilize()
    c.tick(1)  # a heartbeat carries the final commit index
    c.stabilize()
    for id_ in (1, 2, 3):
        assert c.payloads(id_) == [b"v0", b"v1", b"v2", b"v3", b"v4"]


def test_commit_needs_a_quorum() -> None:
    c = Cluster([1, 2, 3, 4, 5])
    c.elect(1)
    c.isolate(3)
    c.isolate(4)
    c.isolate(5)
    committed = c.raft(1).raft_log.committed
    c.propose(1, b"x")
    assert c.raft(1).raft_log.committed == committed
    c.recover()
    c.isolate(5)
    c.tick(1)
    c.stabilize()
    assert c.raft(1).raft_log.committed == committed + 1


def test_old_term_entry_commits_only_through_a_current_term_entry() -> None:
    """§5.4.2 / Figure 8: a leader never commits an entry of an earlier term by counting
    replicas; it commits it only together with an entry of its own term."""
    c = Cluster([1, 2, 3, 4, 5])
    c.elect(1)  # term 2
    base = c.raft(1).raft_log.last_index()
    # (a) leader 1 replicates "old" (term 2) to member 2 only, then crashes.
    c.isolate(1)
    c.blocked -= {(1, 2), (2, 1)}
    c.propose(1, b"old")
    assert c.raft(2).raft_log.last_index() == base + 1
    c.restart(1)
    # (b) 5 is elected for term 3 by 3, 4 and itself; its entries reach nobody.
    c.recover()
    c.isolate(1)
    c.isolate(2)
    c.drop_types = {MSG_APP}
    c.elect(5)
    assert c.raft(5).raft_log.term(base + 1) == 3
    # (c) 5 crashes for good; 1 is elected for term 4 by 2, 3 and itself.
    c.recover()
    c.isolate(5)
    c.isolate(4)
    c.drop_types = {MSG_APP}  # hold back 1's appends while we look at its commit rule
    for _ in range(3):
        if c.node(1).state == StateType.LEADER:
            break
        c.node(1).campaign()
        c.stabilize()
    r1 = c.raft(1)
    assert c.node(1).state == StateType.LEADER and r1.term == 4
    log = r1.raft_log
    assert log.term(base + 1) == 2
    # The term-2 entry is on a majority (1, 2, 3): counting replicas must not commit it.
    saved = {i: r1.trk.progress[i].match for i in (2, 3)}
    r1.trk.progress[2].match = base + 1
    r1.trk.progress[3].match = base + 1
    assert not r1.maybe_commit()
    assert log.committed < base + 1
    for i, match in saved.items():
        r1.trk.progress[i].match = match
    # Once the term-4 entry is on a majority, both are committed together.
    c.drop_types.clear()
    c.tick(1)
    c.stabilize()
    assert log.committed == base + 2
    assert log.term(base + 2) == 4
    assert c.payloads(2)[-1] == b"old"


def test_diverged_follower_is_repaired_after_leader_change() -> None:
    """§5.3: a follower with a long uncommitted tail from an old leader gets it replaced;
    the reject hint skips whole terms, so few round trips are needed."""
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(1)
    # Old leader 1 appends 50 entries nobody else gets.
    for i in range(50):
        c.node(1).propose(b"lost%d" % i)
        c.process(1)
    c.elect(2)
    for i in range(5):
        c.node(2).propose(b"kept%d" % i)
    c.stabilize()
    # A third leader probes 1 from its own last index, well past the divergence point.
    c.elect(3)
    c.recover()
    c.sent.clear()
    for _ in range(10):
        c.tick(2)
        c.stabilize()
    rejects = [m for m in c.sent if m.type == MSG_APP_RESP and m.reject]
    assert c.log_of(1) == c.log_of(2)
    assert b"kept4" in c.payloads(1)
    assert not any(p.startswith(b"lost") for p in c.payloads(1))
    # One rejection (with the hint) is enough to find the divergence point of 50 entries.
    assert 1 <= len(rejects) <= 2


def test_follower_rejects_append_that_does_not_match() -> None:
    """§5.3: the (index, term) consistency check."""
    c = Cluster([1, 2])
    c.elect(1)
    last = c.raft(2).raft_log.last_index()
    term = c.node(1).term
    c.node(2).step(
        Message(
            type=MSG_APP,
            from_=1,
            to=2,
            term=term,
            index=last + 5,
            log_term=term,
            entries=[Entry(term=term, index=last + 6, data=b"z")],
        )
    )
    c.process(2)
    (resp,) = c.inbox[1]
    assert resp.reject
    assert resp.index == last + 5
    assert resp.reject_hint == last
    assert c.raft(2).raft_log.last_index() == last


def test_probe_then_replicate_with_inflight_window() -> None:
    c = Cluster([1, 2], max_inflight_msgs=2)
    c.elect(1)
    pr = c.raft(1).trk.progress[2]
    assert pr.state == ProgressState.REPLICATE
    # Without acknowledgements, at most 2 appends are in flight.
    for i in range(5):
        c.node(1).propose(b"%d" % i)
        c.process(1)
    apps = [m for m in c.inbox[2] if m.type == MSG_APP and m.entries]
    assert len(apps) == 2
    assert pr.is_paused()
    c.stabilize()
    assert pr.match == c.raft(1).raft_log.last_index()
    assert not pr.is_paused()


def test_probe_state_sends_one_append_at_a_time() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(3)
    for i in range(3):
        c.propose(1, b"%d" % i)
    pr = c.raft(1).trk.progress[3]
    c.node(1).report_unreachable(3)
    assert pr.state == ProgressState.PROBE
    c.recover()
    c.inbox[3].clear()
    for i in range(3):
        c.node(1).propose(b"p%d" % i)
        c.process(1)
    assert len([m for m in c.inbox[3] if m.type == MSG_APP]) == 1
    c.stabilize()
    assert pr.state == ProgressState.REPLICATE


def test_max_message_size_splits_appends() -> None:
    c = Cluster([1, 2], max_size_per_msg=100)
    c.elect(1)
    c.isolate(2)
    for i in range(10):
        c.propose(1, b"x" * 40 + b"%d" % i)
    c.recover()
    c.node(1).report_unreachable(2)
    c.sent.clear()
    for _ in range(10):
        c.tick(1)
        c.stabilize()
    assert c.log_of(1) == c.log_of(2)
    sizes = [
        sum(e.ByteSize() for e in m.entries) for m in c.sent if m.type == MSG_APP and m.entries
    ]
    assert sizes and max(sizes) <= 100


def test_uncommitted_size_cap_refuses_proposals() -> None:
    c = Cluster([1, 2, 3], max_uncommitted_entries_size=100)
    c.elect(1)
    c.isolate(2)
    c.isolate(3)
    c.node(1).propose(b"a" * 60)
    c.node(1).propose(b"b" * 30)
    with pytest.raises(ProposalDroppedError):
        c.node(1).propose(b"c" * 30)
    c.recover()
    c.tick(1)
    c.stabilize()
    c.tick(1)
    c.stabilize()
    # Once committed and applied, there is room again.
    c.node(1).propose(b"c" * 30)


def test_proposal_without_leader_is_refused() -> None:
    c = Cluster([1, 2, 3])
    with pytest.raises(ProposalDroppedError):
        c.node(1).propose(b"x")
    c.isolate(2)
    c.isolate(3)
    c.node(1).campaign()
    c.stabilize()
    with pytest.raises(ProposalDroppedError):
        c.node(1).propose(b"x")


def test_follower_forwards_proposals_unless_disabled() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.propose(2, b"via-2")
    c.tick(1)
    c.stabilize()
    assert b"via-2" in c.payloads(3)
    d = Cluster([1, 2, 3], disable_proposal_forwarding=True)
    d.elect(1)
    with pytest.raises(ProposalDroppedError):
        d.node(2).propose(b"x")


def test_single_member_commits_one_ready_after_persisting() -> None:
    """rawnode.py rule 2/3: the leader's own ack comes at advance, after the write."""
    c = Cluster([1])
    c.elect(1)
    n = c.node(1)
    n.propose(b"x")
    rd = n.ready()
    assert [e.data for e in rd.entries] == [b"x"]
    assert rd.committed_entries == []
    c.members[1].storage.append(rd.entries)
    n.advance(rd)
    rd = n.ready()
    assert [e.data for e in rd.committed_entries] == [b"x"]
    assert rd.hard_state is not None and rd.hard_state.commit == rd.committed_entries[-1].index
    n.advance(rd)


def test_follower_applies_only_persisted_entries() -> None:
    c = Cluster([1, 2])
    c.elect(1)
    c.node(1).propose(b"x")
    c.process(1)
    # An append that also says "committed" (a later heartbeat) arrives with the entry.
    c.tick(1)
    c.process(1)
    c.process(1)
    c.deliver(2)
    rd = c.node(2).ready()
    persisted = c.members[2].storage.last_index()
    assert all(e.index <= persisted for e in rd.committed_entries)
    c.node(2).advance(rd)
