"""Maintenance service: Alarm, Status, Defragment, Hash, HashKV, Snapshot, MoveLeader, Downgrade.

Header quirks kept from etcd (etcd-api-facts §2.6): Defragment, MoveLeader and every Snapshot
response carry no header.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile

from petcd import ETCD_API_VERSION, errors
from petcd.api.rpc import CallContext, Kind, Method, Send
from petcd.pb import internal_pb2, rpc_pb2
from petcd.server.etcdserver import EtcdServer

SERVICE = "etcdserverpb.Maintenance"
SNAPSHOT_CHUNK_BYTES = 32 * 1024
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?$")


class MaintenanceService:
    def __init__(self, server: EtcdServer) -> None:
        self.server = server
        self.downgrade_target = ""

    async def alarm(self, req: rpc_pb2.AlarmRequest, ctx: CallContext) -> rpc_pb2.AlarmResponse:
        server = self.server
        if req.action == rpc_pb2.AlarmRequest.GET:
            response = rpc_pb2.AlarmResponse(header=server.header())
            response.alarms.extend(server.alarms.get(req.alarm))
            return response
        result: rpc_pb2.AlarmResponse = await server.propose(
            internal_pb2.InternalRaftRequest(alarm=req)
        )
        server.fill_header(result.header)
        return result

    async def status(self, req: rpc_pb2.StatusRequest, ctx: CallContext) -> rpc_pb2.StatusResponse:
        return self.server.status()

    async def defragment(
        self, req: rpc_pb2.DefragmentRequest, ctx: CallContext
    ) -> rpc_pb2.DefragmentResponse:
        await self.server.defragment()
        return rpc_pb2.DefragmentResponse()

    async def hash(self, req: rpc_pb2.HashRequest, ctx: CallContext) -> rpc_pb2.HashResponse:
        server = self.server
        value = server.store.hash()
        return rpc_pb2.HashResponse(header=server.header(), hash=value)

    async def hash_kv(self, req: rpc_pb2.HashKVRequest, ctx: CallContext) -> rpc_pb2.HashKVResponse:
        server = self.server
        value, compact_revision, revision = await server.hash_kv(req.revision)
        return rpc_pb2.HashKVResponse(
            header=server.header(revision), hash=value, compact_revision=compact_revision
        )

    async def snapshot(self, req: rpc_pb2.SnapshotRequest, send: Send, ctx: CallContext) -> None:
        """The backend as one consistent copy in 32 KiB chunks, then its SHA-256 (etcd)."""
        server = self.server
        fd, path = tempfile.mkstemp(prefix="petcd-snapshot-", dir=server.paths.snap_dir)
        os.close(fd)
        try:
            await server.run_in_thread(server.backend.copy_to, path)
            server.backend.release_copy(path)  # not swapped in: stop journaling for it
            size = os.path.getsize(path)
            digest = hashlib.sha256()
            sent = 0
            with open(path, "rb") as f:
                while True:
                    chunk = await server.run_in_thread(f.read, SNAPSHOT_CHUNK_BYTES)
                    if not chunk:
                        break
                    sent += len(chunk)
                    digest.update(chunk)
                    await send(rpc_pb2.SnapshotResponse(remaining_bytes=size - sent, blob=chunk))
            assert sent == size, "the copy does not change while it is streamed"
            await send(rpc_pb2.SnapshotResponse(remaining_bytes=0, blob=digest.digest()))
        finally:
            os.unlink(path)

    async def move_leader(
        self, req: rpc_pb2.MoveLeaderRequest, ctx: CallContext
    ) -> rpc_pb2.MoveLeaderResponse:
        await self.server.move_leader(req.targetID)
        return rpc_pb2.MoveLeaderResponse()

    async def downgrade(
        self, req: rpc_pb2.DowngradeRequest, ctx: CallContext
    ) -> rpc_pb2.DowngradeResponse:
        """etcd 3.5's checks: the only allowed target is the cluster's minor version − 1."""
        server = self.server
        cluster_version = ETCD_API_VERSION
        action = req.action
        if action in (rpc_pb2.DowngradeRequest.VALIDATE, rpc_pb2.DowngradeRequest.ENABLE):
            match = _VERSION.match(req.version)
            if match is None:
                raise errors.WrongDowngradeVersionFormatError()
            major, minor = int(match.group(1)), int(match.group(2))
            current_major, current_minor = (int(p) for p in cluster_version.split(".")[:2])
            if (major, minor) != (current_major, current_minor - 1):
                raise errors.InvalidDowngradeTargetVersionError()
            if action == rpc_pb2.DowngradeRequest.ENABLE:
                if self.downgrade_target:
                    raise errors.DowngradeInProcessError()
                self.downgrade_target = f"{major}.{minor}.0"
        elif action == rpc_pb2.DowngradeRequest.CANCEL:
            if not self.downgrade_target:
                raise errors.NoInflightDowngradeError()
            self.downgrade_target = ""
        return rpc_pb2.DowngradeResponse(header=server.header(), version=cluster_version)

    def methods(self) -> list[Method]:
        def unary(name: str, req: type, resp: type, handler: object) -> Method:
            return Method(SERVICE, name, Kind.UNARY, req, resp, handler)  # type: ignore[arg-type]

        return [
            unary("Alarm", rpc_pb2.AlarmRequest, rpc_pb2.AlarmResponse, self.alarm),
            unary("Status", rpc_pb2.StatusRequest, rpc_pb2.StatusResponse, self.status),
            unary(
                "Defragment",
                rpc_pb2.DefragmentRequest,
                rpc_pb2.DefragmentResponse,
                self.defragment,
            ),
            unary("Hash", rpc_pb2.HashRequest, rpc_pb2.HashResponse, self.hash),
            unary("HashKV", rpc_pb2.HashKVRequest, rpc_pb2.HashKVResponse, self.hash_kv),
            Method(
                SERVICE,
                "Snapshot",
                Kind.SERVER_STREAM,
                rpc_pb2.SnapshotRequest,
                rpc_pb2.SnapshotResponse,
                self.snapshot,
            ),
            unary(
                "MoveLeader",
                rpc_pb2.MoveLeaderRequest,
                rpc_pb2.MoveLeaderResponse,
                self.move_leader,
            ),
            unary(
                "Downgrade",
                rpc_pb2.DowngradeRequest,
                rpc_pb2.DowngradeResponse,
                self.downgrade,
            ),
        ]
