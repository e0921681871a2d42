"""petcd's Python client for etcd v3 servers (etcd itself or petcd): sync and asyncio.

    from petcd.client import Client, compare_mod, op_put

    with Client(["127.0.0.1:2379"]) as client:
        client.put("config/a", "1")
        resp = client.get("config/", prefix=True)   # etcd's RangeResponse protobuf
        for kv in resp.kvs: ...

- `Client` (grpc) and `AsyncClient` (grpc.aio) have the same methods; responses are etcd's
  protobuf messages; failures raise `petcd.errors.PetcdError` subclasses matched by etcd's
  message (never a grpc exception).
- Txn building blocks: `compare_value/version/create/mod/lease`, `op_get/put/delete/txn`.
- Watches: `client.watch(...)` returns an iterator of WatchResponse with `cancel()`; all
  watches of a client share one stream (`client.watch_stream()` opens another) and resume
  from where they were after a broken connection.
- Leases: `lease_grant/revoke/time_to_live/leases/keep_alive_once`, and `lease_keep_alive`
  for a background renewer (thread or task) with `stop()`.
- Recipes: `Lock`, `Election` (and `AsyncLock`, `AsyncElection`) on leases and revisions.

Layering: imports only `petcd.pb` and `petcd.errors`.
"""

from petcd.client.aio import AsyncClient
from petcd.client.aio_streams import (
    AsyncKeepAlive,
    AsyncLeaseKeepAliveStream,
    AsyncWatch,
    AsyncWatchStream,
)
from petcd.client.concurrency import AsyncElection, AsyncLock, AsyncSession, Election, Lock, Session
from petcd.client.requests import (
    compare_create,
    compare_lease,
    compare_mod,
    compare_value,
    compare_version,
    op_delete,
    op_get,
    op_put,
    op_txn,
    permission,
    prefix_range_end,
)
from petcd.client.snapshot import SnapshotResult
from petcd.client.sync import Client
from petcd.client.sync_streams import KeepAlive, LeaseKeepAliveStream, Watch, WatchStream
from petcd.client.transport import TLSConfig

__all__ = [
    "AsyncClient",
    "AsyncElection",
    "AsyncKeepAlive",
    "AsyncLeaseKeepAliveStream",
    "AsyncLock",
    "AsyncSession",
    "AsyncWatch",
    "AsyncWatchStream",
    "Client",
    "Election",
    "KeepAlive",
    "LeaseKeepAliveStream",
    "Lock",
    "Session",
    "SnapshotResult",
    "TLSConfig",
    "Watch",
    "WatchStream",
    "compare_create",
    "compare_lease",
    "compare_mod",
    "compare_value",
    "compare_version",
    "op_delete",
    "op_get",
    "op_put",
    "op_txn",
    "permission",
    "prefix_range_end",
]
