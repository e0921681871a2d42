"""Every service a member serves on its client port, as one method table."""

from __future__ import annotations

import dataclasses
from typing import Any

from petcd import errors
from petcd.api.auth import AuthService
from petcd.api.cluster import ClusterService
from petcd.api.health import HealthService
from petcd.api.kv import KVService
from petcd.api.lease import LeaseService
from petcd.api.maintenance import MaintenanceService
from petcd.api.rpc import Kind, Method
from petcd.api.watch import WatchService
from petcd.server.etcdserver import EtcdServer

#: What a learner serves (etcd): Status, serializable Range (checked in the KV service), and
#: the Snapshot stream; every other RPC answers "rpc not supported for learner".
LEARNER_ALLOWED = {
    "/etcdserverpb.Maintenance/Status",
    "/etcdserverpb.KV/Range",
    "/etcdserverpb.Maintenance/Snapshot",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
}


def learner_guard(server: EtcdServer, method: Method) -> Method:
    """Wrap a handler so that it refuses to run on a learner."""
    if method.path in LEARNER_ALLOWED:
        return method
    handler = method.handler

    if method.kind is Kind.UNARY:

        async def guarded_unary(request: Any, ctx: Any) -> Any:
            if server.learner:
                raise errors.NotSupportedForLearnerError()
            return await handler(request, ctx)

        return dataclasses.replace(method, handler=guarded_unary)

    async def guarded_stream(requests: Any, send: Any, ctx: Any) -> None:
        if server.learner:
            raise errors.NotSupportedForLearnerError()
        await handler(requests, send, ctx)

    return dataclasses.replace(method, handler=guarded_stream)


def all_methods(server: EtcdServer) -> list[Method]:
    methods: list[Method] = []
    for service in (
        KVService(server),
        WatchService(server),
        LeaseService(server),
        ClusterService(server),
        MaintenanceService(server),
        AuthService(server),
    ):
        methods.extend(service.methods())
    methods.extend(HealthService().methods())
    return [learner_guard(server, method) for method in methods]
