"""Peering: how a member talks to the rest of its cluster through petcd.transport.

- raft messages out (`send`) and in (`on_message` → `EtcdServer.step`), unreachable peers and
  snapshot outcomes reported to raft;
- snapshots to followers: raft's MSG_SNAP carries only metadata; the leader streams a consistent
  copy of its backend beside it (etcd's merged snapshot), made in a worker thread and deleted
  once the transfer is reported; a follower receives the copy as `snap/<index>.snap.db` and
  only then steps the message, so installing the snapshot finds the data on disk;
- peer RPCs: `members` (the member list, for a member joining with
  --initial-cluster-state existing), `lease.renew` / `lease.ttl` (followers forward lease
  keep-alives and TTL queries to the leader), `member.promote` (forwarded to the leader),
  `hashkv` (the corruption check) and, only with --experimental-peer-fault-injection,
  `debug.faults` (tests partition members of a running cluster through it);
- the peer list follows membership: every applied conf change updates the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
from typing import TYPE_CHECKING, Any

from petcd import errors
from petcd.pb import raft_pb2, rpc_pb2
from petcd.transport import Transport, TransportTLS

if TYPE_CHECKING:
    from petcd.server.etcdserver import EtcdServer

log = logging.getLogger("petcd.peering")

#: How long a joining member keeps asking the existing members for the member list.
JOIN_TIMEOUT_S = 30.0


def peer_tls(config: Any) -> TransportTLS | None:
    if not config.peer_cert_file:
        return None
    return TransportTLS(
        cert_file=str(config.peer_cert_file),
        key_file=str(config.peer_key_file),
        trusted_ca_file=str(config.peer_trusted_ca_file),
        client_cert_auth=bool(config.peer_client_cert_auth),
    )


class Peering:
    def __init__(self, server: EtcdServer) -> None:
        self.server = server
        config = server.config
        self.transport = Transport(
            0,
            0,
            on_message=self._on_message,
            on_snapshot=self._on_snapshot,
            report_unreachable=self._report_unreachable,
            report_snapshot=self._report_snapshot,
            snapshot_path_for=self._snapshot_path_for,
            tls=peer_tls(config),
            rng=random.Random(int.from_bytes(os.urandom(8), "big")),
        )
        self._outgoing_snapshots: dict[int, str] = {}
        self._snapshot_tasks: set[asyncio.Task[None]] = set()
        self.transport.register("members", self._rpc_members)
        self.transport.register("lease.renew", self._rpc_lease_renew)
        self.transport.register("lease.ttl", self._rpc_lease_ttl)
        self.transport.register("member.promote", self._rpc_member_promote)
        self.transport.register("hashkv", self._rpc_hashkv)
        self.transport.register("member.removed", self._rpc_member_removed)
        if config.experimental_peer_fault_injection:
            self.transport.register("debug.faults", self._rpc_faults)

    async def start(self) -> None:
        urls = [u for u in self.server.config.listen_peer_urls]
        await self.transport.start(urls)

    async def stop(self) -> None:
        for task in list(self._snapshot_tasks):
            task.cancel()
        await self.transport.stop()
        for path in self._outgoing_snapshots.values():
            with contextlib.suppress(OSError):
                os.unlink(path)

    def set_identity(self, member_id: int, cluster_id: int) -> None:
        self.transport.set_identity(member_id, cluster_id)

    # --- joining an existing cluster --------------------------------------------------------

    async def fetch_members(
        self, urls: list[str], own_peer_urls: list[str]
    ) -> rpc_pb2.MemberListResponse:
        """Ask existing members (by URL) for the member list; the first answer wins."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + JOIN_TIMEOUT_S
        last_error = "no other member in --initial-cluster"
        while loop.time() < deadline:
            for url in urls:
                if url in own_peer_urls:
                    continue
                try:
                    raw = await self.transport.call(url, "members", b"", timeout_s=2.0)
                except errors.PetcdError as exc:
                    last_error = f"{url}: {exc.message}"
                    continue
                return rpc_pb2.MemberListResponse.FromString(raw)
            await asyncio.sleep(0.5)
        raise errors.StorageError(
            f"petcd: cannot fetch the cluster's members to join it ({last_error})"
        )

    # --- raft traffic -----------------------------------------------------------------------

    def send(self, messages: list[raft_pb2.Message]) -> None:
        plain = []
        for message in messages:
            if message.type == raft_pb2.MSG_SNAP:
                self._start_snapshot(message)
            else:
                plain.append(message)
        if plain:
            self.transport.send(plain)

    def _on_message(self, message: raft_pb2.Message) -> None:
        self.server.step(message)

    def _report_unreachable(self, member_id: int) -> None:
        self.server.report_unreachable(member_id)

    def _snapshot_path_for(self, index: int) -> str:
        return os.path.join(self.server.paths.snap_dir, f"{index:016x}.snap.db")

    def _on_snapshot(self, message: raft_pb2.Message, path: str) -> None:
        assert path == self._snapshot_path_for(message.snapshot.metadata.index)
        log.info("received snapshot", extra={"index": message.snapshot.metadata.index})
        self.server.step(message)

    def _start_snapshot(self, message: raft_pb2.Message) -> None:
        peer = message.to
        if peer in self._outgoing_snapshots:
            # One transfer per follower at a time: raft retries after the report.
            self.server.report_snapshot(peer, False)
            return
        task = asyncio.get_running_loop().create_task(self._send_snapshot(message))
        self._snapshot_tasks.add(task)
        task.add_done_callback(self._snapshot_tasks.discard)

    async def _send_snapshot(self, message: raft_pb2.Message) -> None:
        """Copy the backend (worker thread), then stream it with the message."""
        peer = message.to
        path = os.path.join(
            self.server.paths.snap_dir, f"send-{peer:x}-{message.snapshot.metadata.index:x}.db"
        )
        self._outgoing_snapshots[peer] = path
        try:
            await self.server.run_in_thread(self.server.backend.copy_to, path)
            self.server.backend.release_copy(path)
        except Exception as exc:
            log.warning("cannot copy the backend for a snapshot: %s", exc)
            self._outgoing_snapshots.pop(peer, None)
            with contextlib.suppress(OSError):
                os.unlink(path)
            self.server.report_snapshot(peer, False)
            return
        log.info("sending snapshot", extra={"to": f"{peer:x}", "bytes": os.path.getsize(path)})
        self.transport.send_snapshot(message, path)

    def _report_snapshot(self, member_id: int, ok: bool) -> None:
        path = self._outgoing_snapshots.pop(member_id, None)
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.server.report_snapshot(member_id, ok)

    # --- membership -------------------------------------------------------------------------

    def sync_peers(self) -> None:
        """Make the transport's peers the cluster's members (but ourselves)."""
        cluster = self.server.cluster
        wanted = {m.id: list(m.peer_urls) for m in cluster.members.values()}
        wanted.pop(self.server.member_id, None)
        current = self.transport.peers()
        for member_id in current.keys() - wanted.keys():
            self.transport.remove_peer(member_id)
        for member_id, urls in wanted.items():
            if member_id not in current:
                self.transport.add_peer(member_id, urls)
            elif sorted(current[member_id]) != sorted(urls):
                self.transport.update_peer(member_id, urls)

    def connected_since(self, member_id: int) -> float | None:
        return self.transport.active_since(member_id)

    # --- forwarding to the leader -----------------------------------------------------------

    async def call_leader(self, method: str, payload: bytes, timeout_s: float) -> bytes:
        leader = self.server.leader_id
        if leader == 0:
            raise errors.NoLeaderError()
        try:
            return await self.transport.call(leader, method, payload, timeout_s=timeout_s)
        except errors.PeerTimeoutError:
            raise errors.RequestTimeoutError() from None
        except errors.TransportError:
            raise errors.TimeoutDueToConnectionLostError() from None

    async def _rpc_members(self, payload: bytes) -> bytes:
        server = self.server
        response = rpc_pb2.MemberListResponse(members=server.cluster.to_pb())
        response.header.cluster_id = server.cluster_id
        response.header.member_id = server.member_id
        return bytes(response.SerializeToString())

    async def _rpc_lease_renew(self, payload: bytes) -> bytes:
        request = rpc_pb2.LeaseKeepAliveRequest.FromString(payload)
        ttl = await self.server.lease_renew(request.ID)
        return bytes(rpc_pb2.LeaseKeepAliveResponse(ID=request.ID, TTL=ttl).SerializeToString())

    async def _rpc_lease_ttl(self, payload: bytes) -> bytes:
        request = rpc_pb2.LeaseTimeToLiveRequest.FromString(payload)
        found = await self.server.lease_time_to_live(request.ID)
        response = rpc_pb2.LeaseTimeToLiveResponse(ID=request.ID, TTL=-1)
        if found is not None:
            response.TTL, response.grantedTTL, keys = found
            response.keys.extend(keys)
        return bytes(response.SerializeToString())

    async def _rpc_member_promote(self, payload: bytes) -> bytes:
        request = rpc_pb2.MemberPromoteRequest.FromString(payload)
        members = await self.server.member_promote(request.ID)
        return bytes(rpc_pb2.MemberPromoteResponse(members=members).SerializeToString())

    async def peer_hash_kv(self, peer: int, revision: int) -> rpc_pb2.HashKVResponse:
        raw = await self.transport.call(
            peer,
            "hashkv",
            rpc_pb2.HashKVRequest(revision=revision).SerializeToString(),
            timeout_s=5.0,
        )
        return rpc_pb2.HashKVResponse.FromString(raw)

    async def _rpc_hashkv(self, payload: bytes) -> bytes:
        request = rpc_pb2.HashKVRequest.FromString(payload)
        value, compact_revision, revision = await self.server.hash_kv(request.revision)
        response = rpc_pb2.HashKVResponse(hash=value, compact_revision=compact_revision)
        response.header.member_id = self.server.member_id
        response.header.revision = revision
        return bytes(response.SerializeToString())

    async def _rpc_member_removed(self, payload: bytes) -> bytes:
        member = int.from_bytes(payload, "big")
        return b"1" if member in self.server.cluster.removed else b"0"

    async def check_removed(self) -> bool:
        """Ask the peers whether this member was removed (it may never apply its removal:
        the leader stops replicating to a removed member)."""
        me = self.server.member_id.to_bytes(8, "big")
        for peer in list(self.transport.peers()):
            try:
                answer = await self.transport.call(peer, "member.removed", me, timeout_s=1.0)
            except errors.PetcdError:
                continue
            if answer == b"1":
                return True
        return False

    async def _rpc_faults(self, payload: bytes) -> bytes:
        """Test hook (--experimental-peer-fault-injection): change this member's faults."""
        spec = json.loads(payload)
        faults = self.transport.faults
        if "partition" in spec:
            faults.partition(set(spec["partition"]), spec.get("direction", "both"))
        if spec.get("heal"):
            faults.heal()
        if "drop_rate" in spec:
            faults.drop_rate = float(spec["drop_rate"])
        if "delay_s" in spec:
            faults.delay_s = float(spec["delay_s"])
        return b"{}"
