"""The RawNode interface: bootstrap, the Ready contract, status."""

from __future__ import annotations

import random

import pytest

from petcd.errors import RaftConfigError
from petcd.pb.raft_pb2 import ENTRY_CONF_CHANGE, ConfChange
from petcd.raft import Config, MemoryStorage, Peer, RawNode, ReadOnlyOption, StateType


def _node(storage: MemoryStorage | None = None, **kw: object) -> tuple[RawNode, MemoryStorage]:
    storage = storage if storage is not None else MemoryStorage()
    cfg = Config(id=1, election_tick=10, heartbeat_tick=1, storage=storage, rng=random.Random(1))
    for k, v in kw.items():
        setattr(cfg, k, v)
    return RawNode(cfg), storage


def _persist(node: RawNode, storage: MemoryStorage) -> None:
    rd = node.ready()
    if rd.hard_state is not None:
        storage.set_hard_state(rd.hard_state)
    storage.append(rd.entries)
    for e in rd.committed_entries:
        if e.type == ENTRY_CONF_CHANGE:
            node.apply_conf_change(ConfChange.FromString(e.data))
    node.advance(rd)


def test_bootstrap_appends_one_committed_conf_change_per_peer() -> None:
    node, storage = _node()
    node.bootstrap([Peer(1, b"m1"), Peer(2, b"m2")])
    rd = node.ready()
    assert rd.hard_state is not None
    assert (rd.hard_state.term, rd.hard_state.commit) == (1, 2)
    assert [(e.term, e.index, e.type) for e in rd.entries] == [(1, 1, 1), (1, 2, 1)]
    assert [ConfChange.FromString(e.data).context for e in rd.entries] == [b"m1", b"m2"]
    assert rd.committed_entries == []  # not yet persisted
    assert rd.must_sync
    storage.set_hard_state(rd.hard_state)
    storage.append(rd.entries)
    node.advance(rd)
    rd = node.ready()
    assert [e.index for e in rd.committed_entries] == [1, 2]
    node.advance(rd)


def test_bootstrap_refuses_nonempty_storage_and_bad_peers() -> None:
    node, storage = _node()
    with pytest.raises(RaftConfigError):
        node.bootstrap([])
    with pytest.raises(RaftConfigError):
        node.bootstrap([Peer(1), Peer(1)])
    node.bootstrap([Peer(1)])
    _persist(node, storage)
    again, _ = _node(storage)
    with pytest.raises(RaftConfigError):
        again.bootstrap([Peer(1)])


@pytest.mark.parametrize(
    "kw",
    [
        {"id": 0},
        {"heartbeat_tick": 0},
        {"election_tick": 1},
        {"max_inflight_msgs": 0},
        {"read_only_option": ReadOnlyOption.LEASE_BASED},
    ],
)
def test_invalid_config_is_refused(kw: dict[str, object]) -> None:
    with pytest.raises(RaftConfigError):
        _node(**kw)


def test_ready_twice_without_advance_is_a_bug() -> None:
    node, _ = _node()
    node.bootstrap([Peer(1)])
    node.ready()
    with pytest.raises(AssertionError):
        node.ready()


def test_no_ready_when_nothing_changed() -> None:
    node, storage = _node()
    node.bootstrap([Peer(1)])
    for _ in range(3):
        if node.has_ready():
            _persist(node, storage)
    assert not node.has_ready()


def test_single_member_campaign_persists_vote_before_winning() -> None:
    node, storage = _node()
    node.bootstrap([Peer(1)])
    _persist(node, storage)
    _persist(node, storage)
    node.campaign()
    rd = node.ready()
    # The vote is in this Ready; the win comes only after it is persisted (at advance).
    assert rd.soft_state is not None and rd.soft_state.raft_state == StateType.CANDIDATE
    assert rd.hard_state is not None and rd.hard_state.vote == 1
    storage.set_hard_state(rd.hard_state)
    node.advance(rd)
    assert node.state == StateType.LEADER


def test_restart_keeps_term_vote_commit_and_config() -> None:
    node, storage = _node()
    node.bootstrap([Peer(1)])
    for _ in range(3):
        _persist(node, storage)
        node.campaign()
    while node.has_ready():
        _persist(node, storage)
    node.propose(b"x")
    while node.has_ready():
        _persist(node, storage)
    st = node.status()
    again, _ = _node(storage, applied=st.applied)
    assert again.term == st.hard_state.term
    assert again.raft.vote == 1
    assert again.raft.raft_log.committed == st.hard_state.commit
    assert again.raft.trk.config.voters == {1}


def test_status_reports_progress_when_leader() -> None:
    node, storage = _node()
    node.bootstrap([Peer(1)])
    while node.has_ready():
        _persist(node, storage)
    node.campaign()
    while node.has_ready():
        _persist(node, storage)
    st = node.status()
    assert st.soft_state.raft_state == StateType.LEADER and st.soft_state.lead == 1
    assert st.progress[1].match == st.hard_state.commit
    assert node.leader_id == 1
    assert node.basic_status().progress == {}
