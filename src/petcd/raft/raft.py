"""The raft state machine: roles, terms, elections, replication, reads, transfers, membership.

A `Raft` is driven only through `tick()`, `step(message)` and the propose/apply calls of
`RawNode`; it does no I/O, reads no clock and starts no thread. What it wants sent accumulates
in `msgs`; what it may only act on once the caller has persisted the current Ready (its own
vote, its own append acknowledgement) accumulates in `msgs_after_append` and is stepped back in
at `RawNode.advance`.

Rules, with the raft paper (Ongaro & Ousterhout 2014) or thesis section that states them:
- §5.1 terms: a message with a higher term turns us into a follower of that term first; one
  with a lower term is ignored (except that a stale leader is told about the newer term).
- §5.2 elections: a follower that hears nothing for its randomised timeout (in
  [election_tick, 2 × election_tick) ticks, from the caller's seeded rng) campaigns; a vote is
  granted at most once per term (the vote is persisted before the response is sent); a
  candidate with a quorum of votes becomes leader and appends an empty entry of its term.
- thesis §9.6 pre-vote: with `pre_vote`, a candidate first asks whether it could win, without
  raising its term, so a partitioned member cannot inflate terms and disrupt the cluster.
- thesis §6.2 check-quorum: with `check_quorum`, a leader that has not heard from a quorum
  within an election timeout steps down. A member that heard from a leader within the
  election timeout ignores pre-vote requests (thesis §9.6) and, with check-quorum, vote
  requests too (thesis §4.2.3); requests of a leadership transfer are never ignored.
- §5.2 again: only granting a vote (or hearing from a leader) resets the election timer; a
  rejected request with a newer term does not (etcd resets it, which lets a candidate with a
  stale log keep the up-to-date members from ever campaigning).
- §5.3 log matching: an append carries the (index, term) of the entry before it and is
  rejected unless that entry matches; a rejection carries a hint (the largest index whose term
  is <= the leader's term at the probe point) so a diverged log is repaired in few round trips.
- §5.4.1 up-to-date check on votes; §5.4.2 commit only by counting entries of the current term.
- thesis §6.4 ReadIndex: reads are served at the commit index once a heartbeat quorum confirms
  leadership; a new leader answers only after committing an entry of its own term.
- thesis §3.10 leadership transfer: the leader stops accepting proposals, catches the target
  up, and sends it MsgTimeoutNow so it campaigns at once; aborted after an election timeout.
- thesis §4.1/§4.3 membership: one pending change at a time, carried in the log; joint
  consensus through ConfChangeV2; learners replicate, are never asked for votes and never
  count toward a quorum. A leader that is removed or demoted keeps leading (it no longer
  counts itself) and hands leadership to the most caught-up voter: stepping down at once can
  leave voters that do not know the change committed waiting for its vote forever.

Invariants (asserted where they are established):
- at most one vote per term: `vote` only changes together with a term change or from 0;
- `lead == id` iff `state == LEADER`;
- the leader's own match index covers only entries the caller has persisted (self-ack at
  advance), so a single-member cluster commits an entry one Ready after persisting it;
- bad remote input (unknown senders, stale or future terms, inconsistent indexes, duplicates)
  is dropped, never trusted into the log.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from petcd.errors import (
    ConfChangeError,
    ProposalDroppedError,
    RaftCompactedError,
    RaftConfigError,
    SnapshotTemporarilyUnavailableError,
)
from petcd.pb import raft_pb2 as pb
from petcd.pb.raft_pb2 import (
    ConfChange,
    ConfChangeV2,
    ConfState,
    Entry,
    HardState,
    Message,
    Snapshot,
)
from petcd.raft import confchange
from petcd.raft.log import RaftLog
from petcd.raft.quorum import VoteResult
from petcd.raft.read_only import ReadOnly, ReadOnlyOption, ReadState
from petcd.raft.storage import NO_LIMIT, Storage
from petcd.raft.tracker import Progress, ProgressState, ProgressTracker, TrackerConfig

MSG_HUP = pb.MSG_HUP
MSG_BEAT = pb.MSG_BEAT
MSG_PROP = pb.MSG_PROP
MSG_APP = pb.MSG_APP
MSG_APP_RESP = pb.MSG_APP_RESP
MSG_VOTE = pb.MSG_VOTE
MSG_VOTE_RESP = pb.MSG_VOTE_RESP
MSG_SNAP = pb.MSG_SNAP
MSG_HEARTBEAT = pb.MSG_HEARTBEAT
MSG_HEARTBEAT_RESP = pb.MSG_HEARTBEAT_RESP
MSG_UNREACHABLE = pb.MSG_UNREACHABLE
MSG_SNAP_STATUS = pb.MSG_SNAP_STATUS
MSG_CHECK_QUORUM = pb.MSG_CHECK_QUORUM
MSG_TRANSFER_LEADER = pb.MSG_TRANSFER_LEADER
MSG_TIMEOUT_NOW = pb.MSG_TIMEOUT_NOW
MSG_READ_INDEX = pb.MSG_READ_INDEX
MSG_READ_INDEX_RESP = pb.MSG_READ_INDEX_RESP
MSG_PRE_VOTE = pb.MSG_PRE_VOTE
MSG_PRE_VOTE_RESP = pb.MSG_PRE_VOTE_RESP

ENTRY_NORMAL = pb.ENTRY_NORMAL
ENTRY_CONF_CHANGE = pb.ENTRY_CONF_CHANGE
ENTRY_CONF_CHANGE_V2 = pb.ENTRY_CONF_CHANGE_V2

# Message types that only ever originate inside the node itself.
LOCAL_MSGS = frozenset({MSG_HUP, MSG_BEAT, MSG_UNREACHABLE, MSG_SNAP_STATUS, MSG_CHECK_QUORUM})
# Responses: dropped when the sender is not a member we track.
RESPONSE_MSGS = frozenset(
    {
        MSG_APP_RESP,
        MSG_VOTE_RESP,
        MSG_HEARTBEAT_RESP,
        MSG_UNREACHABLE,
        MSG_READ_INDEX_RESP,
        MSG_PRE_VOTE_RESP,
    }
)
_VOTE_MSGS = frozenset({MSG_VOTE, MSG_VOTE_RESP, MSG_PRE_VOTE, MSG_PRE_VOTE_RESP})
_SELF_MSGS = frozenset({MSG_APP_RESP, MSG_VOTE_RESP, MSG_PRE_VOTE_RESP})

# The context of a vote request that comes from a leadership transfer (bypasses leases).
CAMPAIGN_TRANSFER = b"CampaignTransfer"

# Bounds that keep every loop and queue finite.
_MAX_PENDING_READ_INDEX_MSGS = 4096
_CONF_SCAN_PAGE = 1024


class StateType(enum.IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


class CampaignType(enum.Enum):
    PRE_ELECTION = "CampaignPreElection"
    ELECTION = "CampaignElection"
    TRANSFER = "CampaignTransfer"


@dataclass(slots=True)
class Config:
    """How to build a raft node; see RawNode for the meaning of the persistence rules.

    `rng` supplies the randomised election timeouts; pass a seeded random.Random so that
    runs are reproducible. `applied` is the last index the application has applied (on
    restart). Sizes are in bytes; `max_uncommitted_entries_size` 0 means no limit.
    """

    id: int
    election_tick: int
    heartbeat_tick: int
    storage: Storage
    applied: int = 0
    max_size_per_msg: int = 1 << 20
    max_committed_size_per_ready: int = NO_LIMIT
    max_uncommitted_entries_size: int = 1 << 30
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 0
    check_quorum: bool = False
    pre_vote: bool = False
    read_only_option: ReadOnlyOption = ReadOnlyOption.SAFE
    disable_proposal_forwarding: bool = False
    rng: random.Random | None = None
    logger: logging.Logger | None = None
    max_pending_read_index: int = 4096

    def validate(self) -> None:
        if self.id == 0:
            raise RaftConfigError("raft: cannot use 0 as id")
        if self.heartbeat_tick <= 0:
            raise RaftConfigError("raft: heartbeat tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise RaftConfigError("raft: election tick must be greater than heartbeat tick")
        if self.max_inflight_msgs <= 0:
            raise RaftConfigError("raft: max inflight messages must be greater than 0")
        if self.max_size_per_msg <= 0 or self.max_committed_size_per_ready <= 0:
            raise RaftConfigError("raft: message and ready size limits must be positive")
        if self.read_only_option == ReadOnlyOption.LEASE_BASED and not self.check_quorum:
            raise RaftConfigError(
                "raft: check_quorum must be enabled when read_only_option is LEASE_BASED"
            )
        if self.applied < 0 or self.max_pending_read_index <= 0:
            raise RaftConfigError("raft: applied and max_pending_read_index out of range")


@dataclass(slots=True)
class SoftState:
    """Volatile state worth reporting: the known leader and our role. Never persisted."""

    lead: int
    raft_state: StateType


def vote_resp_type(t: pb.MessageType) -> pb.MessageType:
    if t == MSG_VOTE:
        return MSG_VOTE_RESP
    assert t == MSG_PRE_VOTE, t
    return MSG_PRE_VOTE_RESP


def payloads_size(ents: Sequence[Entry]) -> int:
    return sum([len(e.data) for e in ents])


@dataclass(slots=True)
class _Pending:
    """Read index requests that wait for the new leader's first commit in its term."""

    msgs: list[Message] = field(default_factory=list)


