"""EtcdServer: one member — the raft driver, the apply loop, reads, leases, alarms, snapshots.

Everything runs on one asyncio event loop; the WAL's write+fsync and the backend's sync run in
worker threads. The write path (design.md "A write, end to end"):

1. `propose(request)` gives the request a unique id, registers a future under it, and queues the
   encoded request; every request queued in one loop iteration goes into raft together.
2. The raft loop takes each `Ready`: a leader sends its messages at once; the entries and hard
   state go to the WAL in one write and one fsync (worker thread) while the loop applies the
   Ready's committed entries (already durable) in one backend transaction; then a follower sends
   its messages and the node advances.
3. Apply resolves the futures of this member's requests; watchers get the events.

Reads: linearizable reads share ReadIndex rounds (one in flight; reads that arrive meanwhile wait
for the next) and then wait until the applied index reaches the read index; serializable reads go
straight to the store.

Invariants:
- raft's `ready()`/`advance()` pairs never interleave (one raft loop task);
- a request's future is resolved at most once, by apply, by its timeout, or by shutdown;
- the WAL executor has exactly one thread, so WAL operations happen in submission order.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import heapq
import logging
import os
import random
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from petcd import ETCD_API_VERSION, errors
from petcd.lease import Lessor, min_lease_ttl_s
from petcd.membership import RaftCluster
from petcd.membership import ids as idutil
from petcd.mvcc import Backend, WatchableStore
from petcd.mvcc.kvstore import HASH_STEP_ROWS, KVHasher
from petcd.pb import internal_pb2, raft_pb2, rpc_pb2
from petcd.raft import Config as RaftConfig
from petcd.raft import Peer, RawNode, StateType
from petcd.server.alarms import AlarmStore
from petcd.server.apply import AppliedBatch, Applier
from petcd.server.compactor import Compactor, parse_retention
from petcd.server.config import ServerConfig
from petcd.server.peering import Peering
from petcd.server.storage import Paths, RaftState, create_raft_state, open_raft_state
from petcd.wal import DirLock, Snapshotter, WalSnapshot

log = logging.getLogger("petcd.server")

#: etcd refuses new proposals when committed − applied exceeds this.
MAX_APPLY_GAP = 5000
#: Re-issue a ReadIndex round that got no answer after this long.
READ_INDEX_RETRY_S = 0.5
#: How often a leaderless member asks its peers whether it was removed from the cluster.
REMOVED_CHECK_S = 1.0
#: etcd's strict reconfiguration check: peers must have been connected this long.
RECONFIG_HEALTH_S = 5.0
LEASE_REVOKE_BATCH = 1000
WAL_SEGMENT_BYTES = 64 * 1024 * 1024
_CTX = struct.Struct(">Q")


class _ReadRound:
    __slots__ = ("ctx", "future", "sent_at")

    def __init__(self, ctx: bytes, future: asyncio.Future[int]) -> None:
        self.ctx = ctx
        self.future = future
        self.sent_at = 0.0


class EtcdServer:
    """One petcd member. Create, `await start()`, serve, `await stop()`."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.paths = Paths.of(config.data_dir_path, config.wal_dir)
        self.peering = Peering(self)
        self.request_timeout_s = config.request_timeout_s
        self.max_request_bytes = int(config.max_request_bytes)
        self.quota_bytes = config.quota_bytes
        self.member_id = 0
        self.cluster_id = 0
        self.leader_id = 0
        self.term = 0
        self.raft_state = StateType.FOLLOWER
        self.committed_index = 0
        self.applied_index = 0
        self.db_size_bytes = 0
        self.stopped = asyncio.Event()
        #: Set when an essential task failed and stopped the member (petcd exits non-zero).
        self.failed = False
        #: A lone write fsyncs on the loop (see _handle_ready). Not behind grpcio: requests
        #: queue inside grpcio, unseen, and its work on the loop would wait for the fsync.
        self._lone_inline = str(config.grpc_frontend) != "grpcio"
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wal_executor = concurrent.futures.ThreadPoolExecutor(1, "petcd-wal")
        self._sync_executor = concurrent.futures.ThreadPoolExecutor(1, "petcd-sync")
        self._tasks: list[asyncio.Task[None]] = []
        # proposals
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._deadlines: collections.deque[tuple[float, int]] = collections.deque()
        self._pending: list[tuple[int, bytes]] = []
        self._parked: list[tuple[int, bytes]] = []
        self._flush_scheduled = False
        self._wake = asyncio.Event()
        # reads
        self._read_next: asyncio.Future[int] | None = None
        self._read_inflight: _ReadRound | None = None
        self._read_ctx_counter = 0
        self._applied_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._applied_waiter_seq = 0
        # snapshots and compaction
        self._snapshot_index = 0
        self._snapshot_in_progress = False
        self._compaction_event = asyncio.Event()
        self._compaction_waiters: list[tuple[Any, asyncio.Future[None]]] = []
        self.leader_changed = asyncio.Event()
        self._apply_lock = asyncio.Lock()
        self.learner = False
        #: Monotonic time since when this member has known no leader (None: it knows one).
        self.leaderless_since: float | None = time.monotonic()
        self._peering_started = False
        self._initial_members: dict[str, list[str]] = {}
        self._initial_ids: dict[str, int] = {}
        self._join_members: dict[int, list[str]] = {}
        self._join_as_learner = False
        self._campaign_pending = False
        self._backend_dirty = False

    # --- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.paths.make()
        self._lock = DirLock(self.paths.data_dir)
        try:
            await self._open_storage()
            if not self._peering_started:
                self.peering.set_identity(self.member_id, self.cluster_id)
                await self.peering.start()
                self._peering_started = True
            self._add_initial_peers()
            self._update_learner()
        except BaseException:
            if self._peering_started:
                await self.peering.stop()
            self._lock.release()
            raise
        self._tasks = [
            self._essential(self._raft_loop(), "raft-loop"),
            self._essential(self._ticker(), "raft-ticker"),
            self._essential(self._housekeeping(), "housekeeping"),
            self._essential(self._compaction_loop(), "compaction"),
            self._essential(self._backend_sync_loop(), "backend-sync"),
        ]
        self._start_compactor()
        corrupt_check_s = float(self.config.experimental_corrupt_check_time)
        if corrupt_check_s > 0:
            self._tasks.append(
                self._essential(self._corruption_check_loop(corrupt_check_s), "corrupt")
            )
        self._kick_off_election()
        log.info(
            "petcd member started",
            extra={"member_id": f"{self.member_id:x}", "cluster_id": f"{self.cluster_id:x}"},
        )

    def _essential(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A task the member cannot live without: if it ever fails, the member stops (and
        `petcd` exits non-zero, as etcd panics) rather than go on half alive."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(self._on_essential_done)
        return task

    def _on_essential_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stopping:
            return
        exc = task.exception()
        log.critical(
            "%s ended unexpectedly; stopping the member",
            task.get_name(),
            exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
        )
        self.failed = True
        self._fire_and_forget(self.stop())

    def _start_compactor(self) -> None:
        cfg = self.config
        mode = str(cfg.auto_compaction_mode)
        retention = parse_retention(mode, str(cfg.auto_compaction_retention))
        if retention <= 0:
            return
        loop = self._loop
        assert loop is not None

        async def compact(revision: int) -> None:
            await self.propose(
                internal_pb2.InternalRaftRequest(
                    compaction=rpc_pb2.CompactionRequest(revision=revision)
                )
            )

        compactor = Compactor(
            mode,
            retention,
            current_revision=lambda: self.store.current_revision,
            is_leader=lambda: self.is_leader,
            compact=compact,
            clock=loop.time,
            revision_interval_s=float(cfg.auto_compaction_revision_interval),
        )
        self._tasks.append(self._essential(compactor.run(), "auto-compactor"))

    async def _open_storage(self) -> None:
        cfg = self.config
        self.backend = Backend(
            self.paths.backend_dir,
            quota_bytes=self.quota_bytes if self.quota_bytes > 0 else 8 * 1024**3,
            unsafe_no_fsync=bool(cfg.unsafe_no_fsync),
            # No fsync per commit on the event loop: the WAL holds every applied entry past
            # the consistent index; _backend_sync_loop syncs in a worker thread instead.
            commit_sync=False,
        )
        self.lessor = Lessor(
            min_lease_ttl_s(int(cfg.election_timeout), int(cfg.heartbeat_interval)),
            checkpoint_enabled=bool(cfg.experimental_enable_lease_checkpoint),
        )
        self.lessor.load(self.backend)
        self.store = WatchableStore(self.backend, lease_hooks=self.lessor)
        self.cluster = RaftCluster()
        self.cluster.load(self.backend)
        self.alarms = AlarmStore()
        self.alarms.load(self.backend)
        self.snapshotter = Snapshotter(self.paths.snap_dir)
        from petcd.wal import WAL

        if WAL.exists(self.paths.wal_dir):
            state = open_raft_state(self.paths, WAL_SEGMENT_BYTES)
        elif cfg.initial_cluster_state == "existing":
            state = await self._join_state()
        else:
            state = self._bootstrap_state()
        self.wal = state.wal
        self.raft_storage = state.storage
        self.member_id = state.member_id
        self.cluster_id = state.cluster_id
        self.cluster.cluster_id = self.cluster_id
        self.ids = idutil.IdGenerator(self.member_id)
        snapshot_index = state.snapshot.metadata.index if state.snapshot is not None else 0
        self._snapshot_index = snapshot_index
        self.node = RawNode(self._raft_config(applied=snapshot_index))
        if state.fresh and self._initial_members:
            # A new cluster; a member joining an existing one learns everything from the leader.
            self.node.bootstrap(self._initial_peers())
        self.applier = Applier(
            self.store, self.lessor, self.cluster, self.alarms, self.node.apply_conf_change
        )
        if state.snapshot is not None:
            self.applier.conf_state.CopyFrom(state.snapshot.metadata.conf_state)
        self.applied_index = max(snapshot_index, 0)
        self.committed_index = self.applied_index
        self.db_size_bytes = self.backend.size_bytes()

    def _bootstrap_state(self) -> RaftState:
        cfg = self.config
        members = cfg.initial_cluster_map()
        token = str(cfg.initial_cluster_token)
        ids = {name: idutil.member_id(urls, token) for name, urls in members.items()}
        self._initial_members = members
        self._initial_ids = ids
        member_id = ids[str(cfg.name)]
        cluster_id = idutil.cluster_id(list(ids.values()))
        return create_raft_state(self.paths, member_id, cluster_id, WAL_SEGMENT_BYTES)

    async def _join_state(self) -> RaftState:
        """--initial-cluster-state existing: learn our id and the cluster from its members."""
        cfg = self.config
        local = cfg.initial_cluster_map()
        own_urls = sorted(cfg.initial_advertise_peer_urls)
        await self.peering.start()
        self._peering_started = True
        urls = [url for member_urls in local.values() for url in member_urls]
        response = await self.peering.fetch_members(urls, own_urls)
        remote = {frozenset(m.peerURLs) for m in response.members}
        if remote != {frozenset(u) for u in local.values()}:
            raise errors.StorageError(
                "petcd: --initial-cluster does not match the cluster's members "
                f"({sorted(sorted(u) for u in remote)})"
            )
        mine = [m for m in response.members if sorted(m.peerURLs) == own_urls]
        if not mine:
            raise errors.StorageError(
                f"petcd: no member of the cluster has peer URLs {own_urls}: "
                "add this member with `member add` first"
            )
        cluster_id = response.header.cluster_id
        self._join_members = {m.ID: list(m.peerURLs) for m in response.members}
        self._join_as_learner = mine[0].isLearner
        self.peering.set_identity(mine[0].ID, cluster_id)
        return create_raft_state(self.paths, mine[0].ID, cluster_id, WAL_SEGMENT_BYTES)

    def _add_initial_peers(self) -> None:
        """Peers before any conf change is applied: bootstrap/join lists, then membership."""
        if self._initial_members:
            for name, urls in self._initial_members.items():
                member_id = self._initial_ids[name]
                if member_id != self.member_id:
                    self.peering.transport.add_peer(member_id, urls)
        for member_id, urls in self._join_members.items():
            if member_id != self.member_id:
                self.peering.transport.add_peer(member_id, urls)
        if self.cluster.members:
            self.peering.sync_peers()

    def report_unreachable(self, member_id: int) -> None:
        if self._stopping:
            return
        self.node.report_unreachable(member_id)
        if member_id == self.leader_id:
            self._expedite_election()
        self._wake.set()

    def _expedite_election(self) -> None:
        """Our connection to the leader broke (a crashed process refuses connections at
        once): time out right after its lease ends instead of a random 1-2 election timeouts
        later, one tick apart per surviving voter so that they do not split the vote."""
        leader = self.leader_id
        if leader == 0 or self.is_leader:
            return
        survivors = [v for v in self.cluster.voters() if v != leader]
        if self.member_id in survivors:
            rank = survivors.index(self.member_id)
            self.node.expedite_election(min(1 + rank, self.config.election_ticks - 1))

    def report_snapshot(self, member_id: int, ok: bool) -> None:
        if not self._stopping:
            self.node.report_snapshot(member_id, ok)
            self._wake.set()

    @property
    def is_learner(self) -> bool:
        member = self.cluster.member(self.member_id)
        if member is None:
            # Joining, before our own MemberAdd is applied: what the cluster told us.
            return self._join_as_learner
        return member.is_learner

    def leaderless_too_long(self) -> bool:
        """etcd cancels `hasleader` streams after 3 election timeouts without a leader."""
        since = self.leaderless_since
        limit_s = 3 * int(self.config.election_timeout) / 1000.0
        return since is not None and time.monotonic() - since >= limit_s

    def _update_learner(self) -> None:
        """`learner`: a plain attribute the API checks on every request."""
        self.learner = self.is_learner

    def _initial_peers(self) -> list[Peer]:
        peers = []
        for name, urls in sorted(self._initial_members.items()):
            record = internal_pb2.MemberRecord(
                id=self._initial_ids[name], name=name, peer_urls=urls
            )
            context = internal_pb2.ConfChangeContext(member=record).SerializeToString()
            peers.append(Peer(id=record.id, context=context))
        return peers

    def _raft_config(self, applied: int) -> RaftConfig:
        cfg = self.config
        return RaftConfig(
            id=self.member_id,
            election_tick=cfg.election_ticks,
            heartbeat_tick=1,
            storage=self.raft_storage,
            applied=applied,
            max_size_per_msg=1024 * 1024,
            max_inflight_msgs=512,
            max_uncommitted_entries_size=1 << 30,
            check_quorum=True,
            pre_vote=bool(cfg.pre_vote),
            rng=random.Random(int.from_bytes(os.urandom(8), "big")),
        )

    def _kick_off_election(self) -> None:
        """A lone voter campaigns at once; others fast-forward their election ticks (etcd).

        Raft refuses to campaign while committed conf changes are unapplied (a new cluster's
        bootstrap entries), so a lone voter campaigns right after the first apply.
        """
        config = self.node.status().config
        if config is not None and config.voters == {self.member_id} and not config.learners:
            self._campaign_pending = True
            if self.applied_index >= self.committed_index:
                self._campaign_now()
        elif self.config.initial_election_tick_advance:
            for _ in range(max(self.config.election_ticks - 1, 0)):
                self.node.tick()
        self._wake.set()

    def _campaign_now(self) -> None:
        if self._campaign_pending and self.raft_state != StateType.LEADER:
            self.node.campaign()
            # Refused while bootstrap conf changes are unapplied: retried after the next apply.
            self._campaign_pending = self.node.state == StateType.FOLLOWER
            self._wake.set()

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fail_all(errors.StoppedError())
        await self.peering.stop()
        await asyncio.get_running_loop().run_in_executor(self._wal_executor, self.wal.close)
        self._wal_executor.shutdown(wait=True)
        self._sync_executor.shutdown(wait=True)
        self.backend.close()
        self._lock.release()
        self.stopped.set()
        log.info("petcd member stopped")

    def _fail_all(self, error: errors.PetcdError) -> None:
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(error)
        self._waiters.clear()
        for _index, _seq, future in self._applied_waiters:
            if not future.done():
                future.set_exception(error)
        self._applied_waiters.clear()
        pending_reads = [self._read_next]
        if self._read_inflight is not None:
            pending_reads.append(self._read_inflight.future)
        for read in pending_reads:
            if read is not None and not read.done():
                read.set_exception(error)

    # --- proposals ---------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.raft_state == StateType.LEADER

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.member_id,
            revision=self.store.current_revision if revision is None else revision,
            raft_term=self.term,
        )

    def fill_header(self, header: rpc_pb2.ResponseHeader) -> None:
        """Complete a response header whose revision apply (or the caller) has set."""
        header.cluster_id = self.cluster_id
        header.member_id = self.member_id
        header.raft_term = self.term
        if not header.revision:
            header.revision = self.store.current_revision

    async def propose(self, request: internal_pb2.InternalRaftRequest) -> Any:
        """Put one request through raft; returns apply's result or raises its error."""
        if self._stopping:
            raise errors.StoppedError()
        if self.committed_index - self.applied_index > MAX_APPLY_GAP:
            raise errors.TooManyRequestsError()
        request_id = self.ids.next()
        request.header.id = request_id
        data = request.SerializeToString()
        if len(data) > self.max_request_bytes:
            raise errors.RequestTooLargeError()
        return await self._propose_data(request_id, data)

    def _propose_data(self, request_id: int, data: bytes) -> Awaitable[Any]:
        loop = self._loop
        assert loop is not None
        future: asyncio.Future[Any] = loop.create_future()
        self._waiters[request_id] = future
        self._deadlines.append((loop.time() + self.request_timeout_s, request_id))
        self._pending.append((request_id, data))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush_proposals)
        return future

    def _flush_proposals(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        if self.leader_id == 0 or not self._leader_reachable():
            # Retried when a (reachable) leader appears: a proposal forwarded to a leader we
            # cannot reach would be lost, and its client would wait out its whole timeout.
            self._parked.extend(pending)
            return
        try:
            self.node.propose_batch([data for _request_id, data in pending])
        except errors.ProposalDroppedError:
            # No leader, a leader transfer, or too many uncommitted bytes: retried when the
            # leader changes (or by housekeeping), and failed by their deadlines otherwise.
            self._parked.extend(pending)
            return
        self._wake.set()

    def _leader_reachable(self) -> bool:
        leader = self.leader_id
        return leader == self.member_id or self.peering.connected_since(leader) is not None

    def _retry_parked(self) -> None:
        if self._parked and self.leader_id != 0 and self._leader_reachable():
            parked, self._parked = self._parked, []
            live = [(rid, data) for rid, data in parked if rid in self._waiters]
            self._pending.extend(live)
            if live and not self._flush_scheduled:
                self._flush_scheduled = True
                assert self._loop is not None
                self._loop.call_soon(self._flush_proposals)

    def _expire_requests(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _deadline, request_id = deadlines.popleft()
            future = self._waiters.pop(request_id, None)
            if future is not None and not future.done():
                future.set_exception(
                    errors.NoLeaderError() if self.leader_id == 0 else errors.RequestTimeoutError()
                )

    # --- linearizable reads ------------------------------------------------------------------

    async def linearizable_barrier(self) -> None:
        """Return once this member has applied everything committed before the call."""
        if self._stopping:
            raise errors.StoppedError()
        loop = self._loop
        assert loop is not None
        future = self._read_next
        if future is None:
            future = self._read_next = loop.create_future()
            if self._read_inflight is None:
                loop.call_soon(self._start_read_round)
        try:
            index = await asyncio.wait_for(asyncio.shield(future), self.request_timeout_s)
        except TimeoutError:
            raise (
                errors.NoLeaderError() if self.leader_id == 0 else errors.RequestTimeoutError()
            ) from None
        if self.applied_index < index:
            await self.wait_applied(index)

    def _start_read_round(self) -> None:
        if self._read_inflight is not None or self._read_next is None:
            return
        future, self._read_next = self._read_next, None
        self._read_ctx_counter += 1
        round_ = _ReadRound(_CTX.pack(self._read_ctx_counter), future)
        self._read_inflight = round_
        self._send_read_index(round_)

    def _send_read_index(self, round_: _ReadRound) -> None:
        assert self._loop is not None
        round_.sent_at = self._loop.time()
        if self.leader_id == 0:
            return  # retried by housekeeping once a leader is known
        try:
            self.node.read_index(round_.ctx)
        except errors.ProposalDroppedError:
            return
        self._wake.set()

    def _on_read_states(self, read_states: Sequence[Any]) -> None:
        round_ = self._read_inflight
        for state in read_states:
            if round_ is not None and state.request_ctx == round_.ctx:
                self._read_inflight = None
                if not round_.future.done():
                    round_.future.set_result(state.index)
                round_ = None
        if self._read_inflight is None and self._read_next is not None:
            self._start_read_round()

    def _retry_read_round(self, now: float) -> None:
        round_ = self._read_inflight
        if round_ is not None and now - round_.sent_at >= READ_INDEX_RETRY_S:
            self._send_read_index(round_)

    async def wait_applied(self, index: int) -> None:
        if self.applied_index >= index:
            return
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        self._applied_waiter_seq += 1
        heapq.heappush(self._applied_waiters, (index, self._applied_waiter_seq, future))
        await future

    def _notify_applied(self) -> None:
        waiters = self._applied_waiters
        applied = self.applied_index
        while waiters and waiters[0][0] <= applied:
            _index, _seq, future = heapq.heappop(waiters)
            if not future.done():
                future.set_result(None)

    # --- the raft loop -----------------------------------------------------------------------

    def step(self, message: raft_pb2.Message) -> None:
        """A raft message from a peer (called by the transport)."""
        if self._stopping:
            return
        try:
            self.node.step(message)
        except errors.RaftError as exc:
            log.debug("dropped raft message: %s", exc)
        self._wake.set()

    async def _raft_loop(self) -> None:
        node = self.node
        wake = self._wake
        while True:
            await wake.wait()
            wake.clear()
            while node.has_ready():
                async with self._apply_lock:
                    await self._handle_ready(node.ready())

    async def _handle_ready(self, rd: Any) -> None:
        loop = self._loop
        assert loop is not None
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state)
        if rd.hard_state is not None:
            self.term = rd.hard_state.term
            self.committed_index = max(self.committed_index, rd.hard_state.commit)
        if rd.read_states:
            self._on_read_states(rd.read_states)
        leader = self.raft_state == StateType.LEADER
        if leader and rd.messages:
            self.peering.send(rd.messages)
        if rd.snapshot is not None and rd.snapshot.metadata.index > 0:
            await self._install_snapshot(rd.snapshot)
        saving = None
        if rd.must_sync and len(rd.entries) == 1 and len(self._waiters) <= 1 and self._lone_inline:
            # One write and nobody else waiting (a lone client): the fsync costs less inline
            # than the wake-ups of a round trip through the WAL thread, and delays no one.
            self.wal.save(rd.hard_state, rd.entries, True)
        elif rd.entries or rd.must_sync:
            saving = loop.run_in_executor(
                self._wal_executor, self.wal.save, rd.hard_state, rd.entries, rd.must_sync
            )
        elif rd.hard_state is not None:
            # Only the commit index moved: a small buffered write and no fsync, cheaper here
            # than a round trip through the WAL thread.
            self.wal.save(rd.hard_state, (), False)
        if rd.committed_entries:
            self._apply(rd.committed_entries)
        if saving is not None:
            await saving
        if rd.entries:
            self.raft_storage.append(list(rd.entries))
        if rd.hard_state is not None:
            self.raft_storage.set_hard_state(rd.hard_state)
        if not leader and rd.messages:
            self.peering.send(rd.messages)
        self.node.advance(rd)
        if self._campaign_pending:
            self._campaign_now()
        self._maybe_snapshot()

    def _on_soft_state(self, soft: Any) -> None:
        was_leader = self.raft_state == StateType.LEADER
        previous_leader = self.leader_id
        self.leader_id = soft.lead
        self.raft_state = soft.raft_state
        now_leader = self.raft_state == StateType.LEADER
        if now_leader and not was_leader:
            self.lessor.promote(extend_s=int(self.config.election_timeout) / 1000.0)
        elif was_leader and not now_leader:
            self.lessor.demote()
        if previous_leader != self.leader_id:
            log.info("leader changed", extra={"leader": f"{self.leader_id:x}"})
            if self.leader_id == 0:
                self.leaderless_since = time.monotonic()
            elif previous_leader == 0:
                self.leaderless_since = None
            self.leader_changed.set()
            self.leader_changed = asyncio.Event()
            round_ = self._read_inflight
            if round_ is not None and previous_leader != 0:
                self._read_inflight = None
                if not round_.future.done():
                    round_.future.set_exception(errors.LeaderChangedError())
            self._retry_parked()
            if self._read_inflight is None and self._read_next is not None:
                self._start_read_round()

    def _apply(self, entries: Sequence[raft_pb2.Entry]) -> None:
        batch: AppliedBatch = self.applier.apply(list(entries))
        self._backend_dirty = True
        self.db_size_bytes = self.backend.size_bytes()
        self.applied_index = batch.last_index
        self.committed_index = max(self.committed_index, batch.last_index)
        waiters = self._waiters
        for request_id, result in batch.results:
            future = waiters.pop(request_id, None)
            if future is None or future.done():
                continue
            if isinstance(result, errors.PetcdError):
                future.set_exception(result)
            else:
                future.set_result(result)
        for _index, cc, _member in batch.conf_changes:
            self._on_conf_change(cc)
        if self._applied_waiters:
            self._notify_applied()
        if self.applier.compacted:
            self.applier.compacted = False
            self._compaction_event.set()

    def _on_conf_change(self, cc: raft_pb2.ConfChange) -> None:
        self.peering.sync_peers()
        self._update_learner()
        if cc.type == raft_pb2.CONF_CHANGE_REMOVE_NODE and cc.node_id == self.member_id:
            log.warning("this member was removed from the cluster; stopping")
            assert self._loop is not None
            self._loop.create_task(self.stop())

    async def _install_snapshot(self, snapshot: raft_pb2.Snapshot) -> None:
        """A follower received a snapshot: its backend copy is already on disk (transport)."""
        meta = snapshot.metadata
        db_path = os.path.join(self.paths.snap_dir, f"{meta.index:016x}.snap.db")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._wal_executor, self.snapshotter.save, snapshot)
        await loop.run_in_executor(
            self._wal_executor,
            self.wal.save_snapshot,
            WalSnapshot(meta.index, meta.term, meta.conf_state),
        )
        self.raft_storage.apply_snapshot(snapshot)
        if os.path.exists(db_path):
            self.store.restore(db_path)
        self.lessor.leases.clear()
        self.lessor.load(self.backend)
        self.cluster = RaftCluster(self.cluster_id)
        self.cluster.load(self.backend)
        self.applier.cluster = self.cluster
        self.alarms = AlarmStore()
        self.alarms.load(self.backend)
        self.applier.alarms = self.alarms
        self.applier.conf_state.CopyFrom(meta.conf_state)
        self.applied_index = meta.index
        self._snapshot_index = meta.index
        self._notify_applied()

    # --- raft snapshots ------------------------------------------------------------------------

    def _maybe_snapshot(self) -> None:
        if self._snapshot_in_progress:
            return
        if self.applied_index - self._snapshot_index < int(self.config.snapshot_count):
            return
        self._snapshot_in_progress = True
        assert self._loop is not None
        self._loop.create_task(self._snapshot(self.applied_index))

    async def _snapshot(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            # The backend must hold `index` durably before the WAL before it is released.
            await loop.run_in_executor(self._sync_executor, self.backend.sync)
            data = internal_pb2.SnapshotData(cluster_id=self.cluster_id).SerializeToString()
            snapshot = self.raft_storage.create_snapshot(index, self.applier.conf_state, data)
            meta = snapshot.metadata
            await loop.run_in_executor(self._wal_executor, self.snapshotter.save, snapshot)
            await loop.run_in_executor(
                self._wal_executor,
                self.wal.save_snapshot,
                WalSnapshot(meta.index, meta.term, meta.conf_state),
            )
            compact_to = index - int(self.config.experimental_snapshot_catchup_entries)
            if compact_to > self.raft_storage.first_index():
                self.raft_storage.compact(compact_to)
            await loop.run_in_executor(self._wal_executor, self.wal.release_before, index)
            max_snapshots = int(self.config.max_snapshots)
            if max_snapshots > 0:
                await loop.run_in_executor(
                    self._wal_executor, self.snapshotter.purge, max_snapshots
                )
            self._snapshot_index = index
            log.info("saved raft snapshot", extra={"index": index})
        finally:
            self._snapshot_in_progress = False

    # --- background work ----------------------------------------------------------------------

    async def _ticker(self) -> None:
        """One raft tick per heartbeat interval, on a fixed schedule (no drift under load)."""
        interval = int(self.config.heartbeat_interval) / 1000.0
        loop = asyncio.get_running_loop()
        node = self.node
        next_tick = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            now = loop.time()
            # Catch up at most one election timeout of missed ticks after a long stall.
            behind = min(int((now - next_tick) / interval), self.config.election_ticks)
            for _ in range(1 + behind):
                node.tick()
            next_tick += interval * (1 + behind)
            if next_tick < now:
                next_tick = now + interval
            self._wake.set()

    async def _housekeeping(self) -> None:
        """Every 100 ms: request timeouts, ReadIndex retries, watch catch-up, lease expiry."""
        loop = asyncio.get_running_loop()
        checkpoint_interval_s = float(self.config.experimental_lease_checkpoint_interval)
        next_checkpoint = loop.time() + checkpoint_interval_s
        next_removed_check = loop.time() + REMOVED_CHECK_S
        while True:
            await asyncio.sleep(0.1)
            now = loop.time()
            self._expire_requests(now)
            if not self._leader_reachable():
                self._expedite_election()
            self._retry_read_round(now)
            self._retry_parked()
            self.store.sync_watchers()
            if self.leader_id == 0 and now >= next_removed_check:
                next_removed_check = now + REMOVED_CHECK_S
                self._fire_and_forget(self._stop_if_removed())
            if self.is_leader:
                self._revoke_expired_leases()
                if now >= next_checkpoint:
                    next_checkpoint = now + checkpoint_interval_s
                    self._checkpoint_leases()

    async def _corruption_check_loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            if self.is_leader:
                with contextlib.suppress(errors.PetcdError):
                    await self.check_corruption()

    async def check_corruption(self) -> list[int]:
        """etcd's periodic check (leader): every member's HashKV at the leader's revision.

        A member whose hash differs at the same compact revision gets the CORRUPT alarm.
        Returns the members found corrupt.
        """
        revision = self.store.current_revision
        local_hash, local_compact, _ = await self.hash_kv(revision)
        corrupt: list[int] = []
        for peer in self.cluster.voters() + self.cluster.learners():
            if peer == self.member_id:
                continue
            try:
                remote = await self.peering.peer_hash_kv(peer, revision)
            except (errors.CompactedError, errors.FutureRevisionError):
                continue  # not comparable at this revision (it lags, or compacted further)
            except errors.PetcdError as exc:
                log.info("corruption check: no answer from %x: %s", peer, exc.message)
                continue
            if remote.compact_revision == local_compact and remote.hash != local_hash:
                log.error(
                    "corruption check: hash mismatch",
                    extra={"member": f"{peer:x}", "revision": revision},
                )
                corrupt.append(peer)
        for peer in corrupt:
            alarm = rpc_pb2.AlarmRequest(
                action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=peer, alarm=rpc_pb2.CORRUPT
            )
            await self.propose(internal_pb2.InternalRaftRequest(alarm=alarm))
        return corrupt

    async def hash_kv(self, revision: int) -> tuple[int, int, int]:
        """The store's HashKV in steps, yielding to the loop between them: hashing a large store
        at once would stall heartbeats past the election timeout. Starts again when the backend
        is swapped meanwhile (defragmentation, restore); the revision is checked each time.
        """
        while True:
            hasher = KVHasher(self.store, revision)
            try:
                while hasher.step(HASH_STEP_ROWS):
                    await asyncio.sleep(0)
                    if hasher.stale:
                        break
                else:
                    return hasher.result()
            finally:
                hasher.close()

    async def _stop_if_removed(self) -> None:
        if self.member_id in self.cluster.removed or await self.peering.check_removed():
            log.warning("this member was removed from the cluster; stopping")
            await self.stop()

    def _revoke_expired_leases(self) -> None:
        for lease_id in self.lessor.expired(LEASE_REVOKE_BATCH):
            request = internal_pb2.InternalRaftRequest(
                lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=lease_id)
            )
            self._fire_and_forget(self.propose(request))

    def _checkpoint_leases(self) -> None:
        checkpoints = self.lessor.checkpoints(LEASE_REVOKE_BATCH)
        if checkpoints:
            request = internal_pb2.InternalRaftRequest(
                lease_checkpoint=rpc_pb2.LeaseCheckpointRequest(
                    checkpoints=[
                        rpc_pb2.LeaseCheckpoint(ID=lease_id, remaining_TTL=ttl)
                        for lease_id, ttl in checkpoints
                    ]
                )
            )
            self._fire_and_forget(self.propose(request))

    def _fire_and_forget(self, awaitable: Awaitable[Any]) -> None:
        async def run() -> None:
            with contextlib.suppress(errors.PetcdError):
                await awaitable

        assert self._loop is not None
        self._loop.create_task(run())

    async def _backend_sync_loop(self) -> None:
        """fsync the backend every batch interval when it changed (etcd: 100 ms), off the loop.

        Durability does not depend on it (the WAL does); it bounds how much a restart replays
        and how long committed pages sit only in the page cache.
        """
        interval_s = float(self.config.backend_batch_interval) or 0.1
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval_s)
            if self._backend_dirty:
                self._backend_dirty = False
                await loop.run_in_executor(self._sync_executor, self.backend.sync)

    async def _compaction_loop(self) -> None:
        """Physical compaction in bounded batches, pausing between them (etcd: 10 ms)."""
        pause_s = float(self.config.experimental_compaction_sleep_interval)
        limit = int(self.config.experimental_compaction_batch_limit) or 1000
        while True:
            await self._compaction_event.wait()
            self._compaction_event.clear()
            while self.store.compaction_step(limit):
                await asyncio.sleep(pause_s)
            waiters, self._compaction_waiters = self._compaction_waiters, []
            for compaction, future in waiters:
                if compaction.done:
                    if not future.done():
                        future.set_result(None)
                else:
                    self._compaction_waiters.append((compaction, future))

    async def wait_compaction(self, compaction: Any) -> None:
        """Wait until a compaction's old revisions are physically gone (physical=true)."""
        if compaction.done:
            return
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        self._compaction_waiters.append((compaction, future))
        self._compaction_event.set()
        await future

    # --- quota, leases, maintenance, membership (called by the API) -------------------------

    async def check_quota(self, cost: int) -> None:
        """etcd's quota check before proposing a write: raise NOSPACE when it would not fit."""
        if self.quota_bytes < 0:
            return
        # The size is refreshed after every applied batch: no stat() per request.
        if self.db_size_bytes + cost < self.quota_bytes:
            return
        alarm = rpc_pb2.AlarmRequest(
            action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=self.member_id, alarm=rpc_pb2.NOSPACE
        )
        with contextlib.suppress(errors.PetcdError):
            await self.propose(internal_pb2.InternalRaftRequest(alarm=alarm))
        raise errors.NoSpaceError()

    async def _leader_ready(self) -> None:
        """The leader answers lease queries only once it has applied what it committed."""
        if not self.is_leader:
            raise errors.NoLeaderError() if self.leader_id == 0 else errors.NotLeaderError()
        if self.applied_index < self.committed_index:
            try:
                async with asyncio.timeout(1.0):
                    await self.wait_applied(self.committed_index)
            except TimeoutError:
                raise errors.TimeoutWaitAppliedIndexError() from None

    async def lease_renew(self, lease_id: int) -> int:
        if self.is_leader:
            await self._leader_ready()
            return self.lessor.renew(lease_id)
        raw = await self.peering.call_leader(
            "lease.renew",
            rpc_pb2.LeaseKeepAliveRequest(ID=lease_id).SerializeToString(),
            self.request_timeout_s,
        )
        return int(rpc_pb2.LeaseKeepAliveResponse.FromString(raw).TTL)

    async def lease_time_to_live(self, lease_id: int) -> tuple[int, int, list[bytes]] | None:
        if self.is_leader:
            await self._leader_ready()
            return self.lessor.time_to_live(lease_id)
        raw = await self.peering.call_leader(
            "lease.ttl",
            rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=True).SerializeToString(),
            self.request_timeout_s,
        )
        response = rpc_pb2.LeaseTimeToLiveResponse.FromString(raw)
        if response.TTL == -1:
            return None
        return int(response.TTL), int(response.grantedTTL), list(response.keys)

    async def defragment(self) -> None:
        """Copy the backend compactly while reads go on, then swap it in between batches."""
        async with self._apply_lock:
            path = self.paths.backend_dir + ".defrag"
            await self.run_in_thread(self.backend.copy_to, path)
            self.store.defrag_swap(path)
            self.db_size_bytes = self.backend.size_bytes()

    async def move_leader(self, target: int) -> None:
        if not self.is_leader:
            raise errors.NotLeaderError()
        member = self.cluster.member(target)
        if member is None or member.is_learner:
            raise errors.BadLeaderTransfereeError()
        if target == self.member_id:
            return
        self.node.transfer_leader(target)
        self._wake.set()
        try:
            async with asyncio.timeout(self.request_timeout_s):
                while self.leader_id != target:
                    await self.leader_changed.wait()
        except TimeoutError:
            raise errors.LeaderTransferTimeoutError() from None

    def publish_attributes(self, name: str, client_urls: list[str]) -> None:
        """Tell the cluster this member's name and client URLs (through raft), retrying."""
        request = internal_pb2.InternalRaftRequest(
            member_attributes=internal_pb2.MemberAttributesSetRequest(
                member_id=self.member_id, name=name, client_urls=client_urls
            )
        )

        async def run() -> None:
            while not self._stopping:
                try:
                    await self.propose(request)
                    return
                except errors.StoppedError:
                    return
                except errors.PetcdError as exc:
                    log.info("publishing member attributes failed, retrying: %s", exc.message)
                    await asyncio.sleep(0.5)

        assert self._loop is not None
        self._tasks.append(self._loop.create_task(run(), name="publish"))

    async def _propose_conf_change(self, cc: raft_pb2.ConfChange) -> list[rpc_pb2.Member]:
        if self._stopping:
            raise errors.StoppedError()
        loop = self._loop
        assert loop is not None
        cc.id = self.ids.next()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiters[cc.id] = future
        self._deadlines.append((loop.time() + self.request_timeout_s, cc.id))
        try:
            self.node.propose_conf_change(cc)
        except errors.ProposalDroppedError:
            self._waiters.pop(cc.id, None)
            error = errors.NoLeaderError() if self.leader_id == 0 else errors.UnhealthyError()
            raise error from None
        self._wake.set()
        members: list[rpc_pb2.Member] = await future
        return members

    async def member_add(
        self, peer_urls: list[str], is_learner: bool
    ) -> tuple[rpc_pb2.Member, list[rpc_pb2.Member]]:
        record = internal_pb2.MemberRecord(
            id=idutil.member_id(peer_urls, "", int(time.time())),
            peer_urls=peer_urls,
            is_learner=is_learner,
        )
        self.cluster.check_add(record)
        self._check_reconfig_add()
        kind = (
            raft_pb2.CONF_CHANGE_ADD_LEARNER_NODE if is_learner else raft_pb2.CONF_CHANGE_ADD_NODE
        )
        context = internal_pb2.ConfChangeContext(member=record).SerializeToString()
        members = await self._propose_conf_change(
            raft_pb2.ConfChange(type=kind, node_id=record.id, context=context)
        )
        member = rpc_pb2.Member(ID=record.id, peerURLs=peer_urls, isLearner=is_learner)
        return member, members

    async def member_remove(self, member_id: int) -> list[rpc_pb2.Member]:
        self.cluster.check_remove(member_id)
        self._check_reconfig_remove(member_id)
        return await self._propose_conf_change(
            raft_pb2.ConfChange(type=raft_pb2.CONF_CHANGE_REMOVE_NODE, node_id=member_id)
        )

    async def member_update(self, member_id: int, peer_urls: list[str]) -> list[rpc_pb2.Member]:
        self.cluster.check_update(member_id, peer_urls)
        record = internal_pb2.MemberRecord(id=member_id, peer_urls=peer_urls)
        context = internal_pb2.ConfChangeContext(member=record).SerializeToString()
        return await self._propose_conf_change(
            raft_pb2.ConfChange(
                type=raft_pb2.CONF_CHANGE_UPDATE_NODE, node_id=member_id, context=context
            )
        )

    async def member_promote(self, member_id: int) -> list[rpc_pb2.Member]:
        self.cluster.check_promote(member_id)
        if not self.is_leader:
            raw = await self.peering.call_leader(
                "member.promote",
                rpc_pb2.MemberPromoteRequest(ID=member_id).SerializeToString(),
                self.request_timeout_s,
            )
            return list(rpc_pb2.MemberPromoteResponse.FromString(raw).members)
        self._check_learner_ready(member_id)
        record = self.cluster.member(member_id)
        assert record is not None
        context = internal_pb2.ConfChangeContext(member=record, is_promote=True)
        return await self._propose_conf_change(
            raft_pb2.ConfChange(
                type=raft_pb2.CONF_CHANGE_ADD_NODE,
                node_id=member_id,
                context=context.SerializeToString(),
            )
        )

    def _connected_voters(self, since_s: float) -> set[int]:
        """Voters this member has been connected to for at least `since_s` (itself included)."""
        now = time.monotonic()
        connected = {self.member_id}
        for voter in self.cluster.voters():
            up = self.peering.connected_since(voter)
            if up is not None and now - up >= since_s:
                connected.add(voter)
        return connected

    def _check_reconfig_add(self) -> None:
        """etcd's strict check: adding needs every voter connected for the last 5 s."""
        if not self.config.strict_reconfig_check:
            return
        voters = set(self.cluster.voters())
        if len(voters) > 1 and not voters <= self._connected_voters(RECONFIG_HEALTH_S):
            raise errors.UnhealthyError()

    def _check_reconfig_remove(self, member_id: int) -> None:
        """etcd's strict check: removing a voter must leave a connected quorum."""
        if not self.config.strict_reconfig_check:
            return
        voters = set(self.cluster.voters())
        if member_id not in voters:
            return
        remaining = voters - {member_id}
        connected = self._connected_voters(RECONFIG_HEALTH_S) & remaining
        if len(connected) < len(remaining) // 2 + 1:
            raise errors.UnhealthyError()

    def _check_learner_ready(self, member_id: int) -> None:
        """etcd: a learner is promotable once its match index is ≥ 90% of the leader's."""
        progress = self.node.status().progress
        leader = progress.get(self.member_id)
        learner = progress.get(member_id)
        if leader is None or learner is None or learner.match < 0.9 * leader.match:
            raise errors.LearnerNotReadyError()

    # --- queries used by the API ---------------------------------------------------------------

    def status(self) -> rpc_pb2.StatusResponse:
        response = rpc_pb2.StatusResponse(
            header=self.header(),
            version=ETCD_API_VERSION,
            dbSize=self.backend.size_bytes(),
            dbSizeInUse=self.backend.size_in_use_bytes(),
            leader=self.leader_id,
            raftIndex=self.committed_index,
            raftTerm=self.term,
            raftAppliedIndex=self.applied_index,
            isLearner=self.learner,
        )
        if self.leader_id == 0:
            response.errors.append(errors.NoLeaderError.default_message)
        for alarm in self.alarms.get():
            name = rpc_pb2.AlarmType.Name(alarm.alarm)
            response.errors.append(f"memberID:{alarm.memberID} alarm:{name} ")
        return response

    def run_in_thread(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        assert self._loop is not None
        return self._loop.run_in_executor(self._sync_executor, fn, *args)
