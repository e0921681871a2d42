"""Membership changes: compute the next (TrackerConfig, progress map) from a conf change.

Three operations, as in the raft thesis §4.3 and etcd's confchange package:
- `simple(changes)`: at most one voter added or removed (learners freely); no joint state.
- `enter_joint(auto_leave, changes)`: the current voters become the outgoing half; the changes
  apply to the incoming half; decisions then need a majority of both halves.
- `leave_joint()`: drop the outgoing half; voters demoted to learners during the change
  (learners_next) become learners now.

Invariants checked after every operation (`check_invariants`): every voter and learner has a
Progress; learners and voters are disjoint; learners_next ⊆ voters_outgoing; learners_next and
auto_leave only while joint; the incoming half is never left empty by a change. Operations
work on copies and raise ConfChangeError without touching the live tracker, so a refused
change leaves the configuration exactly as it was on every member.
"""

from __future__ import annotations

from collections.abc import Iterable

from petcd.errors import ConfChangeError
from petcd.pb.raft_pb2 import (
    CONF_CHANGE_ADD_LEARNER_NODE,
    CONF_CHANGE_ADD_NODE,
    CONF_CHANGE_REMOVE_NODE,
    CONF_CHANGE_TRANSITION_AUTO,
    CONF_CHANGE_TRANSITION_JOINT_EXPLICIT,
    CONF_CHANGE_TRANSITION_JOINT_IMPLICIT,
    CONF_CHANGE_UPDATE_NODE,
    ConfChange,
    ConfChangeSingle,
    ConfChangeV2,
    ConfState,
)
from petcd.raft.tracker import Progress, ProgressTracker, TrackerConfig

ProgressMap = dict[int, Progress]


def as_v2(cc: ConfChange | ConfChangeV2) -> ConfChangeV2:
    """A single-change ConfChange as the equivalent ConfChangeV2."""
    if isinstance(cc, ConfChangeV2):
        return cc
    v2 = ConfChangeV2(context=cc.context)
    v2.changes.append(ConfChangeSingle(type=cc.type, node_id=cc.node_id))
    return v2


def enter_joint_of(cc: ConfChangeV2) -> tuple[bool, bool]:
    """(enters joint, auto leave): whether a V2 change uses joint consensus and how it ends."""
    # An AUTO transition with a single change is done without the joint state.
    if cc.transition != CONF_CHANGE_TRANSITION_AUTO or len(cc.changes) > 1:
        if cc.transition in (CONF_CHANGE_TRANSITION_AUTO, CONF_CHANGE_TRANSITION_JOINT_IMPLICIT):
            return True, True
        assert cc.transition == CONF_CHANGE_TRANSITION_JOINT_EXPLICIT
        return True, False
    return False, False


def leave_joint_of(cc: ConfChangeV2) -> bool:
    """An empty ConfChangeV2 is the instruction to leave the joint configuration."""
    return len(cc.changes) == 0


class Changer:
    """Computes configurations from the tracker's current one; never mutates the tracker."""

    __slots__ = ("last_index", "tracker")

    def __init__(self, tracker: ProgressTracker, last_index: int) -> None:
        self.tracker = tracker
        self.last_index = last_index

    def _copy(self) -> tuple[TrackerConfig, ProgressMap]:
        cfg = self.tracker.config.copy()
        check_invariants(cfg, self.tracker.progress)
        # Progress objects are shared with the live tracker; a learner flag change replaces
        # the object (_with_learner) rather than mutating it.
        prs = dict(self.tracker.progress)
        return cfg, prs

    def simple(self, changes: Iterable[ConfChangeSingle]) -> tuple[TrackerConfig, ProgressMap]:
        cfg, prs = self._copy()
        if cfg.joint():
            raise ConfChangeError("raft: can't apply simple config change in joint config")
        self._apply(cfg, prs, changes)
        before = self.tracker.config.voters
        if len(before ^ cfg.voters) > 1:
            raise ConfChangeError("raft: more than one voter changed without entering joint config")
        check_invariants(cfg, prs)
        return cfg, prs

    def enter_joint(
        self, auto_leave: bool, changes: Iterable[ConfChangeSingle]
    ) -> tuple[TrackerConfig, ProgressMap]:
        cfg, prs = self._copy()
        if cfg.joint():
            raise ConfChangeError("raft: config is already joint")
        if not cfg.voters:
            raise ConfChangeError("raft: can't make a zero-voter config joint")
        cfg.voters_outgoing = set(cfg.voters)
        self._apply(cfg, prs, changes)
        cfg.auto_leave = auto_leave
        check_invariants(cfg, prs)
        return cfg, prs

    def leave_joint(self) -> tuple[TrackerConfig, ProgressMap]:
        cfg, prs = self._copy()
        if not cfg.joint():
            raise ConfChangeError("raft: can't leave a non-joint config")
        for id_ in cfg.learners_next:
            cfg.learners.add(id_)
            prs[id_] = _with_learner(prs[id_], True)
        cfg.learners_next = set()
        for id_ in cfg.voters_outgoing:
            if id_ not in cfg.voters and id_ not in cfg.learners:
                del prs[id_]
        cfg.voters_outgoing = set()
        cfg.auto_leave = False
        check_invariants(cfg, prs)
        return cfg, prs

    def _apply(
        self, cfg: TrackerConfig, prs: ProgressMap, changes: Iterable[ConfChangeSingle]
    ) -> None:
        for cc in changes:
            if cc.node_id == 0:
                continue  # a change the application chose not to carry out
            if cc.type == CONF_CHANGE_ADD_NODE:
                self._make_voter(cfg, prs, cc.node_id)
            elif cc.type == CONF_CHANGE_ADD_LEARNER_NODE:
                self._make_learner(cfg, prs, cc.node_id)
            elif cc.type == CONF_CHANGE_REMOVE_NODE:
                self._remove(cfg, prs, cc.node_id)
            elif cc.type == CONF_CHANGE_UPDATE_NODE:
                pass
            else:
                raise ConfChangeError(f"raft: unexpected conf change type {cc.type}")
        if not cfg.voters:
            raise ConfChangeError("raft: removed all voters")

    def _make_voter(self, cfg: TrackerConfig, prs: ProgressMap, id_: int) -> None:
        pr = prs.get(id_)
        if pr is None:
            self._init_progress(cfg, prs, id_, is_learner=False)
            return
        prs[id_] = _with_learner(pr, False)
        cfg.learners.discard(id_)
        cfg.learners_next.discard(id_)
        cfg.voters.add(id_)

    def _make_learner(self, cfg: TrackerConfig, prs: ProgressMap, id_: int) -> None:
        pr = prs.get(id_)
        if pr is None:
            self._init_progress(cfg, prs, id_, is_learner=True)
            return
        if pr.is_learner:
            return
        # Remove it as a voter of the incoming half but keep its Progress.
        self._remove(cfg, prs, id_)
        prs[id_] = pr
        if id_ in cfg.voters_outgoing:
            # Still a voter of the outgoing half: it becomes a learner on leaving the joint state.
            cfg.learners_next.add(id_)
        else:
            prs[id_] = _with_learner(pr, True)
            cfg.learners.add(id_)

    def _remove(self, cfg: TrackerConfig, prs: ProgressMap, id_: int) -> None:
        if id_ not in prs:
            return
        cfg.voters.discard(id_)
        cfg.learners.discard(id_)
        cfg.learners_next.discard(id_)
        if id_ not in cfg.voters_outgoing:
            del prs[id_]

    def _init_progress(
        self, cfg: TrackerConfig, prs: ProgressMap, id_: int, is_learner: bool
    ) -> None:
        if is_learner:
            cfg.learners.add(id_)
        else:
            cfg.voters.add(id_)
        # Probing from the last index finds the follower's log end quickly; a new member counts
        # as recently active so that check-quorum does not fire before it could answer.
        prs[id_] = self.tracker.new_progress(max(self.last_index, 1), is_learner)


