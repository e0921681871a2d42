"""What the sync and asyncio clients share about gRPC: methods, channels, errors and retries.

- `Method` describes one RPC: its path, message classes and whether it may be retried on
  another endpoint after an Unavailable error (`repeatable`, like clientv3's retry policy).
- `error_from_rpc` turns every gRPC error into a PetcdError (never a grpc exception): first by
  etcd's exact message (`petcd.errors.from_status`), then, for transport-level failures with no
  etcd message, by status code (UnavailableError, DeadlineExceededError, CanceledError).
- `retry_kind` decides what a failed attempt allows (clientv3's rules): an error that shows the
  request never reached a server (no connection) may be retried anywhere; other Unavailable
  errors only for repeatable RPCs (reads); an invalid or stale auth token by authenticating
  again; anything else is final.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from petcd import errors
from petcd.pb import rpc_pb2, v3election_pb2, v3lock_pb2

Req = TypeVar("Req")
Resp = TypeVar("Resp")

# Receive anything the server sends (clientv3: 2^31-1); the server bounds what it accepts.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
ATTEMPTS_MAX = 100
BACKOFF_S = 0.025

# grpc-core texts for "no connection was ever made", so the request cannot have been seen.
_NEVER_SENT = (
    "failed to connect to all addresses",
    "errors resolving",
    "DNS resolution failed",
    "no connection available",
    "there is no address available",
    "empty address list",
)


@dataclass(slots=True, frozen=True)
class Method(Generic[Req, Resp]):
    """One unary RPC: path, message classes, and whether a retry elsewhere is safe."""

    path: str
    request: type[Req]
    response: type[Resp]
    repeatable: bool

    def bind(self, channel: Any) -> Any:
        """The grpc multicallable for this method on `channel` (sync or aio)."""
        assert self.path.startswith("/")
        return channel.unary_unary(
            self.path,
            request_serializer=self.request.SerializeToString,  # type: ignore[attr-defined]
            response_deserializer=self.response.FromString,  # type: ignore[attr-defined]
            # as generated stubs do: grpc-core registers the method once, not per call
            _registered_method=True,
        )


def _m(
    service: str, name: str, req: type[Req], resp: type[Resp], repeatable: bool
) -> Method[Req, Resp]:
    return Method(f"/{service}/{name}", req, resp, repeatable)


_P = rpc_pb2
KV_RANGE = _m("etcdserverpb.KV", "Range", _P.RangeRequest, _P.RangeResponse, True)
KV_PUT = _m("etcdserverpb.KV", "Put", _P.PutRequest, _P.PutResponse, False)
KV_DELETE = _m(
    "etcdserverpb.KV", "DeleteRange", _P.DeleteRangeRequest, _P.DeleteRangeResponse, False
)
KV_TXN = _m("etcdserverpb.KV", "Txn", _P.TxnRequest, _P.TxnResponse, False)
KV_COMPACT = _m("etcdserverpb.KV", "Compact", _P.CompactionRequest, _P.CompactionResponse, False)
# clientv3 retries LeaseGrant: a duplicate grant only leaves a lease to expire unused.
LEASE_GRANT = _m(
    "etcdserverpb.Lease", "LeaseGrant", _P.LeaseGrantRequest, _P.LeaseGrantResponse, True
)
LEASE_REVOKE = _m(
    "etcdserverpb.Lease", "LeaseRevoke", _P.LeaseRevokeRequest, _P.LeaseRevokeResponse, True
)
LEASE_TTL = _m(
    "etcdserverpb.Lease",
    "LeaseTimeToLive",
    _P.LeaseTimeToLiveRequest,
    _P.LeaseTimeToLiveResponse,
    True,
)
LEASE_LEASES = _m(
    "etcdserverpb.Lease", "LeaseLeases", _P.LeaseLeasesRequest, _P.LeaseLeasesResponse, True
)
MEMBER_ADD = _m(
    "etcdserverpb.Cluster", "MemberAdd", _P.MemberAddRequest, _P.MemberAddResponse, False
)
MEMBER_REMOVE = _m(
    "etcdserverpb.Cluster", "MemberRemove", _P.MemberRemoveRequest, _P.MemberRemoveResponse, False
)
MEMBER_UPDATE = _m(
    "etcdserverpb.Cluster", "MemberUpdate", _P.MemberUpdateRequest, _P.MemberUpdateResponse, False
)
MEMBER_LIST = _m(
    "etcdserverpb.Cluster", "MemberList", _P.MemberListRequest, _P.MemberListResponse, True
)
MEMBER_PROMOTE = _m(
    "etcdserverpb.Cluster",
    "MemberPromote",
    _P.MemberPromoteRequest,
    _P.MemberPromoteResponse,
    False,
)
M_ALARM = _m("etcdserverpb.Maintenance", "Alarm", _P.AlarmRequest, _P.AlarmResponse, True)
M_STATUS = _m("etcdserverpb.Maintenance", "Status", _P.StatusRequest, _P.StatusResponse, True)
M_DEFRAG = _m(
    "etcdserverpb.Maintenance", "Defragment", _P.DefragmentRequest, _P.DefragmentResponse, True
)
M_HASH = _m("etcdserverpb.Maintenance", "Hash", _P.HashRequest, _P.HashResponse, True)
M_HASH_KV = _m("etcdserverpb.Maintenance", "HashKV", _P.HashKVRequest, _P.HashKVResponse, True)
M_MOVE_LEADER = _m(
    "etcdserverpb.Maintenance", "MoveLeader", _P.MoveLeaderRequest, _P.MoveLeaderResponse, False
)
M_SNAPSHOT_PATH = "/etcdserverpb.Maintenance/Snapshot"
WATCH_PATH = "/etcdserverpb.Watch/Watch"
LEASE_KEEPALIVE_PATH = "/etcdserverpb.Lease/LeaseKeepAlive"


def _auth(
    name: str, req: type[Req], resp: type[Resp], repeatable: bool = False
) -> Method[Req, Resp]:
    return _m("etcdserverpb.Auth", name, req, resp, repeatable)


AUTH_ENABLE = _auth("AuthEnable", _P.AuthEnableRequest, _P.AuthEnableResponse)
AUTH_DISABLE = _auth("AuthDisable", _P.AuthDisableRequest, _P.AuthDisableResponse)
AUTH_STATUS = _auth("AuthStatus", _P.AuthStatusRequest, _P.AuthStatusResponse, True)
AUTHENTICATE = _auth("Authenticate", _P.AuthenticateRequest, _P.AuthenticateResponse, True)
USER_ADD = _auth("UserAdd", _P.AuthUserAddRequest, _P.AuthUserAddResponse)
USER_GET = _auth("UserGet", _P.AuthUserGetRequest, _P.AuthUserGetResponse, True)
USER_LIST = _auth("UserList", _P.AuthUserListRequest, _P.AuthUserListResponse, True)
USER_DELETE = _auth("UserDelete", _P.AuthUserDeleteRequest, _P.AuthUserDeleteResponse)
USER_CHANGE_PASSWORD = _auth(
    "UserChangePassword", _P.AuthUserChangePasswordRequest, _P.AuthUserChangePasswordResponse
)
USER_GRANT_ROLE = _auth("UserGrantRole", _P.AuthUserGrantRoleRequest, _P.AuthUserGrantRoleResponse)
USER_REVOKE_ROLE = _auth(
    "UserRevokeRole", _P.AuthUserRevokeRoleRequest, _P.AuthUserRevokeRoleResponse
)
ROLE_ADD = _auth("RoleAdd", _P.AuthRoleAddRequest, _P.AuthRoleAddResponse)
ROLE_GET = _auth("RoleGet", _P.AuthRoleGetRequest, _P.AuthRoleGetResponse, True)
ROLE_LIST = _auth("RoleList", _P.AuthRoleListRequest, _P.AuthRoleListResponse, True)
ROLE_DELETE = _auth("RoleDelete", _P.AuthRoleDeleteRequest, _P.AuthRoleDeleteResponse)
ROLE_GRANT_PERMISSION = _auth(
    "RoleGrantPermission", _P.AuthRoleGrantPermissionRequest, _P.AuthRoleGrantPermissionResponse
)
ROLE_REVOKE_PERMISSION = _auth(
    "RoleRevokePermission", _P.AuthRoleRevokePermissionRequest, _P.AuthRoleRevokePermissionResponse
)
# The server-side Lock and Election services (etcd's v3lock / v3election).
LOCK_LOCK = _m("v3lockpb.Lock", "Lock", v3lock_pb2.LockRequest, v3lock_pb2.LockResponse, False)
LOCK_UNLOCK = _m(
    "v3lockpb.Lock", "Unlock", v3lock_pb2.UnlockRequest, v3lock_pb2.UnlockResponse, False
)
ELECTION_LEADER = _m(
    "v3electionpb.Election",
    "Leader",
    v3election_pb2.LeaderRequest,
    v3election_pb2.LeaderResponse,
    True,
)


# --- endpoints and TLS ----------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class TLSConfig:
    """Client TLS: a CA bundle to verify the server, and optionally a client certificate."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None  # verify the server certificate against this name

    def credentials(self) -> Any:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("TLSConfig needs both cert_file and key_file, or neither")
        ca = _read(self.ca_file)
        cert = _read(self.cert_file)
        key = _read(self.key_file)
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def parse_endpoints(endpoints: str | list[str] | tuple[str, ...]) -> tuple[list[str], bool]:
    """("host:port" list, whether any endpoint asked for TLS with an https:// scheme)."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    parsed: list[str] = []
    secure = False
    for item in items:
        item = item.strip()
        if not item:
            continue
        for scheme in ("http://", "https://", "unix://", "unixs://"):
            if item.startswith(scheme):
                secure = secure or scheme in ("https://", "unixs://")
                item = item[len(scheme) :]
        parsed.append(item.rstrip("/"))
    if not parsed:
        raise ValueError("at least one endpoint is required")
    assert all(parsed)
    return parsed, secure


# --- errors and retries ---------------------------------------------------------------------------


def error_from_status(code: int, message: str) -> errors.PetcdError:
    """A PetcdError for a gRPC status: etcd's message first, then the bare code."""
    error = errors.from_status(code, message)
    if type(error) is not errors.PetcdError:
        return error
    if code == errors.GrpcCode.UNAVAILABLE:
        return errors.UnavailableError(message)
    if code == errors.GrpcCode.DEADLINE_EXCEEDED:
        return errors.DeadlineExceededError(message)
    if code == errors.GrpcCode.CANCELLED:
        return errors.CanceledError(message)
    if code == errors.GrpcCode.RESOURCE_EXHAUSTED and "larger than max" in message:
        return errors.MessageTooLargeError(message)
    if code == errors.GrpcCode.UNIMPLEMENTED:
        return errors.UnimplementedError(message)
    return error


def error_from_rpc(exc: grpc.RpcError) -> errors.PetcdError:
    """The PetcdError for a failed gRPC call (sync or aio)."""
    code = exc.code()
    number = int(code.value[0]) if code is not None else int(errors.GrpcCode.UNKNOWN)
    details = exc.details() or ""
    return error_from_status(number, details)


class RetryKind(enum.Enum):
    FINAL = "final"  # raise it
    ELSEWHERE = "elsewhere"  # safe to send again, preferably to the next endpoint
    REAUTH = "reauth"  # get a new token, then send again


def never_sent(error: errors.PetcdError) -> bool:
    """True when the error shows no connection was made, so no server saw the request."""
    return error.code == errors.GrpcCode.UNAVAILABLE and any(
        text in error.message for text in _NEVER_SENT
    )


def retry_kind(error: errors.PetcdError, repeatable: bool, can_reauth: bool) -> RetryKind:
    if can_reauth and isinstance(error, errors.InvalidAuthTokenError | errors.AuthOldRevisionError):
        return RetryKind.REAUTH
    if error.code != errors.GrpcCode.UNAVAILABLE:
        return RetryKind.FINAL
    if repeatable or never_sent(error):
        return RetryKind.ELSEWHERE
    return RetryKind.FINAL
