"""KV service: Range, Put, DeleteRange, Txn, Compact. Thin: validate, call the server, header."""

from __future__ import annotations

from petcd import errors
from petcd.api.rpc import CallContext, Kind, Method, require_leader
from petcd.mvcc import validate
from petcd.mvcc.kvstore import txn_has_writes
from petcd.pb import internal_pb2, rpc_pb2
from petcd.server.etcdserver import EtcdServer

SERVICE = "etcdserverpb.KV"
#: etcd's quota costs (etcd-api-facts §3.4).
PUT_BASE_COST = 256
LEASE_GRANT_COST = 64


def put_cost(req: rpc_pb2.PutRequest) -> int:
    return PUT_BASE_COST + len(req.key) + len(req.value)


def txn_cost(req: rpc_pb2.TxnRequest) -> int:
    """The larger branch's sum of put costs (nested txns included)."""
    best = 0
    for ops in (req.success, req.failure):
        total = 0
        for op in ops:
            kind = op.WhichOneof("request")
            if kind == "request_put":
                total += put_cost(op.request_put)
            elif kind == "request_txn":
                total += txn_cost(op.request_txn)
        best = max(best, total)
    return best


class KVService:
    def __init__(self, server: EtcdServer) -> None:
        self.server = server
        self.max_txn_ops = int(server.config.max_txn_ops)

    def _check_leader(self, ctx: CallContext) -> None:
        if self.server.leader_id == 0 and require_leader(ctx):
            raise errors.NoLeaderError()

    async def range(self, req: rpc_pb2.RangeRequest, ctx: CallContext) -> rpc_pb2.RangeResponse:
        validate.check_range(req)
        server = self.server
        if server.leader_id == 0:
            self._check_leader(ctx)
        if server.learner and not req.serializable:
            raise errors.NotSupportedForLearnerError()
        if not req.serializable:
            await server.linearizable_barrier()
        response = server.store.range(req)
        server.fill_header(response.header)
        return response

    async def put(self, req: rpc_pb2.PutRequest, ctx: CallContext) -> rpc_pb2.PutResponse:
        validate.check_put(req)
        server = self.server
        if server.leader_id == 0:
            self._check_leader(ctx)
        await server.check_quota(put_cost(req))
        response: rpc_pb2.PutResponse = await server.propose(
            internal_pb2.InternalRaftRequest(put=req)
        )
        server.fill_header(response.header)
        return response

    async def delete_range(
        self, req: rpc_pb2.DeleteRangeRequest, ctx: CallContext
    ) -> rpc_pb2.DeleteRangeResponse:
        validate.check_delete_range(req)
        server = self.server
        if server.leader_id == 0:
            self._check_leader(ctx)
        response: rpc_pb2.DeleteRangeResponse = await server.propose(
            internal_pb2.InternalRaftRequest(delete_range=req)
        )
        server.fill_header(response.header)
        return response

    async def txn(self, req: rpc_pb2.TxnRequest, ctx: CallContext) -> rpc_pb2.TxnResponse:
        validate.check_txn(req, max_txn_ops=self.max_txn_ops)
        server = self.server
        if server.leader_id == 0:
            self._check_leader(ctx)
        if not txn_has_writes(req):
            await server.linearizable_barrier()
            response = server.store.txn_read_only(req)
        else:
            await server.check_quota(txn_cost(req))
            response = await server.propose(internal_pb2.InternalRaftRequest(txn=req))
        server.fill_header(response.header)
        return response

    async def compact(
        self, req: rpc_pb2.CompactionRequest, ctx: CallContext
    ) -> rpc_pb2.CompactionResponse:
        server = self.server
        if server.leader_id == 0:
            self._check_leader(ctx)
        response: rpc_pb2.CompactionResponse
        response, compaction = await server.propose(
            internal_pb2.InternalRaftRequest(compaction=req)
        )
        if req.physical:
            await server.wait_compaction(compaction)
        server.fill_header(response.header)
        return response

    def methods(self) -> list[Method]:
        return [
            Method(
                SERVICE,
                "Range",
                Kind.UNARY,
                rpc_pb2.RangeRequest,
                rpc_pb2.RangeResponse,
                self.range,
            ),
            Method(SERVICE, "Put", Kind.UNARY, rpc_pb2.PutRequest, rpc_pb2.PutResponse, self.put),
            Method(
                SERVICE,
                "DeleteRange",
                Kind.UNARY,
                rpc_pb2.DeleteRangeRequest,
                rpc_pb2.DeleteRangeResponse,
                self.delete_range,
            ),
            Method(SERVICE, "Txn", Kind.UNARY, rpc_pb2.TxnRequest, rpc_pb2.TxnResponse, self.txn),
            Method(
                SERVICE,
                "Compact",
                Kind.UNARY,
                rpc_pb2.CompactionRequest,
                rpc_pb2.CompactionResponse,
                self.compact,
            ),
        ]
