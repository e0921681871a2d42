"""Every service a member serves on its client port, as one method table."""

from __future__ import annotations

from petcd.api.auth import AuthService
from petcd.api.cluster import ClusterService
from petcd.api.health import HealthService
from petcd.api.kv import KVService
from petcd.api.lease import LeaseService
from petcd.api.maintenance import MaintenanceService
from petcd.api.rpc import Method
from petcd.api.watch import WatchService
from petcd.server.etcdserver import EtcdServer


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
    return methods
