"""`Transport`: connects this member to its peers (see the package docstring for the API).

Connections, all started by the member that has something to send:
- one STREAM_MESSAGES connection to each peer (OutboundPeer), carrying Batch frames;
- one STREAM_SNAPSHOT connection per snapshot transfer (snapshot.py);
- cached STREAM_RPC connections for peer calls (rpc.py).
So between two members A and B there are two message connections, A->B and B->A; each side
reads on the connections it accepted and writes on the ones it dialled.

The send path: `send()` encodes each message once and appends it to its peer's bounded queue,
and the first send of a loop iteration schedules `_flush` (call_soon), which writes each dirty
peer's queue as one frame and then reports the peers whose messages were dropped to raft
(`report_unreachable`, once per peer per iteration, outside the caller's raft step).

Accepted connections (`_Inbound`): Hello within hello_timeout_s, judged by `_judge_hello`
(protocol version, cluster id, the member the dialer expects, stream kind), answered with a
HelloAck; a refusal is logged and the connection closed after the answer is written. A newer
message connection from a member closes the older one, so per-peer order holds across
reconnects. Received raft messages go to `on_message` if they are addressed to this member and
come from the member that said Hello; others are dropped with a debug log.

Invariants:
- every task the transport starts is in `_tasks` and is cancelled and awaited by `stop()`;
  an unexpected exception in any of them (or in a protocol callback) is kept and re-raised
  by `stop()`: bugs do not vanish into a log;
- callbacks to the server (`on_message`, `on_snapshot`, `report_unreachable`,
  `report_snapshot`) are only called on the event loop, never from a worker thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import ssl
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from petcd.errors import (
    ClusterIdMismatchError,
    FrameError,
    PeerTimeoutError,
    PeerUnreachableError,
    PetcdError,
    TransportConfigError,
)
from petcd.pb import raft_pb2
from petcd.pb import transport_pb2 as tpb
from petcd.transport.faults import Faults
from petcd.transport.link import PROTOCOL_VERSION, Link, dial
from petcd.transport.peer import OutboundPeer
from petcd.transport.records import PeerStats, TransportLimits
from petcd.transport.rpc import Handler, RpcClient, RpcServerSession, result_of
from petcd.transport.snapshot import SnapshotReceiver, send_snapshot_stream
from petcd.transport.tls import TransportTLS
from petcd.transport.urls import PeerURL, parse_url, parse_urls

log = logging.getLogger("petcd.transport")

MSG_SNAP = raft_pb2.MSG_SNAP
#: Members we keep counters for without having been told about them (inbound only).
_STATS_UNKNOWN_MAX = 1024


def _ignore_unreachable(member_id: int) -> None:
    return None


def _ignore_snapshot(member_id: int, ok: bool) -> None:
    return None


class Transport:
    """This member's peer connections. Create, `await start(urls)`, use, `await stop()`."""

    def __init__(
        self,
        member_id: int,
        cluster_id: int,
        *,
        on_message: Callable[[raft_pb2.Message], None],
        on_snapshot: Callable[[raft_pb2.Message, str], None] | None = None,
        report_unreachable: Callable[[int], None] = _ignore_unreachable,
        report_snapshot: Callable[[int, bool], None] = _ignore_snapshot,
        snapshot_path_for: Callable[[int], str] | None = None,
        snapshot_source: Callable[[raft_pb2.Message], str | None] | None = None,
        tls: TransportTLS | None = None,
        rng: random.Random | None = None,
        limits: TransportLimits | None = None,
    ) -> None:
        assert member_id >= 0 and cluster_id >= 0
        assert (member_id == 0) == (cluster_id == 0), "ids are both known or both unknown"
        self.member_id = member_id
        self.cluster_id = cluster_id
        self.limits = limits or TransportLimits()
        self.limits.validate()
        self.rng = rng or random.Random()
        self.faults = Faults(self.rng)
        self.tls = tls
        self._server_ssl: ssl.SSLContext | None = None
        self._client_ssl: ssl.SSLContext | None = None
        if tls is not None:
            self._server_ssl = tls.server_context()
            self._client_ssl = tls.client_context()
        self._on_message = on_message
        self._on_snapshot = on_snapshot
        self._report_unreachable = report_unreachable
        self._report_snapshot = report_snapshot
        self._snapshot_path_for = snapshot_path_for
        self._snapshot_source = snapshot_source
        #: Counters per member id (peers we send to, and members that send to us).
        self.stats: dict[int, PeerStats] = {}
        #: Messages dropped because they named an unknown peer / were misaddressed to us.
        self.unknown_peer_drops = 0
        self.misaddressed_drops = 0
        self._peers: dict[int, OutboundPeer] = {}
        self._dirty: list[OutboundPeer] = []
        self._unreachable: set[int] = set()
        self._flush_scheduled = False
        self._handlers: dict[str, Handler] = {}
        self._rpc_clients: dict[tuple[str, int], RpcClient] = {}
        self._rpc_dials: dict[tuple[str, int], asyncio.Task[RpcClient]] = {}
        self._inbound: set[_Inbound] = set()
        self._message_inbound: dict[int, _Inbound] = {}
        self._snapshot_receivers = 0
        #: Files being received right now: a second stream for the same path is refused.
        self.receiving_paths: set[str] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._listen_urls: list[str] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._stopped = False

    # --- life cycle ----------------------------------------------------------------------------

    async def start(self, listen_urls: Sequence[str] = ()) -> list[str]:
        """Listen on `listen_urls` (port 0: any free port) and dial the peers added so far.

        Returns the URLs actually bound (with the real ports), also in `listen_urls`.
        """
        assert self._loop is None, "start() is called once"
        parsed = [parse_url(u, listen=True) for u in listen_urls]
        for url in parsed:
            if url.tls and self._server_ssl is None:
                raise TransportConfigError(f"{url} is https but no TLS settings were given")
        self._loop = asyncio.get_running_loop()
        self._executor = concurrent.futures.ThreadPoolExecutor(2, "petcd-transport-io")
        try:
            for url in parsed:
                await self._listen(url)
        except OSError as exc:
            await self.stop()
            raise TransportConfigError(f"cannot listen: {exc}") from None
        for peer in self._peers.values():
            self._start_peer(peer)
        return list(self._listen_urls)

    async def _listen(self, url: PeerURL) -> None:
        loop = self.loop
        context = self._server_ssl if url.tls else None
        server = await loop.create_server(
            self._accept,
            url.host,
            url.port,
            ssl=context,
            ssl_handshake_timeout=self.limits.hello_timeout_s if context is not None else None,
            reuse_address=True,
        )
        self._servers.append(server)
        for sock in server.sockets:
            host, port = sock.getsockname()[:2]
            bound = PeerURL(url.scheme, url.host if url.port else host, port)
            self._listen_urls.append(str(bound))
            log.info("listening for peers on %s", bound)

    async def stop(self) -> None:
        """Close everything and wait for every task; re-raises a bug found while running."""
        if self._stopped:
            return
        self._stopped = True
        for server in self._servers:
            server.close()
        for peer in self._peers.values():
            peer.close()
        for client in self._rpc_clients.values():
            client.close()
        for inbound in list(self._inbound):
            inbound.link.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("peer transport stopped")
        if self._failure is not None:
            raise self._failure

    def set_identity(self, member_id: int, cluster_id: int) -> None:
        """A joining member learns its ids (after fetching the member list by URL)."""
        assert member_id != 0 and cluster_id != 0
        assert self.member_id in (0, member_id) and self.cluster_id in (0, cluster_id)
        self.member_id = member_id
        self.cluster_id = cluster_id
        for client in self._rpc_clients.values():
            client.close()  # they said Hello without a cluster id
        self._rpc_clients.clear()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "the transport is not started"
        return self._loop

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        assert self._executor is not None, "the transport is not started"
        return self._executor

    @property
    def listen_urls(self) -> list[str]:
        return list(self._listen_urls)

    # --- peers ---------------------------------------------------------------------------------

    def add_peer(self, member_id: int, urls: Sequence[str]) -> None:
        """Start sending to `member_id` at `urls` (connected in the background)."""
        assert member_id != 0
        if member_id == self.member_id:
            raise TransportConfigError("a member is not its own peer")
        if member_id in self._peers:
            raise TransportConfigError(f"peer {member_id:x} was already added")
        peer = OutboundPeer(self, member_id, parse_urls(list(urls)), self.stats_for(member_id))
        self._peers[member_id] = peer
        if self._loop is not None and not self._stopped:
            self._start_peer(peer)

    def update_peer(self, member_id: int, urls: Sequence[str]) -> None:
        """New URLs for a peer; a connection to a URL no longer listed is closed."""
        peer = self._peers.get(member_id)
        if peer is None:
            raise TransportConfigError(f"peer {member_id:x} is not known")
        peer.urls = parse_urls(list(urls))
        if peer.connected_url is not None and peer.connected_url not in peer.urls:
            assert peer.link is not None
            peer.link.abort()
        self._drop_rpc_clients(member_id)

    def remove_peer(self, member_id: int) -> None:
        peer = self._peers.pop(member_id, None)
        if peer is None:
            return
        peer.close()
        self.stats.pop(member_id, None)
        self._drop_rpc_clients(member_id)
        inbound = self._message_inbound.pop(member_id, None)
        if inbound is not None:
            inbound.link.abort()

    def peers(self) -> dict[int, list[str]]:
        return {id_: [str(u) for u in peer.urls] for id_, peer in self._peers.items()}

    def active_since(self, member_id: int) -> float | None:
        """`time.monotonic()` when the message connection to the peer came up, or None."""
        peer = self._peers.get(member_id)
        if peer is None or self.faults.blocks_out(member_id):
            return None
        return peer.connected_since

    def last_error(self, member_id: int) -> str:
        """Why the last attempt to connect to the peer failed ("" once connected)."""
        peer = self._peers.get(member_id)
        return "" if peer is None else peer.last_error

    def reachable_peers(self) -> list[int]:
        blocked = self.faults.blocks_out
        return sorted(i for i, p in self._peers.items() if p.link is not None and not blocked(i))

    def queued_bytes(self, member_id: int) -> int:
        """Bytes held for a peer: its queue plus its connection's socket write buffer."""
        peer = self._peers.get(member_id)
        if peer is None:
            return 0
        link = peer.link
        return peer.items_bytes + (link.write_buffer_bytes if link is not None else 0)

    def stats_for(self, member_id: int) -> PeerStats:
        stats = self.stats.get(member_id)
        if stats is None:
            if len(self.stats) >= len(self._peers) + _STATS_UNKNOWN_MAX:
                return PeerStats()  # counted nowhere: bounded memory beats exact metrics
            stats = self.stats[member_id] = PeerStats()
        return stats

    def _start_peer(self, peer: OutboundPeer) -> None:
        assert peer.task is None
        peer.task = self.spawn(peer.run(), f"peer-{peer.label}")

    # --- sending raft messages (the hot path) --------------------------------------------------

    def send(self, messages: Sequence[raft_pb2.Message]) -> None:
        """Queue raft messages; never blocks, never raises. Drops are reported unreachable."""
        if self._stopped:
            return
        assert self._loop is not None, "start() the transport before sending"
        peers = self._peers
        faults = self.faults
        check_faults = faults.active()
        dirty = self._dirty
        unreachable = self._unreachable
        for m in messages:
            to = m.to
            if m.type == MSG_SNAP:
                self._route_snapshot(m)
                continue
            peer = peers.get(to)
            if peer is None:
                self.unknown_peer_drops += 1
                unreachable.add(to)
                log.debug("dropping a raft message to unknown peer %x", to)
                continue
            if check_faults:
                if faults.drops_message(to):
                    peer.stats.fault_drops += 1
                    continue
                if faults.delay_s > 0:
                    peer.delay(m.SerializeToString(), faults.delay_s)
                    continue
            if peer.enqueue(m.SerializeToString()):
                if len(peer.items) == 2:
                    dirty.append(peer)
            else:
                unreachable.add(to)
        if not self._flush_scheduled and (dirty or unreachable):
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def mark_dirty(self, peer: OutboundPeer) -> None:
        if peer not in self._dirty:
            self._dirty.append(peer)
        self._schedule_flush()

    def mark_unreachable(self, member_id: int) -> None:
        self._unreachable.add(member_id)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._stopped:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._stopped:
            return
        dirty = self._dirty
        self._dirty = []
        for peer in dirty:
            peer.flush()
        unreachable = self._unreachable
        if unreachable:
            self._unreachable = set()
            report = self._report_unreachable
            for member_id in unreachable:
                report(member_id)

    # --- snapshots -----------------------------------------------------------------------------

    def _route_snapshot(self, message: raft_pb2.Message) -> None:
        source = self._snapshot_source
        db_path = source(message) if source is not None else None
        if db_path is None:
            log.warning("MSG_SNAP to %x came through send() with no snapshot file", message.to)
            self.report_snapshot_result(message.to, False)
            return
        self.send_snapshot(message, db_path)

    def send_snapshot(self, message: raft_pb2.Message, db_path: str) -> None:
        """Stream `db_path` (a consistent backend copy) with MSG_SNAP `message` to its peer.

        Never blocks, never raises; `report_snapshot(peer, ok)` follows when the transfer ends.
        At most one transfer per peer: a MSG_SNAP while one is in flight is dropped (the one in
        flight will report). The file is only read; deleting it afterwards is the caller's job.
        """
        assert message.type == MSG_SNAP
        if self._stopped:
            return
        peer = self._peers.get(message.to)
        if peer is None or self.faults.blocks_out(message.to):
            reason = "unknown peer" if peer is None else "partitioned (fault injection)"
            log.info("snapshot to %x not sent: %s", message.to, reason)
            self.report_snapshot_result(message.to, False)
            return
        if peer.snapshot_task is not None and not peer.snapshot_task.done():
            log.info("a snapshot to peer %s is already in flight; dropping this one", peer.label)
            return
        task = self.spawn(send_snapshot_stream(self, peer, message, db_path), "snapshot-send")
        peer.snapshot_task = task

    def report_snapshot_result(self, member_id: int, ok: bool) -> None:
        """Tell raft how a transfer ended, from a fresh loop iteration (not inside send())."""
        self.loop.call_soon(self._report_snapshot_now, member_id, ok)

    def _report_snapshot_now(self, member_id: int, ok: bool) -> None:
        if not self._stopped:
            self._report_snapshot(member_id, ok)

    def snapshot_path_for(self, index: int) -> str:
        assert self._snapshot_path_for is not None
        path = self._snapshot_path_for(index)
        assert path, "snapshot_path_for returned no path"
        return path

    def deliver_snapshot(self, message: raft_pb2.Message, path: str) -> None:
        assert self._on_snapshot is not None
        self._on_snapshot(message, path)

    # --- peer RPC ------------------------------------------------------------------------------

    def register(self, method: str, handler: Handler) -> None:
        """Serve `method`: `handler(payload) -> payload`, cancelled at the caller's timeout."""
        assert method, "a method needs a name"
        if method in self._handlers:
            raise TransportConfigError(f"peer RPC method {method!r} is already registered")
        self._handlers[method] = handler

    def handler_for(self, method: str) -> Handler | None:
        return self._handlers.get(method)

    async def call(
        self, target: int | str, method: str, payload: bytes = b"", timeout_s: float = 5.0
    ) -> bytes:
        """Call `method` on a peer (by member id, or by peer URL before its id is known)."""
        assert timeout_s > 0
        assert method
        urls, expected, member_id, label = self._resolve(target)
        if member_id and self.faults.blocks_out(member_id):
            raise PeerUnreachableError(label, "partitioned (fault injection)")
        if len(payload) + 256 > self.limits.frame_bytes_max:
            raise FrameError(f"a call payload of {len(payload)} bytes exceeds the frame limit")
        try:
            async with asyncio.timeout(timeout_s):
                client = await self._rpc_client(urls, expected)
                response = await client.request(method, payload, timeout_s)
        except TimeoutError:
            raise PeerTimeoutError(label, method, timeout_s) from None
        return result_of(label, method, response)

    def _resolve(self, target: int | str) -> tuple[tuple[PeerURL, ...], int, int, str]:
        """(URLs, member the handshake must reach or 0, member for fault checks, label)."""
        if isinstance(target, int):
            peer = self._peers.get(target)
            if peer is None:
                raise PeerUnreachableError(f"{target:x}", "not a known peer")
            return peer.urls, target, target, peer.label
        url = parse_url(target)
        # By URL, whoever listens there answers; a partition still applies to a known peer's URL.
        for id_, peer in self._peers.items():
            if url in peer.urls:
                return (url,), 0, id_, str(url)
        return (url,), 0, 0, str(url)

    async def _rpc_client(self, urls: tuple[PeerURL, ...], expected: int) -> RpcClient:
        last: Exception | None = None
        for url in urls:  # bounded: a peer has few URLs
            key = (str(url), expected)
            client = self._rpc_clients.get(key)
            if client is not None and client.usable:
                return client
            dialling = self._rpc_dials.get(key)
            if dialling is None:
                dialling = self.spawn(self._dial_rpc(url, expected), "rpc-dial")
                self._rpc_dials[key] = dialling
            try:
                return await asyncio.shield(dialling)
            except ClusterIdMismatchError:
                raise  # every URL of a member is in the same cluster
            except PetcdError as exc:  # unreachable, refused, misconfigured: try the next URL
                last = exc
        assert last is not None
        raise last

    async def _dial_rpc(self, url: PeerURL, expected: int) -> RpcClient:
        key = (str(url), expected)
        try:
            link, _ack = await self.dial(url, tpb.STREAM_RPC, expected)
        finally:
            self._rpc_dials.pop(key, None)
        label = f"{expected:x}" if expected else str(url)
        client = RpcClient(label, link, self.limits.rpc_inflight_max)
        if len(self._rpc_clients) >= self.limits.rpc_clients_max:
            oldest = next(iter(self._rpc_clients))
            self._rpc_clients.pop(oldest).close()
        previous = self._rpc_clients.pop(key, None)
        if previous is not None:
            previous.close()
        self._rpc_clients[key] = client
        return client

    def _drop_rpc_clients(self, member_id: int) -> None:
        for key in [k for k in self._rpc_clients if k[1] == member_id]:
            self._rpc_clients.pop(key).close()

    # --- shared helpers ------------------------------------------------------------------------

    async def dial(self, url: PeerURL, kind: int, to: int) -> tuple[Link, tpb.HelloAck]:
        hello = tpb.Hello(
            protocol_version=PROTOCOL_VERSION,
            kind=kind,  # type: ignore[arg-type]
            member_id=self.member_id,
            cluster_id=self.cluster_id,
            to=to,
        )
        limits = self.limits
        link, ack = await dial(
            url,
            hello,
            ssl_context=self._client_ssl,
            timeout_s=limits.connect_timeout_s,
            frame_bytes_max=limits.frame_bytes_max,
            stall_timeout_s=limits.write_stall_timeout_s,
            on_failure=self.record_failure,
        )
        transport = link.transport
        assert transport is not None
        transport.set_write_buffer_limits(high=limits.write_buffer_high_bytes)
        return link, ack

    def backoff_s(self, attempt: int) -> float:
        """Reconnect delay after `attempt` failures: doubling, capped, jittered by the rng."""
        assert attempt >= 0
        limits = self.limits
        base = min(limits.backoff_max_s, limits.backoff_initial_s * float(1 << attempt))
        delay = base * (0.5 + 0.5 * self.rng.random())
        assert 0 < delay <= limits.backoff_max_s
        return delay

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        # A failed RPC dial is an expected outcome: its callers got the error (or gave up).
        expected = isinstance(exc, PetcdError) and task.get_name() == "rpc-dial"
        if exc is not None and not expected:
            log.error("transport task %s failed", task.get_name(), exc_info=exc)
            self.record_failure(exc)

    def record_failure(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc

    # --- accepted connections ------------------------------------------------------------------

    def _accept(self) -> Link:
        limits = self.limits
        return Link(
            "(accepted)",
            limits.frame_bytes_max,
            self.record_failure,
            limits.write_stall_timeout_s,
            on_made=self._accepted,
        )

    def _accepted(self, link: Link) -> None:
        transport = link.transport
        assert transport is not None
        peername = transport.get_extra_info("peername")
        link.label = f"from {peername[0]}:{peername[1]}" if peername else "(accepted)"
        if self._stopped or len(self._inbound) >= self.limits.inbound_connections_max:
            link.abort()
            return
        tls = self.tls
        if tls is not None and transport.get_extra_info("sslcontext") is not None:
            allowed = tls.common_name_allowed(transport.get_extra_info("peercert"))
            if not allowed:
                log.warning("refusing peer connection %s: certificate CN not allowed", link.label)
                link.abort()
                return
        inbound = _Inbound(self, link)
        link.handler = inbound
        self._inbound.add(inbound)
        inbound.hello_timer = self.loop.call_later(self.limits.hello_timeout_s, inbound.no_hello)

    def inbound_lost(self, inbound: _Inbound) -> None:
        self._inbound.discard(inbound)
        if self._message_inbound.get(inbound.member_id) is inbound:
            del self._message_inbound[inbound.member_id]
        if inbound.kind == tpb.STREAM_SNAPSHOT:
            self._snapshot_receivers -= 1
            assert self._snapshot_receivers >= 0

    def hello_received(self, inbound: _Inbound, hello: tpb.Hello) -> None:
        refusal, reason = self._judge_hello(hello)
        ack = tpb.HelloAck(
            protocol_version=PROTOCOL_VERSION,
            member_id=self.member_id,
            cluster_id=self.cluster_id,
            refusal=refusal,  # type: ignore[arg-type]
            reason=reason,
        )
        link = inbound.link
        link.write_frame(tpb.Frame(hello_ack=ack))
        if refusal != tpb.REFUSAL_NONE:
            level = logging.ERROR if refusal == tpb.REFUSAL_CLUSTER_ID_MISMATCH else logging.WARNING
            log.log(level, "refused peer connection %s: %s", link.label, reason)
            link.close()
            return
        inbound.kind = hello.kind
        inbound.member_id = hello.member_id
        if hello.member_id:
            link.label = f"{hello.member_id:x} ({link.label})"
        if hello.kind == tpb.STREAM_MESSAGES:
            older = self._message_inbound.get(hello.member_id)
            if older is not None:
                older.link.abort()  # order across reconnects: only the newest stream counts
            self._message_inbound[hello.member_id] = inbound
            inbound.stats = self.stats_for(hello.member_id)
        elif hello.kind == tpb.STREAM_SNAPSHOT:
            self._snapshot_receivers += 1
            inbound.session = SnapshotReceiver(self, link, hello.member_id)
        else:
            inbound.session = RpcServerSession(self, link, hello.member_id)

    def _judge_hello(self, hello: tpb.Hello) -> tuple[int, str]:
        """(refusal, reason) for a Hello; REFUSAL_NONE accepts it."""
        if hello.protocol_version != PROTOCOL_VERSION:
            return tpb.REFUSAL_PROTOCOL_VERSION, (
                f"protocol version {hello.protocol_version}, this member speaks {PROTOCOL_VERSION}"
            )
        kind = hello.kind
        if kind not in (tpb.STREAM_MESSAGES, tpb.STREAM_SNAPSHOT, tpb.STREAM_RPC):
            return tpb.REFUSAL_BAD_HELLO, f"unknown stream kind {kind}"
        raft_stream = kind != tpb.STREAM_RPC
        if raft_stream and hello.member_id == 0:
            return tpb.REFUSAL_BAD_HELLO, "a raft stream needs the sender's member id"
        if hello.member_id and hello.member_id == self.member_id:
            return tpb.REFUSAL_BAD_HELLO, f"member {self.member_id:x} dialled itself"
        if raft_stream and self.member_id == 0:
            return tpb.REFUSAL_NOT_READY, "this member does not know its member id yet"
        mine, theirs = self.cluster_id, hello.cluster_id
        if (raft_stream or (mine and theirs)) and mine != theirs:
            return tpb.REFUSAL_CLUSTER_ID_MISMATCH, (
                f"cluster ID mismatch: peer {hello.member_id:x} is in cluster {theirs:x}, "
                f"this member {self.member_id:x} is in cluster {mine:x}"
            )
        if hello.to and hello.to != self.member_id:
            return tpb.REFUSAL_WRONG_MEMBER, (
                f"this is member {self.member_id:x}, not member {hello.to:x}"
            )
        if kind == tpb.STREAM_SNAPSHOT:
            return self._judge_snapshot(hello.member_id)
        return tpb.REFUSAL_NONE, ""

    def _judge_snapshot(self, sender: int) -> tuple[int, str]:
        if self._on_snapshot is None or self._snapshot_path_for is None:
            return tpb.REFUSAL_NOT_READY, "this member does not accept snapshots"
        if self.faults.blocks_in(sender):
            return tpb.REFUSAL_BUSY, "partitioned (fault injection)"
        if self._snapshot_receivers >= self.limits.snapshot_streams_max:
            return tpb.REFUSAL_BUSY, "too many snapshot streams at once"
        return tpb.REFUSAL_NONE, ""

    def batch_received(self, inbound: _Inbound, batch: tpb.Batch, size_bytes: int) -> None:
        sender = inbound.member_id
        stats = inbound.stats
        assert stats is not None
        stats.received_bytes += size_bytes
        stats.received_frames += 1
        messages = batch.messages
        if self.faults.blocks_in(sender):
            stats.fault_drops += len(messages)
            return
        me = self.member_id
        on_message = self._on_message
        delivered = 0
        for m in messages:
            if m.to != me or m.from_ != sender:
                self.misaddressed_drops += 1
                log.debug("dropping a raft message %x->%x on %x's stream", m.from_, m.to, sender)
                continue
            on_message(m)
            delivered += 1
        stats.received_messages += delivered


class _Inbound:
    """The handler of an accepted connection: Hello first, then by stream kind."""

    __slots__ = ("hello_timer", "kind", "link", "member_id", "owner", "session", "stats")

    def __init__(self, owner: Transport, link: Link) -> None:
        self.owner = owner
        self.link = link
        self.kind = 0
        self.member_id = 0
        self.stats: PeerStats | None = None
        self.session: SnapshotReceiver | RpcServerSession | None = None
        self.hello_timer: asyncio.TimerHandle | None = None

    def frame_received(self, frame: tpb.Frame, size_bytes: int) -> None:
        if self.kind == tpb.STREAM_MESSAGES:
            if frame.WhichOneof("body") != "batch":
                raise FrameError(f"unexpected {frame.WhichOneof('body')} on a message stream")
            self.owner.batch_received(self, frame.batch, size_bytes)
        elif self.session is not None:
            self.session.frame_received(frame, size_bytes)
        elif self.kind == 0 and frame.WhichOneof("body") == "hello":
            if self.hello_timer is not None:
                self.hello_timer.cancel()
                self.hello_timer = None
            self.owner.hello_received(self, frame.hello)
        else:
            raise FrameError(f"expected hello, got {frame.WhichOneof('body')}")

    def link_lost(self, exc: Exception | None) -> None:
        if self.hello_timer is not None:
            self.hello_timer.cancel()
            self.hello_timer = None
        self.owner.inbound_lost(self)
        if self.session is not None:
            self.session.link_lost(exc)

    def no_hello(self) -> None:
        self.hello_timer = None
        if self.kind == 0:
            log.warning("closing peer connection %s: no hello", self.link.label)
            self.link.abort()
