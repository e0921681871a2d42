"""Bad remote input never crashes a member nor breaks an invariant: it is dropped."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from petcd.pb.raft_pb2 import (
    MSG_APP,
    MSG_APP_RESP,
    MSG_HEARTBEAT,
    MSG_SNAP,
    MSG_VOTE_RESP,
    Entry,
    Message,
)
from petcd.raft import StateType

from .harness import Cluster


def _leader_cluster() -> Cluster:
    c = Cluster([1, 2, 3])
    c.elect(1)
    for i in range(3):
        c.propose(1, b"e%d" % i)
    c.tick(1)
    c.stabilize()
    return c


def test_responses_from_unknown_members_are_dropped() -> None:
    c = _leader_cluster()
    before = c.raft(1).raft_log.committed
    c.node(1).step(Message(type=MSG_APP_RESP, from_=9, to=1, term=2, index=10**6))
    c.node(1).step(Message(type=MSG_VOTE_RESP, from_=9, to=1, term=2))
    assert c.raft(1).raft_log.committed == before
    assert c.node(1).state == StateType.LEADER


def test_ack_beyond_the_log_is_dropped() -> None:
    c = _leader_cluster()
    last = c.raft(1).raft_log.last_index()
    c.node(1).step(Message(type=MSG_APP_RESP, from_=2, to=1, term=2, index=last + 100))
    assert c.raft(1).trk.progress[2].match <= last
    assert c.raft(1).raft_log.committed <= last


def test_heartbeat_commit_beyond_the_log_is_ignored() -> None:
    c = _leader_cluster()
    last = c.raft(2).raft_log.last_index()
    c.node(2).step(Message(type=MSG_HEARTBEAT, from_=1, to=2, term=2, commit=last + 50))
    assert c.raft(2).raft_log.committed <= last


def test_malformed_append_is_dropped() -> None:
    c = _leader_cluster()
    log = c.raft(2).raft_log
    last = log.last_index()
    # Entries that do not follow m.index, or claim a term beyond the message's.
    bad = [
        Message(
            type=MSG_APP,
            from_=1,
            to=2,
            term=2,
            index=last,
            log_term=2,
            entries=[Entry(term=2, index=last + 5)],
        ),
        Message(
            type=MSG_APP,
            from_=1,
            to=2,
            term=2,
            index=last,
            log_term=2,
            entries=[Entry(term=7, index=last + 1)],
        ),
    ]
    for m in bad:
        c.node(2).step(m)
    assert log.last_index() == last


def test_append_conflicting_with_committed_entries_is_dropped() -> None:
    c = _leader_cluster()
    log = c.raft(2).raft_log
    committed = log.committed
    old = log.term(committed)
    m = Message(
        type=MSG_APP,
        from_=1,
        to=2,
        term=2,
        index=committed - 1,
        log_term=log.term(committed - 1),
        entries=[Entry(term=2, index=committed, data=b"evil")],
        commit=committed,
    )
    if old != 2:
        c.node(2).step(m)
        assert log.term(committed) == old


def test_empty_snapshot_is_dropped() -> None:
    c = _leader_cluster()
    c.node(2).step(Message(type=MSG_SNAP, from_=1, to=2, term=2))
    assert c.raft(2).raft_log.unstable.snapshot is None


def test_messages_for_someone_else_or_from_nobody_are_dropped() -> None:
    c = _leader_cluster()
    c.node(2).step(Message(type=MSG_HEARTBEAT, from_=1, to=3, term=9))
    c.node(2).step(Message(type=MSG_HEARTBEAT, from_=0, to=2, term=9))
    c.node(2).step(Message(type=MSG_HEARTBEAT, from_=1, to=2, term=0))
    assert c.node(2).term == 2


def test_duplicated_and_reordered_appends_are_harmless() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    for i in range(6):
        c.node(1).propose(b"d%d" % i)
        c.process(1)
    msgs = list(c.inbox[2])
    c.inbox[2] = list(reversed(msgs)) + msgs + list(reversed(msgs))
    c.stabilize()
    c.tick(1)
    c.stabilize()
    assert c.log_of(2) == c.log_of(1)
    assert c.payloads(2) == [b"d%d" % i for i in range(6)]


_TYPES = st.sampled_from(list(range(19)))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            _TYPES,
            st.integers(0, 4),  # from
            st.integers(0, 6),  # term
            st.integers(0, 12),  # index
            st.integers(0, 6),  # log_term
            st.integers(0, 12),  # commit
            st.booleans(),  # reject
            st.lists(st.tuples(st.integers(0, 6), st.integers(0, 14)), max_size=3),
        ),
        max_size=20,
    )
)
def test_random_messages_never_break_invariants(msgs: list[tuple]) -> None:  # type: ignore[type-arg]
    """Arbitrary messages: no exception escapes, and the log keeps its invariants."""
    c = _leader_cluster()
    committed_before = {i: c.raft(i).raft_log.committed for i in (1, 2, 3)}
    for t, frm, term, index, log_term, commit, reject, ents in msgs:
        for to in (1, 2):
            m = Message(
                type=t,
                from_=frm,
                to=to,
                term=term,
                index=index,
                log_term=log_term,
                commit=commit,
                reject=reject,
                entries=[Entry(term=et, index=ei) for et, ei in ents],
            )
            c.node(to).step(m)
            c.process(to)
    for i in (1, 2):
        log = c.raft(i).raft_log
        assert log.committed >= committed_before[i]
        assert log.applied <= log.committed <= log.last_index()
        ents = log.all_entries()
        assert all(b.index == a.index + 1 and b.term >= a.term for a, b in itertools.pairwise(ents))
        # Committed entries never changed.
        assert [e.data for e in ents[: committed_before[i] - log.first_index() + 1]] == [
            e.data for e in c.log_of(3)[: committed_before[i] - log.first_index() + 1]
        ]
