"""Cluster service: MemberAdd, MemberRemove, MemberUpdate, MemberList, MemberPromote.

Cluster RPC headers carry cluster_id, member_id and raft_term but revision 0 (etcd).
"""

from __future__ import annotations

import urllib.parse

from petcd import errors
from petcd.api.rpc import CallContext, Kind, Method
from petcd.pb import rpc_pb2
from petcd.server.etcdserver import EtcdServer

SERVICE = "etcdserverpb.Cluster"


def check_peer_urls(urls: list[str]) -> list[str]:
    """etcd: URLs must parse, use http/https/unix/unixs, name host:port, and have no path."""
    if not urls:
        raise errors.MemberBadURLsError()
    for url in urls:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https", "unix", "unixs"):
            raise errors.MemberBadURLsError()
        if not parsed.hostname or parsed.path not in ("", "/"):
            raise errors.MemberBadURLsError()
        try:
            port = parsed.port
        except ValueError:
            raise errors.MemberBadURLsError() from None
        if port is None:
            raise errors.MemberBadURLsError()
    return urls


class ClusterService:
    def __init__(self, server: EtcdServer) -> None:
        self.server = server

    def _header(self) -> rpc_pb2.ResponseHeader:
        return self.server.header(revision=0)

    async def member_add(
        self, req: rpc_pb2.MemberAddRequest, ctx: CallContext
    ) -> rpc_pb2.MemberAddResponse:
        urls = check_peer_urls(list(req.peerURLs))
        member, members = await self.server.member_add(urls, req.isLearner)
        return rpc_pb2.MemberAddResponse(header=self._header(), member=member, members=members)

    async def member_remove(
        self, req: rpc_pb2.MemberRemoveRequest, ctx: CallContext
    ) -> rpc_pb2.MemberRemoveResponse:
        members = await self.server.member_remove(req.ID)
        return rpc_pb2.MemberRemoveResponse(header=self._header(), members=members)

    async def member_update(
        self, req: rpc_pb2.MemberUpdateRequest, ctx: CallContext
    ) -> rpc_pb2.MemberUpdateResponse:
        urls = check_peer_urls(list(req.peerURLs))
        members = await self.server.member_update(req.ID, urls)
        return rpc_pb2.MemberUpdateResponse(header=self._header(), members=members)

    async def member_list(
        self, req: rpc_pb2.MemberListRequest, ctx: CallContext
    ) -> rpc_pb2.MemberListResponse:
        server = self.server
        if req.linearizable:
            await server.linearizable_barrier()
        return rpc_pb2.MemberListResponse(header=self._header(), members=server.cluster.to_pb())

    async def member_promote(
        self, req: rpc_pb2.MemberPromoteRequest, ctx: CallContext
    ) -> rpc_pb2.MemberPromoteResponse:
        members = await self.server.member_promote(req.ID)
        return rpc_pb2.MemberPromoteResponse(header=self._header(), members=members)

    def methods(self) -> list[Method]:
        return [
            Method(
                SERVICE,
                "MemberAdd",
                Kind.UNARY,
                rpc_pb2.MemberAddRequest,
                rpc_pb2.MemberAddResponse,
                self.member_add,
            ),
            Method(
                SERVICE,
                "MemberRemove",
                Kind.UNARY,
                rpc_pb2.MemberRemoveRequest,
                rpc_pb2.MemberRemoveResponse,
                self.member_remove,
            ),
            Method(
                SERVICE,
                "MemberUpdate",
                Kind.UNARY,
                rpc_pb2.MemberUpdateRequest,
                rpc_pb2.MemberUpdateResponse,
                self.member_update,
            ),
            Method(
                SERVICE,
                "MemberList",
                Kind.UNARY,
                rpc_pb2.MemberListRequest,
                rpc_pb2.MemberListResponse,
                self.member_list,
            ),
            Method(
                SERVICE,
                "MemberPromote",
                Kind.UNARY,
                rpc_pb2.MemberPromoteRequest,
                rpc_pb2.MemberPromoteResponse,
                self.member_promote,
            ),
        ]