class Raft:
    """One member's consensus state. Driven by RawNode; see the module docstring."""

    def __init__(self, c: Config) -> None:
        c.validate()
        self.id = c.id
        self.raft_log = RaftLog(c.storage, c.max_committed_size_per_ready)
        hs, cs = c.storage.initial_state()
        self.term = 0
        self.vote = 0
        self.lead = 0
        self.state = StateType.FOLLOWER
        self.is_learner = False
        self.lead_transferee = 0
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.msgs: list[Message] = []
        self.msgs_after_append: list[Message] = []
        self.read_states: list[ReadState] = []
        self.pending_read_index = _Pending()
        self.read_only = ReadOnly(c.read_only_option, c.max_pending_read_index)
        self.max_msg_size = c.max_size_per_msg
        self.max_uncommitted_size = c.max_uncommitted_entries_size
        self.max_inflight_bytes = c.max_inflight_bytes
        self.check_quorum = c.check_quorum
        self.pre_vote = c.pre_vote
        self.disable_proposal_forwarding = c.disable_proposal_forwarding
        self.heartbeat_timeout = c.heartbeat_tick
        self.election_timeout = c.election_tick
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = c.election_tick
        self.rng = c.rng if c.rng is not None else random.Random(c.id)
        self.logger = c.logger
        # Proposals mark the followers for an append; the append goes out at the next Ready
        # (one message per follower per batch rather than one per proposal).
        self.bcast_pending = False
        self.trk = ProgressTracker(c.max_inflight_msgs, c.max_inflight_bytes)
        try:
            cfg, prs = confchange.restore(self.trk, cs, self.raft_log.last_index())
        except ConfChangeError as exc:
            raise RaftConfigError(f"raft: stored conf state is invalid: {exc}") from exc
        self._switch_to_config(cfg, prs)
        if hs.term or hs.vote or hs.commit:
            self._load_state(hs)
        if c.applied > 0:
            if c.applied > self.raft_log.committed:
                raise RaftConfigError(
                    f"raft: applied {c.applied} is beyond committed {self.raft_log.committed}"
                )
            self._replay_conf_changes(c.applied)
            self.raft_log.applied_to(c.applied)
        self.become_follower(self.term, 0)
        assert self.state == StateType.FOLLOWER and self.lead == 0

    def _replay_conf_changes(self, applied: int) -> None:
        """Rebuild the configuration from the conf changes in the log up to `applied`.

        The stored ConfState is the snapshot's; conf changes applied after the snapshot are in
        the log but will not be handed out again (they are applied), so we apply them here.
        """
        log = self.raft_log
        lo = log.first_index()
        hi = applied + 1
        budget = (hi - lo) // _CONF_SCAN_PAGE + 2
        while lo < hi and budget > 0:
            budget -= 1
            ents = log.slice(lo, min(hi, lo + _CONF_SCAN_PAGE), NO_LIMIT)
            for e in ents:
                if e.type == ENTRY_NORMAL:
                    continue
                # A change refused when first applied is refused again, on every member.
                with contextlib.suppress(ConfChangeError, ValueError):
                    self.apply_conf_change(decode_conf_change(e.type, e.data))
            lo += len(ents)
        assert lo >= hi, "conf change replay ran out of budget"

    # --- small accessors -----------------------------------------------------------------------

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.state)

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.raft_log.committed)

    def _log(self, msg: str) -> None:
        if self.logger is not None:
            self.logger.info("raft %x [term %d] %s", self.id, self.term, msg)

    def _load_state(self, hs: HardState) -> None:
        log = self.raft_log
        assert log.committed <= hs.commit <= log.last_index(), (
            f"hard state commit {hs.commit} is out of range [{log.committed}, {log.last_index()}]"
        )
        log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    def promotable(self) -> bool:
        """Whether this member may campaign: a voter with no snapshot waiting to be persisted."""
        pr = self.trk.progress.get(self.id)
        return pr is not None and not pr.is_learner and self.raft_log.unstable.snapshot is None

    def past_election_timeout(self) -> bool:
        return self.election_elapsed >= self.randomized_election_timeout

    def expedite_election(self, extra_ticks: int) -> None:
        """The leader looks gone (its connection broke): a follower times out after
        election_timeout + extra_ticks instead of its random draw, when that is sooner.

        Only liveness is affected (raft's safety never depends on timeouts). extra_ticks >= 1
        keeps the other members' leader lease (election_timeout ticks since they last heard
        from the leader) expired when our pre-vote reaches them; distinct extra_ticks per
        member (the server ranks them by id) avoid a split vote between those that noticed.
        """
        assert 1 <= extra_ticks < self.election_timeout, extra_ticks
        if self.state != StateType.FOLLOWER or self.lead == 0:
            return
        self.randomized_election_timeout = min(
            self.randomized_election_timeout, self.election_timeout + extra_ticks
        )

    def _reset_randomized_election_timeout(self) -> None:
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(
            self.election_timeout
        )
        assert self.election_timeout <= self.randomized_election_timeout < 2 * self.election_timeout

    # --- sending -------------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        if m.from_ == 0:
            m.from_ = self.id
        t = m.type
        if t in _VOTE_MSGS:
            # Every (pre-)campaign message names its term explicitly.
            assert m.term != 0, f"term should be set when sending {t}"
        else:
            assert m.term == 0, f"term should not be set when sending {t} (was {m.term})"
            # Proposals and read index requests are forwarded like local messages: no term.
            if t != MSG_PROP and t != MSG_READ_INDEX:
                m.term = self.term
        if m.to == self.id:
            # Only acknowledgements of our own persisted state are addressed to ourselves.
            assert t in _SELF_MSGS, t
            after = self.msgs_after_append
            if t == MSG_APP_RESP and after and after[-1].type == MSG_APP_RESP:
                last = after[-1]
                if last.term == m.term and last.index <= m.index:
                    last.index = m.index  # one self-ack per Ready is enough
                    return
            after.append(m)
        else:
            self.msgs.append(m)

    def send_append(self, to: int) -> None:
        self.maybe_send_append(to, True)

    def maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        """Send to `to` the entries after its next index (or a snapshot); whether anything went."""
        pr = self.trk.progress[to]
        if pr.is_paused():
            return False
        log = self.raft_log
        prev_index = pr.next - 1
        try:
            prev_term = log.term(prev_index)
        except RaftCompactedError:
            return self._maybe_send_snapshot(to, pr)
        ents: list[Entry] = []
        if pr.state != ProgressState.REPLICATE or not pr.inflights.full():
            try:
                ents = log.entries(pr.next, self.max_msg_size)
            except RaftCompactedError:
                return self._maybe_send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self._send(
            Message(
                type=MSG_APP,
                to=to,
                index=prev_index,
                log_term=prev_term,
                entries=ents,
                commit=log.committed,
            )
        )
        size = payloads_size(ents) if self.max_inflight_bytes else 0
        pr.sent_entries(len(ents), size)
        return True

    def _maybe_send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # do not ship a snapshot to a member that may be down
        try:
            snap = self.raft_log.snapshot()
        except SnapshotTemporarilyUnavailableError:
            return False
        index = snap.metadata.index
        assert index > 0, "need a non-empty snapshot to send"
        pr.become_snapshot(index)
        self._send(Message(type=MSG_SNAP, to=to, snapshot=snap))
        self._log(f"sent snapshot {index} to {to:x}")
        return True

    def send_heartbeat(self, to: int, ctx: bytes) -> None:
        # A follower may not have all of our committed entries: tell it only what it matches.
        commit = min(self.trk.progress[to].match, self.raft_log.committed)
        self._send(Message(type=MSG_HEARTBEAT, to=to, commit=commit, context=ctx))

    def bcast_append(self) -> None:
        for id_ in self.trk.ids():
            if id_ != self.id:
                self.send_append(id_)

    def flush_broadcast(self) -> None:
        """Send the appends that proposals since the last Ready call for."""
        if not self.bcast_pending:
            return
        self.bcast_pending = False
        if self.state != StateType.LEADER:
            return
        for id_ in self.trk.ids():
            if id_ != self.id:
                self.maybe_send_append(id_, False)

    def bcast_heartbeat(self, ctx: bytes | None = None) -> None:
        if ctx is None:
            ctx = self.read_only.last_pending_request_ctx()
        for id_ in self.trk.ids():
            if id_ != self.id:
                self.send_heartbeat(id_, ctx)

    # --- role changes --------------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if self.term != term:
            assert term > self.term, (term, self.term)
            self.term = term
            self.vote = 0
        self.lead = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self.lead_transferee = 0
        self.trk.reset_votes()
        last = self.raft_log.last_index()
        for id_, pr in self.trk.progress.items():
            pr.inflights.reset()
            pr.state = ProgressState.PROBE
            pr.pending_snapshot = 0
            pr.msg_app_flow_paused = False
            pr.recent_active = False
            pr.match = self.raft_log.persisted_index() if id_ == self.id else 0
            pr.next = last + 1
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.bcast_pending = False
        self.read_only.reset()
        self.pending_read_index.msgs = []

    def become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.state = StateType.FOLLOWER
        if lead:
            self._log(f"became follower of {lead:x}")

    def become_candidate(self) -> None:
        assert self.state != StateType.LEADER, "invalid transition [leader -> candidate]"
        self._reset(self.term + 1)
        self.vote = self.id
        self.state = StateType.CANDIDATE
        self._log("became candidate")

    def become_pre_candidate(self) -> None:
        assert self.state != StateType.LEADER, "invalid transition [leader -> pre-candidate]"
        # Neither the term nor the vote changes: a pre-candidate only asks.
        self.trk.reset_votes()
        self.lead = 0
        self.state = StateType.PRE_CANDIDATE
        self._log("became pre-candidate")

    def become_leader(self) -> None:
        assert self.state != StateType.FOLLOWER, "invalid transition [follower -> leader]"
        self._reset(self.term)
        self.lead = self.id
        self.state = StateType.LEADER
        pr = self.trk.progress[self.id]
        pr.become_replicate()
        pr.recent_active = True
        # Conservatively treat every entry in our log as a possible pending conf change.
        self.pending_conf_index = self.raft_log.last_index()
        # The empty entry of our term: committing it commits everything before it (§5.4.2).
        ok = self._append_entries([Entry(term=self.term, index=self.raft_log.last_index() + 1)])
        assert ok, "the empty entry of a new leader is never refused"
        self._log("became leader")

    # --- elections -----------------------------------------------------------------------------

    def hup(self, t: CampaignType) -> None:
        if self.state == StateType.LEADER:
            return
        if not self.promotable():
            return
        if self._has_unapplied_conf_changes():
            # A committed but unapplied conf change could change whether we may campaign.
            return
        self.campaign(t)

    def _has_unapplied_conf_changes(self) -> bool:
        log = self.raft_log
        lo = log.applied + 1
        hi = log.committed + 1
        budget = (hi - lo) // _CONF_SCAN_PAGE + 2
        while lo < hi and budget > 0:
            budget -= 1
            ents = log.slice(lo, min(hi, lo + _CONF_SCAN_PAGE), NO_LIMIT)
            for e in ents:
                if e.type != ENTRY_NORMAL:
                    return True
            lo += len(ents)
        assert lo >= hi, "conf change scan ran out of budget"
        return False

    def campaign(self, t: CampaignType) -> None:
        assert self.promotable()
        if t == CampaignType.PRE_ELECTION:
            self.become_pre_candidate()
            vote_msg = MSG_PRE_VOTE
            # A pre-vote asks with the term we would use, without adopting it.
            term = self.term + 1
        else:
            self.become_candidate()
            vote_msg = MSG_VOTE
            term = self.term
        last = self.raft_log.last_index()
        last_term = self.raft_log.term(last)
        ctx = CAMPAIGN_TRANSFER if t == CampaignType.TRANSFER else b""
        for id_ in self.trk.voter_ids():
            if id_ == self.id:
                # Our own vote counts once it is persisted: it comes back at advance.
                self._send(Message(type=vote_resp_type(vote_msg), to=id_, term=term))
                continue
            self._send(
                Message(
                    type=vote_msg, to=id_, term=term, index=last, log_term=last_term, context=ctx
                )
            )

    def poll(self, id_: int, t: int, granted: bool) -> VoteResult:
        self.trk.record_vote(id_, granted)
        return self.trk.vote_result(self.trk.votes)

    # --- the entry point -----------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Handle one message. Raises ProposalDroppedError for a refused local proposal."""
        t = m.type
        term = m.term
        if term == 0:
            pass  # local message (or a forwarded proposal / read request)
        elif term > self.term:
            if t in (MSG_VOTE, MSG_PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                # Pre-vote includes the lease check (thesis §9.6); with check-quorum real votes
                # do too (etcd). Without check-quorum a real vote must not be ignored: a leader
                # that lost its quorum would never step down and could wedge the cluster.
                in_lease = (
                    (self.check_quorum or t == MSG_PRE_VOTE)
                    and self.lead != 0
                    and self.election_elapsed < self.election_timeout
                )
                if not force and in_lease:
                    # We heard from a leader recently: ignore (thesis §4.2.3).
                    return
            if t == MSG_PRE_VOTE:
                pass  # never change our term for a pre-vote
            elif t == MSG_PRE_VOTE_RESP and not m.reject:
                pass  # the term is ours once we win the real election
            elif t in (MSG_APP, MSG_HEARTBEAT, MSG_SNAP):
                self.become_follower(term, m.from_)
            elif t == MSG_VOTE:
                # Raft §5.2: only a granted vote (or a leader) resets the election timer. etcd
                # resets it on any newer term, which lets a candidate with a stale log keep
                # the up-to-date members from ever timing out; we keep the elapsed time.
                elapsed = self.election_elapsed
                self.become_follower(term, 0)
                self.election_elapsed = elapsed
            else:
                self.become_follower(term, 0)
        elif term < self.term:
            if (self.check_quorum or self.pre_vote) and (t in (MSG_HEARTBEAT, MSG_APP)):
                # A stale leader (perhaps partitioned) learns our term from this and steps down.
                self._send(Message(type=MSG_APP_RESP, to=m.from_))
            elif t == MSG_PRE_VOTE:
                self._send(Message(type=MSG_PRE_VOTE_RESP, to=m.from_, term=self.term, reject=True))
            return
        if t == MSG_HUP:
            self.hup(CampaignType.PRE_ELECTION if self.pre_vote else CampaignType.ELECTION)
        elif t in (MSG_VOTE, MSG_PRE_VOTE):
            self._handle_vote_request(m)
        elif self.state == StateType.LEADER:
            self._step_leader(m)
        elif self.state == StateType.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)
        # Invariants of every step: we lead iff we name ourselves leader; cursors are ordered.
        assert (self.state == StateType.LEADER) == (self.lead == self.id), (self.state, self.lead)
        assert self.raft_log.applied <= self.raft_log.committed <= self.raft_log.last_index()

    def _handle_vote_request(self, m: Message) -> None:
        t = m.type
        can_vote = (
            self.vote == m.from_
            or (self.vote == 0 and self.lead == 0)
            or (t == MSG_PRE_VOTE and m.term > self.term)
        )
        if can_vote and self.raft_log.is_up_to_date(m.index, m.log_term):
            self._send(Message(type=vote_resp_type(t), to=m.from_, term=m.term))
            if t == MSG_VOTE:
                self.election_elapsed = 0
                self.vote = m.from_
        else:
            self._send(
                Message(type=vote_resp_type(t), to=m.from_, term=self.term or m.term, reject=True)
            )

    # --- leader --------------------------------------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MSG_BEAT:
            self.bcast_heartbeat()
            return
        if t == MSG_CHECK_QUORUM:
            if not self.trk.quorum_active():
                self._log("stepped down: no quorum active")
                self.become_follower(self.term, 0)
            for id_, pr in self.trk.progress.items():
                if id_ != self.id:
                    pr.recent_active = False
            return
        if t == MSG_PROP:
            self._leader_propose_remote(m)
            return
        if t == MSG_READ_INDEX:
            self._leader_read_index(m)
            return
        found = self.trk.progress.get(m.from_)
        if found is None:
            return
        pr = found
        if t == MSG_APP_RESP:
            self._handle_append_response(m, pr)
        elif t == MSG_HEARTBEAT_RESP:
            self._handle_heartbeat_response(m, pr)
        elif t == MSG_SNAP_STATUS:
            if pr.state != ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            # Wait for an append response (or heartbeat response) before sending again.
            pr.msg_app_flow_paused = True
        elif t == MSG_UNREACHABLE:
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
        elif t == MSG_TRANSFER_LEADER:
            self._handle_transfer_leader(m, pr)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        log = self.raft_log
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0 and next_probe <= log.last_index():
                next_probe, _ = log.find_conflict_by_term(next_probe, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self.send_append(m.from_)
            return
        if m.index > log.last_index():
            return  # acknowledges entries we never had: bad input
        old_paused = pr.is_paused()
        if not (
            pr.maybe_update(m.index) or (pr.match == m.index and pr.state == ProgressState.PROBE)
        ):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= log.first_index():
            # The snapshot (or later entries) reached it; resume normal replication.
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self.maybe_commit():
            self._release_pending_read_index_messages()
            self.bcast_append()
        elif old_paused and m.from_ != self.id:
            self.send_append(m.from_)
        if m.from_ != self.id:
            # The window may have opened for several size-limited messages.
            for _ in range(self.trk.max_inflight):
                if not self.maybe_send_append(m.from_, False):
                    break
            if m.from_ == self.lead_transferee and pr.match == log.last_index():
                self._send(Message(type=MSG_TIMEOUT_NOW, to=m.from_))

    def _handle_heartbeat_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        pr.msg_app_flow_paused = False
        if pr.match < self.raft_log.last_index() or pr.state == ProgressState.PROBE:
            self.send_append(m.from_)
        if self.read_only.option != ReadOnlyOption.SAFE or not m.context:
            return
        acks = self.read_only.recv_ack(m.from_, m.context)
        if acks is None or self.trk.vote_result(acks) != VoteResult.WON:
            return
        for rs in self.read_only.advance(m.context):
            self._respond_to_read_index(rs.req, rs.index)

    def _handle_transfer_leader(self, m: Message, pr: Progress) -> None:
        if pr.is_learner:
            return
        transferee = m.from_
        if self.lead_transferee != 0:
            if self.lead_transferee == transferee:
                return  # already in progress
            self.lead_transferee = 0
        if transferee == self.id:
            return
        # The transfer must finish within an election timeout or it is aborted.
        self.election_elapsed = 0
        self.lead_transferee = transferee
        self._log(f"transferring leadership to {transferee:x}")
        if pr.match == self.raft_log.last_index():
            self._send(Message(type=MSG_TIMEOUT_NOW, to=transferee))
        else:
            self.send_append(transferee)

    def maybe_commit(self) -> bool:
        return self.raft_log.maybe_commit(self.trk.committed(), self.term)

    def committed_entry_in_current_term(self) -> bool:
        return self.raft_log.term_or_zero(self.raft_log.committed) == self.term

    # --- proposals -----------------------------------------------------------------------------

    def propose(self, datas: Sequence[bytes], etype: pb.EntryType = ENTRY_NORMAL) -> None:
        """Propose entries (local); raises ProposalDroppedError when they cannot be accepted."""
        if not datas:
            return
        if self.state == StateType.LEADER:
            self._leader_propose_local(datas, etype)
            return
        if self.lead == 0:
            raise ProposalDroppedError("raft proposal dropped: no leader")
        if self.state != StateType.FOLLOWER:
            raise ProposalDroppedError("raft proposal dropped: campaigning")
        if self.disable_proposal_forwarding:
            raise ProposalDroppedError("raft proposal dropped: forwarding disabled")
        ents = [Entry(type=etype, data=d) for d in datas]
        self._send(Message(type=MSG_PROP, to=self.lead, entries=ents))

    def _leader_check_proposal(self) -> None:
        if not self.trk.is_voter(self.id):
            raise ProposalDroppedError("raft proposal dropped: leader was removed or demoted")
        if self.lead_transferee != 0:
            raise ProposalDroppedError("raft proposal dropped: leadership transfer in progress")

    def _leader_propose_local(self, datas: Sequence[bytes], etype: pb.EntryType) -> None:
        self._leader_check_proposal()
        if etype != ENTRY_NORMAL:
            for i, d in enumerate(datas):
                self._check_conf_change(etype, d, i)
        term = self.term
        first = self.raft_log.last_index() + 1
        if etype == ENTRY_NORMAL:
            ents = [Entry(term=term, index=first + i, data=d) for i, d in enumerate(datas)]
        else:
            ents = [
                Entry(term=term, index=first + i, type=etype, data=d) for i, d in enumerate(datas)
            ]
        if not self._append_entries(ents):
            raise ProposalDroppedError("raft proposal dropped: too many uncommitted entry bytes")
        if etype != ENTRY_NORMAL:
            self.pending_conf_index = ents[-1].index
        self.bcast_pending = True

    def _leader_propose_remote(self, m: Message) -> None:
        """A proposal forwarded by a follower; refused ones are dropped (it cannot be told)."""
        if not m.entries:
            return
        try:
            self._leader_check_proposal()
            first = self.raft_log.last_index() + 1
            conf_index = 0
            # Fresh entries: the message's own objects may be delivered again elsewhere.
            ents = []
            for i, e in enumerate(m.entries):
                if e.type != ENTRY_NORMAL:
                    self._check_conf_change(e.type, e.data, i)
                    conf_index = first + i
                ents.append(Entry(term=self.term, index=first + i, type=e.type, data=e.data))
        except ProposalDroppedError as exc:
            self._log(f"dropped forwarded proposal from {m.from_:x}: {exc.message}")
            return
        if not self._append_entries(ents):
            self._log(f"dropped forwarded proposal from {m.from_:x}: uncommitted size")
            return
        if conf_index:
            self.pending_conf_index = conf_index
        self.bcast_pending = True

    def _check_conf_change(self, etype: int, data: bytes, offset: int) -> None:
        """Refuse a conf change that could not be applied safely now (one at a time, §4.1)."""
        try:
            cc = decode_conf_change(etype, data)
        except ValueError as exc:
            raise ProposalDroppedError(f"raft proposal dropped: bad conf change: {exc}") from exc
        already_pending = self.pending_conf_index > self.raft_log.applied
        already_joint = self.trk.config.joint()
        wants_leave_joint = confchange.leave_joint_of(cc)
        if offset > 0 or already_pending:
            reason = "possible unapplied conf change"
        elif already_joint and not wants_leave_joint:
            reason = "must transition out of joint config first"
        elif not already_joint and wants_leave_joint:
            reason = "not in joint state; refusing empty conf change"
        else:
            try:
                confchange.apply_v2(confchange.Changer(self.trk, self.raft_log.last_index()), cc)
                return
            except ConfChangeError as exc:
                reason = exc.message
        raise ProposalDroppedError(f"raft proposal dropped: {reason}")

    def _append_entries(self, ents: list[Entry]) -> bool:
        """Append entries of our term to our log; False if the uncommitted cap refuses them."""
        assert ents and ents[0].index == self.raft_log.last_index() + 1
        if self.max_uncommitted_size:
            size = payloads_size(ents)
            if (
                self.uncommitted_size > 0
                and size > 0
                and self.uncommitted_size + size > self.max_uncommitted_size
            ):
                return False
            self.uncommitted_size += size
        last = self.raft_log.append(ents)
        # Our own acknowledgement, counted once these entries are persisted.
        self._send(Message(type=MSG_APP_RESP, to=self.id, index=last))
        return True

    def reduce_uncommitted_size(self, size: int) -> None:
        if self.uncommitted_size <= size:
            self.uncommitted_size = 0
        else:
            self.uncommitted_size -= size

    # --- reads ---------------------------------------------------------------------------------

    def _leader_read_index(self, m: Message) -> None:
        if len(m.entries) != 1:
            return
        if not self.committed_entry_in_current_term():
            # Our commit index may be behind the last leader's: wait for our first commit.
            # This comes before the single-voter shortcut: a member that just became the only
            # voter may not know yet what the previous leader committed (simulator seed 439).
            pending = self.pending_read_index.msgs
            if len(pending) >= _MAX_PENDING_READ_INDEX_MSGS:
                self._refuse_read(m)
                return
            pending.append(m)
            return
        self._send_read_index_response(m)

    def _refuse_read(self, m: Message) -> None:
        if m.from_ in (0, self.id):
            raise ProposalDroppedError("raft read index dropped: too many pending reads")

    def _send_read_index_response(self, m: Message) -> None:
        if self.trk.is_singleton() and self.trk.is_voter(self.id):
            # We are the only voter: our commit index is the cluster's.
            self._respond_to_read_index(m, self.raft_log.committed)
            return
        if self.read_only.option == ReadOnlyOption.LEASE_BASED:
            self._respond_to_read_index(m, self.raft_log.committed)
            return
        ctx = m.entries[0].data
        if self.read_only.full() and ctx not in self.read_only.pending:
            self._refuse_read(m)
            return
        self.read_only.add_request(self.raft_log.committed, m)
        # We acknowledge our own leadership at once.
        self.read_only.recv_ack(self.id, ctx)
        self.bcast_heartbeat(ctx)

    def _release_pending_read_index_messages(self) -> None:
        if not self.pending_read_index.msgs:
            return
        if not self.committed_entry_in_current_term():
            return
        msgs = self.pending_read_index.msgs
        self.pending_read_index.msgs = []
        for m in msgs:
            self._send_read_index_response(m)

    def _respond_to_read_index(self, req: Message, index: int) -> None:
        ctx = req.entries[0].data
        if req.from_ in (0, self.id):
            self.read_states.append(ReadState(index, ctx))
            return
        self._send(
            Message(type=MSG_READ_INDEX_RESP, to=req.from_, index=index, entries=[Entry(data=ctx)])
        )

    # --- candidate and follower ----------------------------------------------------------------

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        my_resp = MSG_PRE_VOTE_RESP if self.state == StateType.PRE_CANDIDATE else MSG_VOTE_RESP
        if t == MSG_PROP:
            raise ProposalDroppedError("raft proposal dropped: no leader")
        if t in (MSG_APP, MSG_HEARTBEAT, MSG_SNAP):
            # A leader of our term exists (or of a newer one, handled in step()).
            self.become_follower(m.term, m.from_)
            self._step_follower(m)
        elif t == my_resp:
            result = self.poll(m.from_, t, not m.reject)
            if result == VoteResult.WON:
                if self.state == StateType.PRE_CANDIDATE:
                    self.campaign(CampaignType.ELECTION)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif result == VoteResult.LOST:
                # A rejection carrying a newer term already made us a follower in step().
                self.become_follower(self.term, 0)

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MSG_PROP:
            if self.lead == 0:
                raise ProposalDroppedError("raft proposal dropped: no leader")
            if self.disable_proposal_forwarding:
                raise ProposalDroppedError("raft proposal dropped: forwarding disabled")
            self._send(Message(type=MSG_PROP, to=self.lead, entries=m.entries))
        elif t == MSG_APP:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_append_entries(m)
        elif t == MSG_HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_heartbeat(m)
        elif t == MSG_SNAP:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_snapshot(m)
        elif t == MSG_TRANSFER_LEADER:
            if self.lead != 0:
                self._send(Message(type=MSG_TRANSFER_LEADER, to=self.lead, from_=m.from_))
        elif t == MSG_TIMEOUT_NOW:
            # A transfer: campaign at once, without pre-vote (we are not partitioned).
            self.hup(CampaignType.TRANSFER)
        elif t == MSG_READ_INDEX:
            if self.lead == 0:
                if m.from_ in (0, self.id):
                    raise ProposalDroppedError("raft read index dropped: no leader")
                return
            if len(m.entries) == 1:
                self._send(
                    Message(type=MSG_READ_INDEX, to=self.lead, from_=m.from_, entries=m.entries)
                )
        elif t == MSG_READ_INDEX_RESP and len(m.entries) == 1:
            self.read_states.append(ReadState(m.index, m.entries[0].data))

    def _handle_append_entries(self, m: Message) -> None:
        log = self.raft_log
        prev = m.index
        if prev < log.committed:
            self._send(Message(type=MSG_APP_RESP, to=m.from_, index=log.committed))
            return
        ents = list(m.entries)
        if ents and not _valid_append(m, ents):
            self._log(f"dropped malformed append from {m.from_:x}")
            return
        try:
            last_new = log.maybe_append(prev, m.log_term, m.commit, ents)
        except ValueError as exc:
            self._log(f"dropped append from {m.from_:x}: {exc}")
            return
        if last_new is not None:
            assert last_new <= log.last_index(), (last_new, log.last_index())
            assert log.committed <= last_new, (log.committed, last_new)
            self._send(Message(type=MSG_APP_RESP, to=m.from_, index=last_new))
            return
        # Reject with a hint: the last index whose term is <= m.log_term (§5.3 optimisation).
        hint_index = min(prev, log.last_index())
        hint_index, hint_term = log.find_conflict_by_term(hint_index, m.log_term)
        self._send(
            Message(
                type=MSG_APP_RESP,
                to=m.from_,
                index=prev,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        log = self.raft_log
        if m.commit <= log.last_index():
            log.commit_to(m.commit)
        self._send(Message(type=MSG_HEARTBEAT_RESP, to=m.from_, context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap.metadata.index == 0 or snap.metadata.term == 0:
            return  # an empty snapshot: bad input
        if self.restore(snap):
            self._log(f"restored snapshot {snap.metadata.index}")
            self._send(Message(type=MSG_APP_RESP, to=m.from_, index=self.raft_log.last_index()))
        else:
            self._send(Message(type=MSG_APP_RESP, to=m.from_, index=self.raft_log.committed))

    def restore(self, snap: Snapshot) -> bool:
        """Install a snapshot from the leader; False if it brings nothing new."""
        meta = snap.metadata
        log = self.raft_log
        if meta.index <= log.committed:
            return False
        if self.state != StateType.FOLLOWER:
            # Only a follower installs snapshots; this cannot happen with a correct leader.
            self.become_follower(self.term + 1, 0)
            return False
        cs = meta.conf_state
        # Unlike etcd we accept a snapshot whose configuration does not list us: a member
        # added after the leader's last snapshot receives exactly that, and learns of itself
        # from the conf change entries that follow the snapshot.
        try:
            cfg, prs = confchange.restore(ProgressTracker(self.trk.max_inflight), cs, meta.index)
        except ConfChangeError:
            return False  # a malformed configuration: bad input
        if log.match_term(meta.index, meta.term):
            # We have the snapshot's last entry: just move the commit index forward.
            log.commit_to(meta.index)
            return False
        log.restore(snap)
        self.trk = ProgressTracker(self.trk.max_inflight, self.max_inflight_bytes)
        cfg, prs = confchange.restore(self.trk, cs, log.last_index())
        self._switch_to_config(cfg, prs)
        assert log.last_index() == meta.index and log.committed == meta.index
        return True

    # --- ticks ---------------------------------------------------------------------------------

    def tick(self) -> None:
        if self.state == StateType.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.past_election_timeout():
            self.election_elapsed = 0
            self.step(Message(type=MSG_HUP, from_=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(type=MSG_CHECK_QUORUM, from_=self.id))
            if self.state == StateType.LEADER and self.lead_transferee != 0:
                self._log(f"aborted leadership transfer to {self.lead_transferee:x}")
                self.lead_transferee = 0
            if self.leads_outside_config():
                self._hand_over_leadership()  # try again, perhaps with another voter
        if self.state != StateType.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(Message(type=MSG_BEAT, from_=self.id))

    # --- configuration -------------------------------------------------------------------------

    def apply_conf_change(self, cc: ConfChangeV2) -> ConfState:
        """Apply a committed conf change; raises ConfChangeError (config left unchanged)."""
        changer = confchange.Changer(self.trk, self.raft_log.last_index())
        cfg, prs = confchange.apply_v2(changer, cc)
        return self._switch_to_config(cfg, prs)

    def _switch_to_config(self, cfg: TrackerConfig, prs: dict[int, Progress]) -> ConfState:
        self.trk.set_config(cfg, prs)
        cs = self.trk.conf_state()
        pr = prs.get(self.id)
        self.is_learner = pr is not None and pr.is_learner
        if self.state != StateType.LEADER or not cs.voters:
            return cs
        # The quorum may have changed: commit what the new config allows, reach new members.
        if self.maybe_commit():
            self._release_pending_read_index_messages()
            self.bcast_append()
        else:
            for id_ in self.trk.ids():
                if id_ != self.id:
                    self.maybe_send_append(id_, False)
        if self.lead_transferee != 0 and not self.trk.is_voter(self.lead_transferee):
            self.lead_transferee = 0
        if pr is None or self.is_learner:
            # Removed or demoted while leading. Stepping down at once can wedge the cluster:
            # the voters may not know yet that the change committed (their old config still
            # needs our vote) and our log may be longer than theirs. So we keep leading (as
            # etcd does by default) and hand leadership to the most caught-up voter.
            self._log("removed or demoted while leader: handing over leadership")
            self._hand_over_leadership()
        return cs

    def leads_outside_config(self) -> bool:
        """A leader that is no longer a voter (removed or demoted) and must hand over."""
        return self.state == StateType.LEADER and not self.trk.is_voter(self.id)

    def _hand_over_leadership(self) -> None:
        assert self.state == StateType.LEADER
        if self.lead_transferee != 0:
            return
        best = 0
        best_match = -1
        for id_ in self.trk.voter_ids():
            pr = self.trk.progress[id_]
            if id_ != self.id and pr.match > best_match:
                best, best_match = id_, pr.match
        if best == 0:
            return
        self.election_elapsed = 0
        self.lead_transferee = best
        if self.trk.progress[best].match == self.raft_log.last_index():
            self._send(Message(type=MSG_TIMEOUT_NOW, to=best))
        else:
            self.send_append(best)

    def applied_to(self, index: int, size: int) -> None:
        """The caller applied entries up to index (size: their payload bytes)."""
        new_applied = max(index, self.raft_log.applied)
        self.raft_log.applied_to(new_applied)
        self.reduce_uncommitted_size(size)
        if (
            self.trk.config.auto_leave
            and new_applied >= self.pending_conf_index
            and self.state == StateType.LEADER
        ):
            # The joint configuration asked to be left automatically: propose it now (an empty
            # ConfChangeV2). Refused during a transfer; we retry at the next apply then.
            try:
                self._leader_propose_local([b""], ENTRY_CONF_CHANGE_V2)
            except ProposalDroppedError as exc:
                self._log(f"not leaving joint config yet: {exc.message}")


def _valid_append(m: Message, ents: list[Entry]) -> bool:
    """Whether an append's entries are contiguous after m.index and within the terms it claims."""
    first = ents[0]
    last = ents[-1]
    return (
        first.index == m.index + 1
        and last.index == m.index + len(ents)
        and first.term >= m.log_term
        and first.term <= last.term <= m.term
    )


def decode_conf_change(etype: int, data: bytes) -> ConfChangeV2:
    """The ConfChangeV2 an entry carries (ValueError on undecodable data)."""
    try:
        if etype == ENTRY_CONF_CHANGE:
            return confchange.as_v2(ConfChange.FromString(data))
        if etype == ENTRY_CONF_CHANGE_V2:
            v2: ConfChangeV2 = ConfChangeV2.FromString(data)
            return v2
    except Exception as exc:  # protobuf's DecodeError; the entry came off the wire
        raise ValueError(str(exc)) from exc
    raise ValueError(f"entry type {etype} is not a conf change")
