"""What the leader knows about each member: Progress, the inflight window and the configuration.

A follower's Progress is in one of three states (etcd's tracker/progress.go):

- PROBE: the leader does not know where the follower's log ends. It sends one append at a
  time (then pauses until a response or heartbeat response) and walks `next` back on rejects.
- REPLICATE: the follower's log matches up to `match`; the leader streams appends
  optimistically, advancing `next` as it sends, limited by the inflight window.
- SNAPSHOT: the follower needs compacted entries; a snapshot is on its way and nothing else is
  sent until it is reported (report_snapshot) or the follower acknowledges it.

Invariants: `match < next`; in REPLICATE every inflight index is in (match, next);
`pending_snapshot` is non-zero only in SNAPSHOT; the inflight window holds at most
`max_inflight` messages.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from petcd.pb.raft_pb2 import ConfState
from petcd.raft.quorum import (
    VoteResult,
    joint_committed,
    joint_vote_result,
)


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """The append messages sent to one follower and not yet acknowledged: (last index, bytes)."""

    __slots__ = ("_bytes", "_indexes", "_sizes", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int = 0) -> None:
        assert max_count > 0
        self.max_count = max_count
        self.max_bytes = max_bytes  # 0: no byte limit
        self._indexes: deque[int] = deque()
        self._sizes: deque[int] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._indexes)

    def add(self, index: int, size_bytes: int) -> None:
        assert not self.full(), "adding to a full inflight window"
        assert not self._indexes or index > self._indexes[-1], (index, self._indexes)
        self._indexes.append(index)
        self._sizes.append(size_bytes)
        self._bytes += size_bytes

    def free_le(self, index: int) -> None:
        """Forget every message whose last index is <= index (acknowledged)."""
        indexes = self._indexes
        while indexes and indexes[0] <= index:
            indexes.popleft()
            self._bytes -= self._sizes.popleft()
        assert self._bytes >= 0

    def full(self) -> bool:
        if len(self._indexes) >= self.max_count:
            return True
        return self.max_bytes > 0 and self._bytes >= self.max_bytes

    def reset(self) -> None:
        self._indexes.clear()
        self._sizes.clear()
        self._bytes = 0


class Progress:
    """The leader's view of one member's log."""

    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "msg_app_flow_paused",
        "next",
        "pending_snapshot",
        "recent_active",
        "state",
    )

    def __init__(self, next_index: int, inflights: Inflights, is_learner: bool) -> None:
        assert next_index >= 1
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        # Set by any message from the member; cleared at each check-quorum round.
        self.recent_active = True
        # PROBE: an append is outstanding; REPLICATE: the window is full.
        self.msg_app_flow_paused = False
        self.inflights = inflights
        self.is_learner = is_learner

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.name} match={self.match} next={self.next}"
            f"{' learner' if self.is_learner else ''}"
            f"{f' pending_snap={self.pending_snapshot}' if self.pending_snapshot else ''}"
            f"{' paused' if self.msg_app_flow_paused else ''} inflight={len(self.inflights)})"
        )

    def _reset_state(self, state: ProgressState) -> None:
        self.msg_app_flow_paused = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1
        assert self.next > self.match

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        assert snapshot_index > 0
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def sent_entries(self, count: int, size_bytes: int) -> None:
        """Account for an append of `count` entries just sent."""
        if self.state == ProgressState.REPLICATE:
            if count > 0:
                self.next += count
                self.inflights.add(self.next - 1, size_bytes)
            self.msg_app_flow_paused = self.inflights.full()
        elif self.state == ProgressState.PROBE:
            if count > 0:
                self.msg_app_flow_paused = True
        else:
            raise AssertionError(f"sending entries in state {self.state.name}")

    def maybe_update(self, n: int) -> bool:
        """The member acknowledged its log up to n; whether that was news."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.msg_app_flow_paused = False
        self.next = max(self.next, n + 1)
        assert self.match < self.next
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """The member rejected an append after index `rejected`; step `next` back.

        Returns False for a stale rejection (one that no longer matches what we sent).
        """
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.msg_app_flow_paused = False
        assert self.next >= 1
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.SNAPSHOT:
            return True
        return self.msg_app_flow_paused


