"""The standard gRPC health service (grpc.health.v1.Health) on the client port."""

from __future__ import annotations

from petcd.api.rpc import CallContext, Kind, Method, Send
from petcd.pb import health_pb2

SERVICE = "grpc.health.v1.Health"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthService:
    async def check(
        self, req: health_pb2.HealthCheckRequest, ctx: CallContext
    ) -> health_pb2.HealthCheckResponse:
        status = _SERVING if req.service in ("", "etcdserverpb.KV") else _UNKNOWN
        return health_pb2.HealthCheckResponse(status=status)

    async def watch(self, req: health_pb2.HealthCheckRequest, send: Send, ctx: CallContext) -> None:
        await send(await self.check(req, ctx))

    def methods(self) -> list[Method]:
        return [
            Method(
                SERVICE,
                "Check",
                Kind.UNARY,
                health_pb2.HealthCheckRequest,
                health_pb2.HealthCheckResponse,
                self.check,
            ),
            Method(
                SERVICE,
                "Watch",
                Kind.SERVER_STREAM,
                health_pb2.HealthCheckRequest,
                health_pb2.HealthCheckResponse,
                self.watch,
            ),
        ]
