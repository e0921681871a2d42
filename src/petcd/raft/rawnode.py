"""RawNode: the interface the server drives, and the Ready it takes out.

Driving loop (the server's raft driver and the simulator both do exactly this):

    node.tick()                      # every heartbeat interval / simulated tick
    node.step(message)               # every message received from a peer
    node.propose(data) ...           # client requests
    while node.has_ready():
        rd = node.ready()
        <persist rd.hard_state, rd.entries, rd.snapshot: one write, one fsync if rd.must_sync>
        <send rd.messages>           # see the persistence rules below for the order
        <apply rd.snapshot, then rd.committed_entries; call apply_conf_change for conf changes>
        node.advance(rd)

Persistence rules:
1. The caller persists a Ready's `hard_state`, `entries` and `snapshot` (in that one write,
   entries replacing any conflicting suffix already stored) BEFORE it sends the Ready's
   `messages` - a vote or an append acknowledgement promises something that must survive a
   crash.
2. EXCEPT when the node is leader (the latest soft state says so): then the messages may be
   sent before the leader's own fsync completes (etcd's optimisation). This is safe because
   the leader counts its own log toward commit only up to what the caller has persisted: its
   own match index advances at `advance(rd)` (a self-acknowledgement), never at append time.
   Its term and vote were persisted before it could win the election (its own vote only
   counts at advance, after the Ready that recorded it).
3. `committed_entries` contains only entries already persisted locally (by an earlier Ready),
   so applying never runs ahead of the local log. A single-member cluster therefore commits
   an entry one Ready after persisting it.
4. `advance(rd)` is called after the Ready is persisted (and its committed entries applied);
   `ready()` must not be called again before that. Between the two, tick/step/propose may be
   called; what they produce comes out in the next Ready.
5. On restart the caller builds a MemoryStorage from what it persisted and passes the last
   applied index as Config.applied; whatever was not persisted is lost. Raft rebuilds its
   configuration from the snapshot's ConfState plus the conf change entries in the log up to
   Config.applied (they are not handed out again); later ones come out as committed entries.

`step()` takes ownership of the message it is given (it may keep references to its entries)
and never raises on bad remote input: messages of local types, responses from members it does
not track, messages with no term, malformed appends are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from petcd.errors import ProposalDroppedError, RaftConfigError, RaftError
from petcd.pb.raft_pb2 import (
    CONF_CHANGE_ADD_NODE,
    ConfChange,
    ConfChangeV2,
    ConfState,
    Entry,
    HardState,
    Message,
    Snapshot,
)
from petcd.raft import confchange
from petcd.raft.raft import (
    ENTRY_CONF_CHANGE,
    ENTRY_CONF_CHANGE_V2,
    ENTRY_NORMAL,
    LOCAL_MSGS,
    MSG_HUP,
    MSG_PROP,
    MSG_READ_INDEX,
    MSG_SNAP_STATUS,
    MSG_TRANSFER_LEADER,
    MSG_UNREACHABLE,
    RESPONSE_MSGS,
    Config,
    Raft,
    SoftState,
    StateType,
    payloads_size,
)
from petcd.raft.read_only import ReadState
from petcd.raft.tracker import ProgressState, TrackerConfig


@dataclass(slots=True)
class Peer:
    """A member of a new cluster: its id and an opaque context (the server's member record)."""

    id: int
    context: bytes = b""


@dataclass(slots=True)
class Ready:
    """What the node wants done; see the module docstring for the order."""

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    read_states: list[ReadState] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    must_sync: bool = False


@dataclass(slots=True)
class ProgressStatus:
    match: int
    next: int
    state: ProgressState
    is_learner: bool
    recent_active: bool
    paused: bool
    inflight: int


@dataclass(slots=True)
class Status:
    """A snapshot of the node's state for the server (and the leader's view of its followers)."""

    id: int
    hard_state: HardState
    soft_state: SoftState
    applied: int
    lead_transferee: int
    config: TrackerConfig | None = None
    progress: dict[int, ProgressStatus] = field(default_factory=dict)


def _hard_tuple(r: Raft) -> tuple[int, int, int]:
    return (r.term, r.vote, r.raft_log.committed)


class RawNode:
    """A raft member without I/O: feed it ticks, messages and proposals; take Readys out."""

    __slots__ = ("_outstanding", "_prev_hard", "_prev_soft", "_steps_on_advance", "raft")

    def __init__(self, config: Config) -> None:
        self.raft = Raft(config)
        r = self.raft
        self._prev_soft = (r.lead, r.state)
        self._prev_hard = _hard_tuple(r)
        self._outstanding = False
        # Self-addressed acknowledgements (own vote, own append) to step at advance.
        self._steps_on_advance: list[Message] = []

    # --- set-up --------------------------------------------------------------------------------

    def bootstrap(self, peers: list[Peer]) -> None:
        """Start a new cluster: one committed CONF_CHANGE_ADD_NODE entry per peer, at term 1.

        Only for empty storage. The entries come out as committed entries (once persisted), so
        the application learns the members from their contexts like any later conf change.
        """
        r = self.raft
        if not peers:
            raise RaftConfigError("raft: must provide at least one peer to bootstrap")
        if r.raft_log.storage.last_index() != 0 or r.raft_log.last_index() != 0:
            raise RaftConfigError("raft: can't bootstrap a nonempty Storage")
        ids = [p.id for p in peers]
        if 0 in ids or len(set(ids)) != len(ids):
            raise RaftConfigError("raft: bootstrap peers must have distinct non-zero ids")
        # The first Ready must carry the hard state: pretend the previous one was empty.
        self._prev_hard = (0, 0, 0)
        r.become_follower(1, 0)
        ents = []
        for i, p in enumerate(peers):
            cc = ConfChange(type=CONF_CHANGE_ADD_NODE, node_id=p.id, context=p.context)
            ents.append(
                Entry(term=1, index=i + 1, type=ENTRY_CONF_CHANGE, data=cc.SerializeToString())
            )
        r.raft_log.append(ents)
        # Committed by fiat: every member of a new cluster starts from the same entries.
        r.raft_log.committed = len(ents)
        for p in peers:
            r.apply_conf_change(
                confchange.as_v2(ConfChange(type=CONF_CHANGE_ADD_NODE, node_id=p.id))
            )
        assert r.raft_log.last_index() == len(peers)

    # --- input ---------------------------------------------------------------------------------

    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        self.raft.step(Message(type=MSG_HUP))

    def propose(self, data: bytes) -> None:
        """Propose one entry; raises ProposalDroppedError if it cannot be accepted now."""
        self.raft.propose([data], ENTRY_NORMAL)

    def propose_batch(self, datas: list[bytes]) -> None:
        """Propose several entries at once (one append message per follower for the batch)."""
        self.raft.propose(datas, ENTRY_NORMAL)

    def propose_conf_change(self, cc: ConfChange | ConfChangeV2) -> None:
        """Propose a membership change; raises ProposalDroppedError if refused."""
        etype = ENTRY_CONF_CHANGE if isinstance(cc, ConfChange) else ENTRY_CONF_CHANGE_V2
        self.raft.propose([cc.SerializeToString()], etype)

    def step(self, m: Message) -> None:
        """Feed a message from a peer. Never raises: bad input is dropped."""
        r = self.raft
        t = m.type
        if t in LOCAL_MSGS:
            return
        if m.to != r.id or m.from_ == 0 or m.from_ == r.id:
            return  # misrouted, anonymous, or pretending to come from ourselves
        if m.term == 0 and t != MSG_PROP and t != MSG_READ_INDEX:
            return
        if t in RESPONSE_MSGS and m.from_ not in r.trk.progress:
            return
        try:
            r.step(m)
        except RaftError as exc:
            # Forwarded proposals and reads that cannot be served: the sender times out.
            r._log(f"dropped {t} from {m.from_:x}: {exc.message}")

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read; a ReadState(index, ctx) comes out in a later Ready."""
        r = self.raft
        if r.lead == 0:
            raise ProposalDroppedError("raft read index dropped: no leader")
        r.step(Message(type=MSG_READ_INDEX, entries=[Entry(data=ctx)]))

    def transfer_leader(self, to: int) -> None:
        """Ask the leader to hand leadership to `to` (aborted after an election timeout)."""
        # As in etcd, the transferee is carried in the sender field.
        self.raft.step(Message(type=MSG_TRANSFER_LEADER, from_=to))

    def apply_conf_change(self, cc: ConfChange | ConfChangeV2) -> ConfState:
        """Apply a committed conf change; raises ConfChangeError (nothing changed) if invalid."""
        return self.raft.apply_conf_change(confchange.as_v2(cc))

    def expedite_election(self, extra_ticks: int) -> None:
        """See Raft.expedite_election: the server saw the leader's connection break."""
        self.raft.expedite_election(extra_ticks)

    def report_unreachable(self, id_: int) -> None:
        if id_ in self.raft.trk.progress:
            self.raft.step(Message(type=MSG_UNREACHABLE, from_=id_))

    def report_snapshot(self, id_: int, ok: bool) -> None:
        if id_ in self.raft.trk.progress:
            self.raft.step(Message(type=MSG_SNAP_STATUS, from_=id_, reject=not ok))

    # --- output --------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self.raft
        log = r.raft_log
        u = log.unstable
        if r.msgs or r.msgs_after_append or r.bcast_pending or r.read_states:
            return True
        if (r.lead, r.state) != self._prev_soft:
            return True
        if _hard_tuple(r) != self._prev_hard:
            return True
        if u.snapshot is not None and not u.snapshot_in_progress:
            return True
        if u.offset_in_progress < u.offset + len(u.entries):
            return True
        return log.has_next_committed_ents()

    def ready(self) -> Ready:
        """Take out what to persist, send and apply. Call advance(rd) before the next ready()."""
        assert not self._outstanding, "ready() called again before advance()"
        r = self.raft
        r.flush_broadcast()
        log = r.raft_log
        rd = Ready(
            entries=log.unstable.next_entries(),
            snapshot=log.unstable.next_snapshot(),
            committed_entries=log.next_committed_ents(),
            messages=r.msgs,
            read_states=r.read_states,
        )
        r.msgs = []
        r.read_states = []
        soft = (r.lead, r.state)
        if soft != self._prev_soft:
            rd.soft_state = SoftState(r.lead, r.state)
            self._prev_soft = soft
        hard = _hard_tuple(r)
        if hard != self._prev_hard:
            rd.hard_state = HardState(term=hard[0], vote=hard[1], commit=hard[2])
            term_or_vote_changed = hard[:2] != self._prev_hard[:2]
            self._prev_hard = hard
        else:
            term_or_vote_changed = False
        rd.must_sync = term_or_vote_changed or bool(rd.entries) or rd.snapshot is not None
        # Accept: these entries, this snapshot and these committed entries are in the caller's
        # hands now and are not handed out again.
        log.unstable.accept_in_progress()
        if rd.committed_entries:
            log.accept_applying(rd.committed_entries[-1].index)
        self._steps_on_advance = r.msgs_after_append
        r.msgs_after_append = []
        self._outstanding = True
        return rd

    def advance(self, rd: Ready) -> None:
        """The Ready was persisted (and its committed entries applied)."""
        assert self._outstanding, "advance() without a ready()"
        r = self.raft
        log = r.raft_log
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.snapshot is not None:
            index = rd.snapshot.metadata.index
            log.stable_snap_to(index)
            r.applied_to(index, 0)
        if rd.committed_entries:
            size = payloads_size(rd.committed_entries) if r.state == StateType.LEADER else 0
            r.applied_to(rd.committed_entries[-1].index, size)
        self._outstanding = False
        steps = self._steps_on_advance
        self._steps_on_advance = []
        for m in steps:
            r.step(m)
        assert log.applied <= log.committed

    # --- inspection ----------------------------------------------------------------------------

    @property
    def leader_id(self) -> int:
        return self.raft.lead

    @property
    def term(self) -> int:
        return self.raft.term

    @property
    def id(self) -> int:
        return self.raft.id

    @property
    def state(self) -> StateType:
        return self.raft.state

    def basic_status(self) -> Status:
        r = self.raft
        return Status(
            id=r.id,
            hard_state=r.hard_state(),
            soft_state=r.soft_state(),
            applied=r.raft_log.applied,
            lead_transferee=r.lead_transferee,
        )

    def status(self) -> Status:
        st = self.basic_status()
        r = self.raft
        st.config = r.trk.config.copy()
        if r.state == StateType.LEADER:
            for id_, pr in r.trk.progress.items():
                st.progress[id_] = ProgressStatus(
                    match=pr.match,
                    next=pr.next,
                    state=pr.state,
                    is_learner=pr.is_learner,
                    recent_active=pr.recent_active,
                    paused=pr.is_paused(),
                    inflight=len(pr.inflights),
                )
        return st
