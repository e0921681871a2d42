"""A deterministic cluster simulation: N RawNodes, a faulty network, disks, crashes, one seed.

Time is counted in steps; every member ticks once per TICK_STEPS steps (each at its own
offset). One seed fixes everything: the cluster size, the raft options, the fault mix and
every random choice (node rngs are derived from it), so the same seed replays the same run.
Iteration is always in sorted id order; nothing depends on hashing of non-integers or on time.

Each member is driven exactly as rawnode.py's docstring prescribes, with the persistence made
asynchronous: a Ready is taken, a leader sends its messages at once, the disk write completes
0-3 steps later (a crash in between loses it), then a follower sends its messages, the
committed entries are applied and advance() is called. The disk is a MemoryStorage that holds
only what was written; a crashed member restarts from it (and from its last snapshot for the
state machine), so whatever was not persisted is lost.

Phases:
1. chaos: proposals, reads, message drop / duplication / delay (reordering), symmetric and
   one-way partitions, crashes and restarts, membership changes, leadership transfers;
2. heal: every partition healed, every crashed member restarted, faults stopped;
3. liveness: a leader must emerge within LEADER_BOUND_TICKS ticks and every proposal made
   after that must be applied by every member of the configuration within COMMIT_BOUND_TICKS.
The checker (checker.py) runs after every step of every phase.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from petcd.errors import ConfChangeError, ProposalDroppedError
from petcd.pb.raft_pb2 import (
    CONF_CHANGE_ADD_LEARNER_NODE,
    CONF_CHANGE_ADD_NODE,
    CONF_CHANGE_REMOVE_NODE,
    CONF_CHANGE_TRANSITION_AUTO,
    ConfChange,
    ConfChangeSingle,
    ConfChangeV2,
    ConfState,
    Entry,
    Message,
    Snapshot,
)
from petcd.raft.raft import (
    ENTRY_CONF_CHANGE,
    ENTRY_CONF_CHANGE_V2,
    ENTRY_NORMAL,
    MSG_SNAP,
    Config,
    StateType,
    decode_conf_change,
)
from petcd.raft.rawnode import Peer, RawNode, Ready
from petcd.raft.read_only import ReadOnlyOption
from petcd.raft.sim.checker import Checker, Violation, compare_logs
from petcd.raft.storage import MemoryStorage
from petcd.raft.util import describe_message

TICK_STEPS = 10
ELECTION_TICK = 10
HEARTBEAT_TICK = 1
CHAOS_TICKS = 150
LEADER_BOUND_TICKS = 60
COMMIT_BOUND_TICKS = 60
LIVENESS_PROPOSALS = 5
MAX_MEMBERS = 7
SNAPSHOT_EVERY = 40  # applied entries between snapshots
SNAPSHOT_KEEP = 5  # entries kept in the log after a snapshot
LOG_COMPARE_EVERY = 97  # steps between full pairwise log comparisons
MAX_NETWORK_QUEUE = 100_000


@dataclass(slots=True)
class Faults:
    """The fault mix of one run, drawn from its seed."""

    drop: float
    duplicate: float
    delay_max: int
    crash: float
    partition: float
    membership: float
    transfer: float

    @staticmethod
    def draw(rng: random.Random) -> Faults:
        return Faults(
            drop=rng.choice([0.0, 0.01, 0.05, 0.15, 0.3]),
            duplicate=rng.choice([0.0, 0.01, 0.05]),
            delay_max=rng.choice([1, 3, 8]),
            crash=rng.choice([0.0, 0.001, 0.003, 0.01]),
            partition=rng.choice([0.0, 0.001, 0.003, 0.01]),
            membership=rng.choice([0.0, 0.002, 0.005]),
            transfer=rng.choice([0.0, 0.001]),
        )


@dataclass(slots=True)
class Pending:
    """A Ready being written to disk."""

    rd: Ready
    done_at: int
    sent: bool


@dataclass(slots=True)
class StateMachine:
    """The applied state: a hash chain over applied entries, and the configuration."""

    applied: int = 0
    state_hash: bytes = b""
    conf_state: ConfState = field(default_factory=ConfState)

    def encode(self) -> bytes:
        return self.applied.to_bytes(8, "big") + self.state_hash

    @staticmethod
    def decode(snap: Snapshot) -> StateMachine:
        data = snap.data
        sm = StateMachine(int.from_bytes(data[:8], "big"), data[8:])
        sm.conf_state.CopyFrom(snap.metadata.conf_state)
        assert sm.applied == snap.metadata.index
        return sm

    def apply(self, e: Entry) -> None:
        assert e.index == self.applied + 1, (e.index, self.applied)
        h = hashlib.blake2b(self.state_hash, digest_size=16)
        h.update(e.index.to_bytes(8, "big"))
        h.update(e.data)
        self.state_hash = h.digest()
        self.applied = e.index


class SimNode:
    """One member: its disk (durable), its state machine and RawNode (volatile)."""

    def __init__(self, sim: Simulation, id_: int, config_template: Config) -> None:
        self.sim = sim
        self.id = id_
        self.template = config_template
        self.disk = MemoryStorage()
        self.alive = False
        self.removed = False
        self.incarnation = 0
        self.node: RawNode | None = None
        self.sm = StateMachine()
        self.pending: Pending | None = None
        self.is_leader = False
        self.last_commit = 0
        self.disk_commit = 0
        self.tick_offset = sim.rng.randrange(TICK_STEPS)
        self.leader_term_checked = 0

    @property
    def raft_node(self) -> RawNode:
        assert self.node is not None
        return self.node

    def start(self, peers: list[Peer] | None) -> None:
        assert not self.alive and not self.removed
        if peers is None and self.disk.last_index() == 0 and self.id in self.sim.initial_ids():
            # Crashed before its first write: bootstrap again, as a server without a WAL does.
            peers = self.sim.initial_peers
        snap = self.disk.snapshot()
        self.sm = StateMachine.decode(snap) if snap.metadata.index else StateMachine()
        t = self.template
        cfg = Config(
            id=self.id,
            election_tick=t.election_tick,
            heartbeat_tick=t.heartbeat_tick,
            storage=self.disk,
            applied=self.sm.applied,
            max_size_per_msg=t.max_size_per_msg,
            max_uncommitted_entries_size=t.max_uncommitted_entries_size,
            max_inflight_msgs=t.max_inflight_msgs,
            check_quorum=t.check_quorum,
            pre_vote=t.pre_vote,
            read_only_option=t.read_only_option,
            rng=random.Random(self.sim.rng.getrandbits(64)),
        )
        self.node = RawNode(cfg)
        if peers is not None:
            self.node.bootstrap(peers)
        self.alive = True
        self.incarnation += 1
        self.pending = None
        self.is_leader = False
        self.last_commit = self.node.raft.raft_log.committed
        self.leader_term_checked = 0

    def crash(self) -> None:
        """Stop; the unwritten Ready (if any) and all volatile state are lost."""
        self.alive = False
        self.node = None
        self.pending = None
        self.is_leader = False

    # --- the driving loop ----------------------------------------------------------------------

    def process(self, now: int) -> None:
        if not self.alive:
            return  # removed while the others were processed
        if self.pending is not None and self.pending.done_at <= now:
            self._complete(self.pending)
            if not self.alive:
                return
        node = self.raft_node
        if self.pending is not None or not node.has_ready():
            return
        rd = node.ready()
        if rd.soft_state is not None:
            self.is_leader = rd.soft_state.raft_state == StateType.LEADER
        self._check_ready(rd)
        sent = False
        if self.is_leader:
            # A leader may send before its own write completes (rawnode.py, rule 2).
            self.sim.send_all(rd.messages)
            sent = True
        delay = self.sim.rng.choice((0, 0, 1, 3))
        self.pending = Pending(rd, now + delay, sent)
        if delay == 0:
            self._complete(self.pending)

    def _check_ready(self, rd: Ready) -> None:
        checker = self.sim.checker
        if rd.entries:
            checker.appended(self.id, rd.entries)
        # Committed entries must already be on our disk (rawnode.py, rule 3).
        for e in rd.committed_entries:
            if e.index > self.disk.last_index() or self.disk.term(e.index) != e.term:
                raise Violation(f"member {self.id} got unpersisted committed entry {e.index}")
        if rd.hard_state is not None and rd.hard_state.commit < self.disk_commit:
            raise Violation(f"member {self.id} hard state commit fell below its persisted one")

    def _complete(self, p: Pending) -> None:
        rd = p.rd
        self.pending = None
        if rd.snapshot is not None:
            self.disk.apply_snapshot(rd.snapshot)
        if rd.entries:
            self.disk.append(rd.entries)
        if rd.hard_state is not None:
            self.disk.set_hard_state(rd.hard_state)
            self.disk_commit = rd.hard_state.commit
        if not p.sent:
            self.sim.send_all(rd.messages)
        if rd.snapshot is not None:
            self._apply_snapshot(rd.snapshot)
        for e in rd.committed_entries:
            self._apply_entry(e)
            if not self.alive:
                return  # removed by this very entry
        for rs in rd.read_states:
            self.sim.read_done(self.id, rs.index, rs.request_ctx)
        self.raft_node.advance(rd)
        self._maybe_snapshot()

    def _apply_snapshot(self, snap: Snapshot) -> None:
        sm = StateMachine.decode(snap)
        if sm.applied <= self.sm.applied:
            raise Violation(f"member {self.id} installed snapshot {sm.applied} behind its state")
        self.sim.checker.state_at(self.id, sm.applied, sm.state_hash)
        self.sm = sm

    def _apply_entry(self, e: Entry) -> None:
        self.sm.apply(e)
        self.sim.checker.applied(self.id, e.index, e.term, e.data, self.sm.state_hash)
        if e.type == ENTRY_NORMAL:
            self.sim.entry_applied(e.index, e.data)
            return
        assert e.type in (ENTRY_CONF_CHANGE, ENTRY_CONF_CHANGE_V2)
        cc = decode_conf_change(e.type, e.data)
        try:
            self.sm.conf_state = self.raft_node.apply_conf_change(cc)
        except ConfChangeError:
            return  # refused identically on every member
        self.sim.conf_applied(self.id, e.index, self.sm.conf_state)

    def _maybe_snapshot(self) -> None:
        applied = self.sm.applied
        if applied - self.disk.first_index() < SNAPSHOT_EVERY:
            return
        self.disk.create_snapshot(applied, self.sm.conf_state, self.sm.encode())
        self.disk.compact(applied - SNAPSHOT_KEEP)

    def check(self) -> None:
        """Per-step checks of this member's volatile state."""
        r = self.raft_node.raft
        committed = r.raft_log.committed
        if committed < self.last_commit:
            raise Violation(f"member {self.id} commit fell from {self.last_commit} to {committed}")
        self.last_commit = committed
        if r.state == StateType.LEADER:
            self.sim.checker.leader(r.term, self.id)
            if self.leader_term_checked != r.term:
                self.leader_term_checked = r.term
                self.sim.checker.leader_complete(self.id, r.term, r.raft_log)