def _with_learner(pr: Progress, is_learner: bool) -> Progress:
    """A copy of pr with the learner flag set: the live tracker's objects stay untouched."""
    if pr.is_learner == is_learner:
        return pr
    clone = Progress(pr.next, pr.inflights, is_learner)
    clone.match = pr.match
    clone.state = pr.state
    clone.pending_snapshot = pr.pending_snapshot
    clone.recent_active = pr.recent_active
    clone.msg_app_flow_paused = pr.msg_app_flow_paused
    assert clone.is_learner == is_learner
    return clone


def check_invariants(cfg: TrackerConfig, prs: ProgressMap) -> None:
    """Raise ConfChangeError if the configuration is not well-formed."""
    for ids in (cfg.voters, cfg.voters_outgoing, cfg.learners, cfg.learners_next):
        for id_ in ids:
            if id_ not in prs:
                raise ConfChangeError(f"raft: no progress for {id_}")
    for id_ in cfg.learners_next:
        if id_ not in cfg.voters_outgoing:
            raise ConfChangeError(f"raft: {id_} is in learners_next, but not in voters_outgoing")
        if prs[id_].is_learner:
            raise ConfChangeError(f"raft: {id_} is in learners_next, but is already a learner")
    for id_ in cfg.learners:
        if id_ in cfg.voters or id_ in cfg.voters_outgoing:
            raise ConfChangeError(f"raft: {id_} is in learners and voters")
        if not prs[id_].is_learner:
            raise ConfChangeError(f"raft: {id_} is in learners, but is not marked as learner")
    if not cfg.joint():
        if cfg.learners_next:
            raise ConfChangeError("raft: learners_next must be empty when not joint")
        if cfg.auto_leave:
            raise ConfChangeError("raft: auto_leave must be false when not joint")


def apply_v2(changer: Changer, cc: ConfChangeV2) -> tuple[TrackerConfig, ProgressMap]:
    """The configuration after applying cc (leave joint, enter joint, or simple)."""
    if leave_joint_of(cc):
        return changer.leave_joint()
    joint, auto_leave = enter_joint_of(cc)
    if joint:
        return changer.enter_joint(auto_leave, cc.changes)
    return changer.simple(cc.changes)


def restore(
    tracker: ProgressTracker, cs: ConfState, last_index: int
) -> tuple[TrackerConfig, ProgressMap]:
    """The configuration a ConfState describes, with fresh Progress for every member."""
    cfg = TrackerConfig(
        voters=set(cs.voters),
        voters_outgoing=set(cs.voters_outgoing),
        learners=set(cs.learners),
        learners_next=set(cs.learners_next),
        auto_leave=cs.auto_leave,
    )
    prs: ProgressMap = {}
    for id_ in sorted(cfg.voters | cfg.voters_outgoing | cfg.learners):
        prs[id_] = tracker.new_progress(max(last_index, 1), id_ in cfg.learners)
    check_invariants(cfg, prs)
    if cfg.joint() and not cfg.voters:
        raise ConfChangeError("raft: joint config with an empty incoming half")
    return cfg, prs
