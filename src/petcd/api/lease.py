"""Lease service: Grant, Revoke, KeepAlive (stream), TimeToLive, Leases.

Grant and Revoke go through raft. KeepAlive and TimeToLive are answered by the leader's lessor,
which holds the real expiry times (etcd-api-facts §2.6: unknown lease → KeepAlive TTL 0,
TimeToLive TTL -1, both without error).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from petcd import errors
from petcd.api.kv import LEASE_GRANT_COST
from petcd.api.rpc import CallContext, Kind, Method, Send, require_leader
from petcd.pb import internal_pb2, rpc_pb2
from petcd.server.etcdserver import EtcdServer

SERVICE = "etcdserverpb.Lease"
_ID_MASK = (1 << 63) - 1


class LeaseService:
    def __init__(self, server: EtcdServer) -> None:
        self.server = server

    async def grant(
        self, req: rpc_pb2.LeaseGrantRequest, ctx: CallContext
    ) -> rpc_pb2.LeaseGrantResponse:
        server = self.server
        if server.leader_id == 0 and require_leader(ctx):
            raise errors.NoLeaderError()
        request = rpc_pb2.LeaseGrantRequest()
        request.CopyFrom(req)
        while request.ID == 0:
            request.ID = server.ids.next() & _ID_MASK
        if request.ID < 0:
            raise errors.LeaseNotFoundError()
        await server.check_quota(LEASE_GRANT_COST)
        response: rpc_pb2.LeaseGrantResponse = await server.propose(
            internal_pb2.InternalRaftRequest(lease_grant=request)
        )
        server.fill_header(response.header)
        return response

    async def revoke(
        self, req: rpc_pb2.LeaseRevokeRequest, ctx: CallContext
    ) -> rpc_pb2.LeaseRevokeResponse:
        server = self.server
        if server.leader_id == 0 and require_leader(ctx):
            raise errors.NoLeaderError()
        response: rpc_pb2.LeaseRevokeResponse = await server.propose(
            internal_pb2.InternalRaftRequest(lease_revoke=req)
        )
        server.fill_header(response.header)
        return response

    async def keep_alive(
        self,
        requests: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest],
        send: Send,
        ctx: CallContext,
    ) -> None:
        server = self.server
        if server.leader_id == 0 and require_leader(ctx):
            raise errors.NoLeaderError()
        hasleader = require_leader(ctx)
        async for request in requests:
            if hasleader and server.leaderless_too_long():
                raise errors.NoLeaderError()
            header = server.header()
            ttl = await server.lease_renew(request.ID)
            await send(rpc_pb2.LeaseKeepAliveResponse(header=header, ID=request.ID, TTL=ttl))

    async def time_to_live(
        self, req: rpc_pb2.LeaseTimeToLiveRequest, ctx: CallContext
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        server = self.server
        found = await server.lease_time_to_live(req.ID)
        response = rpc_pb2.LeaseTimeToLiveResponse(header=server.header(), ID=req.ID)
        if found is None:
            response.TTL = -1
            return response
        remaining, granted, keys = found
        response.TTL = remaining
        response.grantedTTL = granted
        if req.keys:
            response.keys.extend(keys)
        return response

    async def leases(
        self, req: rpc_pb2.LeaseLeasesRequest, ctx: CallContext
    ) -> rpc_pb2.LeaseLeasesResponse:
        server = self.server
        await server.linearizable_barrier()
        response = rpc_pb2.LeaseLeasesResponse(header=server.header())
        response.leases.extend(rpc_pb2.LeaseStatus(ID=i) for i in sorted(server.lessor.ids()))
        return response

    def methods(self) -> list[Method]:
        return [
            Method(
                SERVICE,
                "LeaseGrant",
                Kind.UNARY,
                rpc_pb2.LeaseGrantRequest,
                rpc_pb2.LeaseGrantResponse,
                self.grant,
            ),
            Method(
                SERVICE,
                "LeaseRevoke",
                Kind.UNARY,
                rpc_pb2.LeaseRevokeRequest,
                rpc_pb2.LeaseRevokeResponse,
                self.revoke,
            ),
            Method(
                SERVICE,
                "LeaseKeepAlive",
                Kind.BIDI_STREAM,
                rpc_pb2.LeaseKeepAliveRequest,
                rpc_pb2.LeaseKeepAliveResponse,
                self.keep_alive,
            ),
            Method(
                SERVICE,
                "LeaseTimeToLive",
                Kind.UNARY,
                rpc_pb2.LeaseTimeToLiveRequest,
                rpc_pb2.LeaseTimeToLiveResponse,
                self.time_to_live,
            ),
            Method(
                SERVICE,
                "LeaseLeases",
                Kind.UNARY,
                rpc_pb2.LeaseLeasesRequest,
                rpc_pb2.LeaseLeasesResponse,
                self.leases,
            ),
        ]