class Simulation:
    def __init__(
        self, seed: int, trace: Callable[[str], None] | None = None, trace_messages: bool = False
    ) -> None:
        self.seed = seed
        self.trace_messages = trace_messages and trace is not None
        self.rng = random.Random(seed)
        self.trace = trace
        self.checker = Checker()
        self.now = 0
        self.faults = Faults.draw(self.rng)
        self.size = self.rng.choice([1, 3, 3, 5, 5])
        self.template = Config(
            id=1,
            election_tick=ELECTION_TICK,
            heartbeat_tick=HEARTBEAT_TICK,
            storage=MemoryStorage(),
            max_size_per_msg=self.rng.choice([1 << 20, 256]),
            max_uncommitted_entries_size=self.rng.choice([1 << 30, 2048]),
            max_inflight_msgs=self.rng.choice([256, 4, 1]),
            check_quorum=self.rng.random() < 0.7,
            pre_vote=self.rng.random() < 0.7,
            read_only_option=ReadOnlyOption.SAFE,
        )
        self.nodes: dict[int, SimNode] = {}
        self.next_id = 1
        self.queue: list[tuple[int, int, Message]] = []
        self.seq = 0
        self.blocked: set[tuple[int, int]] = set()
        self.chaos = True
        self.proposal_counter = 0
        self.reads: dict[bytes, int] = {}
        self.applied_payloads: dict[bytes, int] = {}
        self.conf_index = 0
        self.removed_at: dict[int, int] = {}
        self.members: set[int] = set(range(1, self.size + 1))
        self.ever_members: set[int] = set(self.members)
        self.stats = {"proposed": 0, "dropped": 0, "crashes": 0, "partitions": 0, "conf": 0}
        peers = [Peer(i, b"member-%d" % i) for i in range(1, self.size + 1)]
        self.initial_peers = peers
        for _ in peers:
            self._new_node().start(peers)

    def log(self, msg: str) -> None:
        if self.trace is not None:
            self.trace(f"[{self.now // TICK_STEPS:5d}.{self.now % TICK_STEPS}] {msg}")

    def _new_node(self) -> SimNode:
        id_ = self.next_id
        self.next_id += 1
        node = SimNode(self, id_, self.template)
        self.nodes[id_] = node
        return node

    def initial_ids(self) -> list[int]:
        return [p.id for p in self.initial_peers]

    def live(self) -> list[SimNode]:
        return [n for _, n in sorted(self.nodes.items()) if n.alive]

    # --- network -------------------------------------------------------------------------------

    def send_all(self, msgs: list[Message]) -> None:
        for m in msgs:
            self._send(m)

    def _send(self, m: Message) -> None:
        f = self.faults
        if (m.from_, m.to) in self.blocked or (self.chaos and self.rng.random() < f.drop):
            self._dropped(m)
            return
        assert len(self.queue) < MAX_NETWORK_QUEUE, "network queue overflow"
        self._enqueue(m)
        if self.chaos and self.rng.random() < f.duplicate:
            dup = Message()
            dup.CopyFrom(m)
            self._enqueue(dup)

    def _enqueue(self, m: Message) -> None:
        delay = 1 + self.rng.randrange(self.faults.delay_max if self.chaos else 2)
        self.seq += 1
        heapq.heappush(self.queue, (self.now + delay, self.seq, m))

    def _refuses(self, target: SimNode, from_: int) -> bool:
        """Whether target knows that from_ was removed (and so refuses its messages)."""
        sender = self.nodes.get(from_)
        if sender is None or not sender.removed:
            return False
        cs = target.sm.conf_state
        if target.sm.applied < self.removed_at.get(from_, 0):
            return False
        return (
            from_ not in cs.voters and from_ not in cs.learners and from_ not in cs.voters_outgoing
        )

    def _dropped(self, m: Message) -> None:
        sender = self.nodes.get(m.from_)
        if sender is None or not sender.alive:
            return
        if m.type == MSG_SNAP:
            sender.raft_node.report_snapshot(m.to, False)
        elif (m.from_, m.to) in self.blocked:
            sender.raft_node.report_unreachable(m.to)

    def _deliver(self) -> None:
        q = self.queue
        while q and q[0][0] <= self.now:
            _, _, m = heapq.heappop(q)
            target = self.nodes.get(m.to)
            if (
                target is None
                or not target.alive
                or (m.from_, m.to) in self.blocked
                or self._refuses(target, m.from_)
            ):
                self._dropped(m)
                continue
            if self.trace_messages:
                self.log(describe_message(m))
            target.raft_node.step(m)
            if m.type == MSG_SNAP:
                sender = self.nodes.get(m.from_)
                if sender is not None and sender.alive:
                    sender.raft_node.report_snapshot(m.to, True)

    # --- client-side bookkeeping ---------------------------------------------------------------

    def entry_applied(self, index: int, data: bytes) -> None:
        if data:
            self.applied_payloads.setdefault(data, index)

    def conf_applied(self, by: int, index: int, cs: ConfState) -> None:
        """Track the newest configuration; members no longer in it are removed."""
        if index <= self.conf_index:
            return
        self.conf_index = index
        members = set(cs.voters) | set(cs.learners) | set(cs.voters_outgoing)
        self.members = members
        self.ever_members |= members
        for id_ in sorted(self.ever_members - members):
            self.removed_at.setdefault(id_, index)
            self.member_removed(by, id_)

    def member_removed(self, by: int, id_: int) -> None:
        """A removal was applied (so committed). As with etcd's transport, members that know
        of the removal refuse the removed member's messages; it is never restarted."""
        node = self.nodes.get(id_)
        if node is None or node.removed:
            return
        self.log(f"member {id_} removed (applied at {by})")
        node.removed = True

    def read_done(self, id_: int, index: int, ctx: bytes) -> None:
        before = self.reads.pop(ctx, None)
        self.log(f"read {ctx.decode()} done at {id_}: index {index}")
        if before is not None:
            self.checker.read_index(id_, index, before)

    def propose(self, node: SimNode, data: bytes) -> bool:
        try:
            node.raft_node.propose(data)
        except ProposalDroppedError:
            self.stats["dropped"] += 1
            return False
        self.stats["proposed"] += 1
        return True

    # --- the run -------------------------------------------------------------------------------

    def step_once(self) -> None:
        self.now += 1
        if self.chaos:
            self._chaos_events()
        for node in self.live():
            if (self.now + node.tick_offset) % TICK_STEPS == 0:
                node.raft_node.tick()
        self._deliver()
        for node in self.live():
            node.process(self.now)
        self._check()

    def _check(self) -> None:
        live = self.live()
        for node in live:
            node.check()
        if self.now % LOG_COMPARE_EVERY == 0:
            for i, a in enumerate(live):
                for b in live[i + 1 :]:
                    compare_logs(a.id, a.raft_node.raft.raft_log, b.id, b.raft_node.raft.raft_log)

    def leader(self) -> SimNode | None:
        best: SimNode | None = None
        for node in self.live():
            r = node.raft_node.raft
            if r.state == StateType.LEADER and (best is None or r.term > best.raft_node.term):
                best = node
        return best

    def _chaos_events(self) -> None:
        rng = self.rng
        f = self.faults
        live = self.live()
        if live and rng.random() < 0.05:
            self.proposal_counter += 1
            self.propose(rng.choice(live), b"p%d" % self.proposal_counter)
        if live and rng.random() < 0.01:
            self._read(rng.choice(live))
        if live and rng.random() < f.crash:
            victim = rng.choice(live)
            self.log(f"crash {victim.id}")
            self.stats["crashes"] += 1
            victim.crash()
        down = [n for _, n in sorted(self.nodes.items()) if not n.alive and not n.removed]
        if down and rng.random() < 0.01:
            node = rng.choice(down)
            self.log(f"restart {node.id}")
            node.start(None)
        if rng.random() < f.partition:
            self._partition()
        if self.blocked and rng.random() < 0.004:
            self.log("heal partitions")
            self.blocked.clear()
        if rng.random() < f.membership:
            self._membership_change()
        if rng.random() < f.transfer:
            leader = self.leader()
            if leader is not None:
                voters = sorted(leader.raft_node.raft.trk.config.voters)
                target = rng.choice(voters)
                self.log(f"transfer leadership {leader.id} -> {target}")
                leader.raft_node.transfer_leader(target)

    def _read(self, node: SimNode) -> None:
        self.proposal_counter += 1
        ctx = b"r%d" % self.proposal_counter
        self.reads[ctx] = self.checker.max_applied
        try:
            node.raft_node.read_index(ctx)
        except ProposalDroppedError:
            del self.reads[ctx]
            return
        self.log(f"read {ctx.decode()} at {node.id} (applied before: {self.reads[ctx]})")

    def _partition(self) -> None:
        rng = self.rng
        ids = sorted(self.nodes)
        self.stats["partitions"] += 1
        if rng.random() < 0.5:
            side = {i for i in ids if rng.random() < 0.5}
            for a in ids:
                for b in ids:
                    if (a in side) != (b in side):
                        self.blocked.add((a, b))
            self.log(f"partition {sorted(side)} | {sorted(set(ids) - side)}")
        else:
            a, b = rng.choice(ids), rng.choice(ids)
            if a != b:
                self.blocked.add((a, b))
                self.log(f"one-way partition {a} -> {b}")

    def _membership_change(self) -> None:
        leader = self.leader()
        if leader is None:
            return
        rng = self.rng
        cfg = leader.raft_node.raft.trk.config
        voters = sorted(cfg.voters)
        learners = sorted(cfg.learners)
        ops = []
        if len(voters) + len(learners) < MAX_MEMBERS:
            ops += ["add_learner", "add_voter"]
        if learners:
            ops += ["promote", "remove_learner"]
        if len(voters) > 1:
            ops += ["remove_voter", "demote"]
        if len(voters) > 1 and len(voters) + len(learners) < MAX_MEMBERS:
            ops.append("joint_replace")
        op = rng.choice(ops)
        new_id = self.next_id
        cc: ConfChange | ConfChangeV2
        if op == "add_learner":
            cc = ConfChange(type=CONF_CHANGE_ADD_LEARNER_NODE, node_id=new_id)
        elif op == "add_voter":
            cc = ConfChange(type=CONF_CHANGE_ADD_NODE, node_id=new_id)
        elif op == "promote":
            cc = ConfChange(type=CONF_CHANGE_ADD_NODE, node_id=rng.choice(learners))
        elif op == "remove_learner":
            cc = ConfChange(type=CONF_CHANGE_REMOVE_NODE, node_id=rng.choice(learners))
        elif op == "remove_voter":
            cc = ConfChange(type=CONF_CHANGE_REMOVE_NODE, node_id=rng.choice(voters))
        elif op == "demote":
            # Demoting a voter needs the joint state (etcd's confchange rules).
            cc = ConfChangeV2(transition=CONF_CHANGE_TRANSITION_AUTO)
            cc.changes.append(
                ConfChangeSingle(type=CONF_CHANGE_ADD_LEARNER_NODE, node_id=rng.choice(voters))
            )
            cc.changes.append(ConfChangeSingle(type=CONF_CHANGE_ADD_NODE, node_id=0))
        else:
            cc = ConfChangeV2(transition=CONF_CHANGE_TRANSITION_AUTO)
            cc.changes.append(ConfChangeSingle(type=CONF_CHANGE_ADD_NODE, node_id=new_id))
            cc.changes.append(
                ConfChangeSingle(type=CONF_CHANGE_REMOVE_NODE, node_id=rng.choice(voters))
            )
        try:
            leader.raft_node.propose_conf_change(cc)
        except ProposalDroppedError:
            return
        self.stats["conf"] += 1
        self.log(f"conf change {op}: {cc}".replace("\n", " "))
        if op in ("add_learner", "add_voter", "joint_replace"):
            self._new_node().start(None)

    def heal(self) -> None:
        self.chaos = False
        self.blocked.clear()
        for _, node in sorted(self.nodes.items()):
            if not node.alive and not node.removed:
                node.start(None)
        self.log("healed: no more faults")

    def run(self) -> None:
        """The whole run; raises Violation on a safety or liveness failure."""
        for _ in range(CHAOS_TICKS * TICK_STEPS):
            self.step_once()
        self.heal()
        self._await_leader()
        self._await_proposals()

    def _await_leader(self) -> None:
        for _ in range(LEADER_BOUND_TICKS * TICK_STEPS):
            if self.leader() is not None:
                return
            self.step_once()
        raise Violation(
            f"liveness: no leader within {LEADER_BOUND_TICKS} ticks after healing\n"
            + self.describe()
        )

    def _await_proposals(self) -> None:
        payloads = [b"live-%d-%d" % (self.seed, i) for i in range(LIVENESS_PROPOSALS)]
        retry_steps = 3 * ELECTION_TICK * TICK_STEPS
        last_try: dict[bytes, int] = {}
        for _ in range(COMMIT_BOUND_TICKS * TICK_STEPS):
            members = sorted(self.members)
            pending = [p for p in payloads if not self._applied_by(p, members)]
            if not pending:
                return
            leader = self.leader()
            for p in pending:
                due = self.now - last_try.get(p, -retry_steps) >= retry_steps
                if leader is not None and due and self.propose(leader, p):
                    last_try[p] = self.now
            self.step_once()
        members = sorted(self.members)
        missing = [p for p in payloads if not self._applied_by(p, members)]
        raise Violation(
            f"liveness: proposals {missing!r} not applied by members {members} within "
            f"{COMMIT_BOUND_TICKS} ticks after a leader emerged\n{self.describe()}"
        )

    def describe(self) -> str:
        """One line per member: role, term, log cursors, configuration (for failure reports)."""
        lines = []
        for id_, node in sorted(self.nodes.items()):
            if not node.alive:
                lines.append(f"  {id_}: {'removed' if node.removed else 'down'}")
                continue
            r = node.raft_node.raft
            log = r.raft_log
            lines.append(
                f"  {id_}: {r.state.name} term={r.term} lead={r.lead} vote={r.vote} "
                f"last={log.last_index()} commit={log.committed} applied={log.applied} "
                f"first={log.first_index()} {r.trk.config.describe()} "
                f"prs={ {i: pr for i, pr in sorted(r.trk.progress.items())} if r.state == StateType.LEADER else '' }"
            )
        return "\n".join(lines)

    def _applied_by(self, payload: bytes, members: list[int]) -> bool:
        index = self.applied_payloads.get(payload)
        if index is None:
            return False
        for m in members:
            node = self.nodes.get(m)
            if node is not None and not node.removed and node.sm.applied < index:
                return False
        return True


def run_seed(
    seed: int, trace: Callable[[str], None] | None = None, trace_messages: bool = False
) -> Simulation:
    """Run one seed; raises Violation (with the rule that failed) on failure."""
    sim = Simulation(seed, trace, trace_messages)
    try:
        sim.run()
    except Violation as exc:
        raise Violation(f"seed {seed} at tick {sim.now / TICK_STEPS:.1f}: {exc}") from exc
    except AssertionError as exc:
        # An assertion inside raft is a bug found by this seed: report it like a violation.
        detail = "".join(traceback.format_exception(exc)[-3:]).strip()
        raise Violation(
            f"seed {seed} at tick {sim.now / TICK_STEPS:.1f}: assertion: {detail}"
        ) from exc
    return sim