@dataclass(slots=True)
class TrackerConfig:
    """The membership: voters (incoming and, during a joint change, outgoing) and learners.

    Invariants (checked by confchange): learners and voters are disjoint; learners_next is a
    subset of voters_outgoing and non-empty only in a joint config; auto_leave only when joint.
    """

    voters: set[int] = field(default_factory=set)
    voters_outgoing: set[int] = field(default_factory=set)
    learners: set[int] = field(default_factory=set)
    learners_next: set[int] = field(default_factory=set)
    auto_leave: bool = False

    def joint(self) -> bool:
        return bool(self.voters_outgoing)

    def all_voters(self) -> set[int]:
        return self.voters | self.voters_outgoing

    def copy(self) -> TrackerConfig:
        return TrackerConfig(
            set(self.voters),
            set(self.voters_outgoing),
            set(self.learners),
            set(self.learners_next),
            self.auto_leave,
        )

    def conf_state(self) -> ConfState:
        return ConfState(
            voters=sorted(self.voters),
            voters_outgoing=sorted(self.voters_outgoing),
            learners=sorted(self.learners),
            learners_next=sorted(self.learners_next),
            auto_leave=self.auto_leave,
        )

    def describe(self) -> str:
        s = "voters=(" + " ".join(map(str, sorted(self.voters))) + ")"
        if self.voters_outgoing:
            s += "&&(" + " ".join(map(str, sorted(self.voters_outgoing))) + ")"
        if self.learners:
            s += " learners=(" + " ".join(map(str, sorted(self.learners))) + ")"
        if self.learners_next:
            s += " learners_next=(" + " ".join(map(str, sorted(self.learners_next))) + ")"
        if self.auto_leave:
            s += " autoleave"
        return s


class ProgressTracker:
    """The configuration, every member's Progress, and the votes of the current election."""

    __slots__ = (
        "_incoming",
        "_outgoing",
        "config",
        "max_inflight",
        "max_inflight_bytes",
        "progress",
        "votes",
    )

    def __init__(self, max_inflight: int, max_inflight_bytes: int = 0) -> None:
        self.config = TrackerConfig()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.max_inflight = max_inflight
        self.max_inflight_bytes = max_inflight_bytes
        self._incoming: tuple[int, ...] = ()
        self._outgoing: tuple[int, ...] = ()

    def set_config(self, config: TrackerConfig, progress: dict[int, Progress]) -> None:
        # Every member of the config has a Progress (checked by confchange too).
        for id_ in config.voters | config.voters_outgoing | config.learners:
            assert id_ in progress, id_
        self.config = config
        self.progress = progress
        self._incoming = tuple(sorted(config.voters))
        self._outgoing = tuple(sorted(config.voters_outgoing))

    def new_progress(self, next_index: int, is_learner: bool) -> Progress:
        inflights = Inflights(self.max_inflight, self.max_inflight_bytes)
        return Progress(max(next_index, 1), inflights, is_learner)

    def conf_state(self) -> ConfState:
        return self.config.conf_state()

    def is_singleton(self) -> bool:
        return len(self._incoming) == 1 and not self._outgoing

    def voter_ids(self) -> list[int]:
        return sorted(set(self._incoming) | set(self._outgoing))

    def ids(self) -> list[int]:
        """Every tracked member, sorted so that iteration (and message order) is deterministic."""
        return sorted(self.progress)

    def is_voter(self, id_: int) -> bool:
        return id_ in self.config.voters or id_ in self.config.voters_outgoing

    def committed(self) -> int:
        """The largest index acknowledged by a quorum of voters (learners never count)."""
        prs = self.progress

        def match(id_: int) -> int:
            return prs[id_].match

        return joint_committed(self._incoming, self._outgoing, match)

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, id_: int, granted: bool) -> None:
        # The first vote of a member counts; duplicates cannot change it.
        if id_ not in self.votes:
            self.votes[id_] = granted

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        granted = 0
        rejected = 0
        for id_ in self.voter_ids():
            vote = self.votes.get(id_)
            if vote is None:
                continue
            if vote:
                granted += 1
            else:
                rejected += 1
        return granted, rejected, self.vote_result(self.votes)

    def vote_result(self, votes: dict[int, bool]) -> VoteResult:
        return joint_vote_result(self._incoming, self._outgoing, votes)

    def quorum_active(self) -> bool:
        """Whether a quorum of voters was recently active (check-quorum)."""
        votes = {id_: pr.recent_active for id_, pr in self.progress.items() if not pr.is_learner}
        return self.vote_result(votes) == VoteResult.WON
