"""Auth service, with authentication disabled: status and the answers etcd gives then.

RBAC (users, roles, tokens) is not built yet; these are etcd's answers while auth is off.
"""

from __future__ import annotations

from petcd import errors
from petcd.api.rpc import CallContext, Kind, Method
from petcd.pb import rpc_pb2
from petcd.server.etcdserver import EtcdServer

SERVICE = "etcdserverpb.Auth"


class AuthService:
    def __init__(self, server: EtcdServer) -> None:
        self.server = server

    async def status(
        self, req: rpc_pb2.AuthStatusRequest, ctx: CallContext
    ) -> rpc_pb2.AuthStatusResponse:
        return rpc_pb2.AuthStatusResponse(
            header=self.server.header(), enabled=False, authRevision=1
        )

    async def authenticate(
        self, req: rpc_pb2.AuthenticateRequest, ctx: CallContext
    ) -> rpc_pb2.AuthenticateResponse:
        raise errors.AuthNotEnabledError()

    def methods(self) -> list[Method]:
        return [
            Method(
                SERVICE,
                "AuthStatus",
                Kind.UNARY,
                rpc_pb2.AuthStatusRequest,
                rpc_pb2.AuthStatusResponse,
                self.status,
            ),
            Method(
                SERVICE,
                "Authenticate",
                Kind.UNARY,
                rpc_pb2.AuthenticateRequest,
                rpc_pb2.AuthenticateResponse,
                self.authenticate,
            ),
        ]
