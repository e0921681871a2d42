"""`AsyncClient`: the asyncio etcd v3 client over grpc.aio (same API as the sync `Client`).

    async with AsyncClient(["127.0.0.1:2379"]) as client:
        await client.put("k", "v")
        resp = await client.get("k")           # etcd's RangeResponse
        async with await client.watch("k", prefix=True) as watch:
            async for response in watch: ...

Every method returns etcd's protobuf response and raises a `petcd.errors.PetcdError` on
failure; no grpc exception escapes. Calls go to one endpoint at a time. On an Unavailable
error the client moves to the next endpoint and retries if that is safe (reads always; writes
only when the request provably never reached a server), with a short backoff after each round,
until the call's timeout. With `username`/`password` it authenticates first and sends the token
as metadata `token`, authenticating again once if the server calls the token invalid or stale.

Streams (watch, lease keep-alive) live in `aio_streams`; one Watch stream is shared by every
`watch()` of the client, more can be opened with `watch_stream()`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

from petcd import errors
from petcd.client import requests as rq
from petcd.client import transport as tp
from petcd.client.aio_streams import (
    AsyncKeepAlive,
    AsyncLeaseKeepAliveStream,
    AsyncWatch,
    AsyncWatchStream,
)
from petcd.client.requests import AlarmName, KeyLike, PermissionType, SortOrder, SortTarget
from petcd.client.snapshot import SnapshotResult, SnapshotVerifier
from petcd.pb import auth_pb2, rpc_pb2

Req = TypeVar("Req")
Resp = TypeVar("Resp")
DEFAULT_ENDPOINTS = ("127.0.0.1:2379",)


class AsyncClient:
    """An asyncio client for one etcd cluster (a list of endpoints of its members)."""

    def __init__(
        self,
        endpoints: str | Sequence[str] = DEFAULT_ENDPOINTS,
        timeout: float = 5.0,
        username: str | None = None,
        password: str | None = None,
        tls: tp.TLSConfig | None = None,
        *,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """`channel_options` are extra grpc channel arguments (e.g. a private connection)."""
        assert timeout > 0, "timeout must be positive"
        parsed, secure = tp.parse_endpoints(
            endpoints if isinstance(endpoints, str) else list(endpoints)
        )
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.endpoints = parsed
        self.timeout = timeout
        self._tls = tls if tls is not None else (tp.TLSConfig() if secure else None)
        self._username = username
        self._channel_options = list(channel_options)
        self._password = password
        self._token: str | None = None
        self.metadata: tuple[tuple[str, str], ...] | None = None
        self._current = 0
        self._channels: dict[str, Any] = {}
        self._bound: dict[tuple[str, str], Any] = {}
        self._auth_lock: asyncio.Lock | None = None
        self._watch_stream: AsyncWatchStream | None = None
        self._keepalive_stream: AsyncLeaseKeepAliveStream | None = None
        self._streams: set[AsyncWatchStream | AsyncLeaseKeepAliveStream] = set()
        self._keepalives: set[AsyncKeepAlive] = set()
        self._closed = False

    # --- connection management ------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop keep-alives, close streams and channels. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for keepalive in list(self._keepalives):
            await keepalive.stop()
        for stream in list(self._streams):
            await stream.close()
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._bound.clear()
        assert not self._keepalives

    @property
    def endpoint(self) -> str:
        """The endpoint calls go to now."""
        return self.endpoints[self._current]

    def channel(self, endpoint: str | None = None) -> Any:
        """The grpc.aio channel to `endpoint` (default: the current one), created on first use."""
        if self._closed:
            raise errors.CanceledError("petcd: client is closed")
        target = endpoint or self.endpoint
        channel = self._channels.get(target)
        if channel is None:
            options = list(tp.CHANNEL_OPTIONS) + self._channel_options
            if self._tls is not None:
                options += self._tls.channel_options()
                channel = grpc.aio.secure_channel(target, self._tls.credentials(), options=options)
            else:
                channel = grpc.aio.insecure_channel(target, options=options)
            self._channels[target] = channel
        return channel

    def failover(self, endpoint: str) -> None:
        """`endpoint` failed: later calls go to the next one (unless someone moved on already)."""
        if self.endpoints[self._current] == endpoint:
            self._current = (self._current + 1) % len(self.endpoints)
        assert 0 <= self._current < len(self.endpoints)

    def _callable(self, endpoint: str, method: tp.Method[Any, Any]) -> Any:
        key = (endpoint, method.path)
        bound = self._bound.get(key)
        if bound is None:
            bound = method.bind(self.channel(endpoint))
            self._bound[key] = bound
        return bound

    async def unary(
        self,
        method: tp.Method[Req, Resp],
        request: Req,
        timeout: float | None = None,
        *,
        auth: bool = True,
    ) -> Resp:
        """One unary RPC with failover, safe retries and token refresh, bounded by `timeout`.

        `auth=False` sends no token and never authenticates (for Authenticate itself).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        use_auth = auth and self._username is not None
        reauthed = False
        error: errors.PetcdError | None = None
        for attempt in range(tp.ATTEMPTS_MAX):
            if use_auth and self._token is None:
                await self._authenticate(deadline)
            endpoint = self.endpoints[self._current]
            call = self._callable(endpoint, method)
            sent = self.metadata if auth else None
            try:
                response: Resp = await call(
                    request,
                    timeout=max(deadline - loop.time(), 0.001),
                    metadata=sent,
                )
                return response
            except grpc.RpcError as exc:
                error = tp.error_from_rpc(exc)
            kind = tp.retry_kind(error, method.repeatable, can_reauth=use_auth and not reauthed)
            if kind is tp.RetryKind.FINAL:
                raise error from None
            if kind is tp.RetryKind.REAUTH:
                reauthed = True
                if self.metadata is sent:  # nobody has refreshed the token since we sent it
                    self._token = None
                continue
            self.failover(endpoint)
            if deadline - loop.time() <= tp.BACKOFF_S:
                raise error from None
            if (attempt + 1) % len(self.endpoints) == 0:
                await asyncio.sleep(tp.BACKOFF_S)  # a full round failed: back off before the next
        assert error is not None
        raise error from None

    async def _authenticate(self, deadline: float) -> None:
        if self._auth_lock is None:
            self._auth_lock = asyncio.Lock()
        async with self._auth_lock:
            if self._token is not None:
                return
            assert self._username is not None and self._password is not None
            timeout = max(deadline - asyncio.get_running_loop().time(), 0.001)
            request = rpc_pb2.AuthenticateRequest(name=self._username, password=self._password)
            response = await self.unary(tp.AUTHENTICATE, request, timeout, auth=False)
            assert response.token, "Authenticate succeeded without a token"
            self._token = response.token
            self.metadata = (("token", response.token),)

    async def refresh_token(self) -> None:
        """Forget the token; the next call authenticates again."""
        self._token = None
        if self._username is not None:
            await self._authenticate(asyncio.get_running_loop().time() + self.timeout)

    # --- KV -----------------------------------------------------------------------------------

    async def get(
        self,
        key: KeyLike,
        range_end: KeyLike | None = None,
        *,
        prefix: bool = False,
        from_key: bool = False,
        limit: int = 0,
        revision: int = 0,
        sort_order: SortOrder = "none",
        sort_target: SortTarget = "key",
        serializable: bool = False,
        keys_only: bool = False,
        count_only: bool = False,
        min_mod_revision: int = 0,
        max_mod_revision: int = 0,
        min_create_revision: int = 0,
        max_create_revision: int = 0,
    ) -> rpc_pb2.RangeResponse:
        request = rq.range_request(
            key,
            range_end,
            prefix=prefix,
            from_key=from_key,
            limit=limit,
            revision=revision,
            sort_order=sort_order,
            sort_target=sort_target,
            serializable=serializable,
            keys_only=keys_only,
            count_only=count_only,
            min_mod_revision=min_mod_revision,
            max_mod_revision=max_mod_revision,
            min_create_revision=min_create_revision,
            max_create_revision=max_create_revision,
        )
        return await self.unary(tp.KV_RANGE, request)

    async def put(
        self,
        key: KeyLike,
        value: KeyLike = b"",
        *,
        lease: int = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
    ) -> rpc_pb2.PutResponse:
        request = rq.put_request(
            key,
            value,
            lease=lease,
            prev_kv=prev_kv,
            ignore_value=ignore_value,
            ignore_lease=ignore_lease,
        )
        return await self.unary(tp.KV_PUT, request)

    async def delete(
        self,
        key: KeyLike,
        range_end: KeyLike | None = None,
        *,
        prefix: bool = False,
        from_key: bool = False,
        prev_kv: bool = False,
    ) -> rpc_pb2.DeleteRangeResponse:
        request = rq.delete_request(
            key, range_end, prefix=prefix, from_key=from_key, prev_kv=prev_kv
        )
        return await self.unary(tp.KV_DELETE, request)

    async def txn(
        self,
        compare: Iterable[rpc_pb2.Compare],
        success: Iterable[rpc_pb2.RequestOp] = (),
        failure: Iterable[rpc_pb2.RequestOp] = (),
    ) -> rpc_pb2.TxnResponse:
        return await self.unary(tp.KV_TXN, rq.txn_request(compare, success, failure))

    async def compact(self, revision: int, physical: bool = False) -> rpc_pb2.CompactionResponse:
        request = rpc_pb2.CompactionRequest(revision=revision, physical=physical)
        return await self.unary(tp.KV_COMPACT, request)

    # --- Watch ------------------------------------------------------------------------------

    def watch_stream(self) -> AsyncWatchStream:
        """A new Watch stream of its own (clientv3's NewWatcher); `watch()` uses a shared one."""
        stream = AsyncWatchStream(self)
        self._streams.add(stream)
        return stream

    def forget_stream(self, stream: AsyncWatchStream | AsyncLeaseKeepAliveStream) -> None:
        self._streams.discard(stream)

    async def watch(
        self,
        key: KeyLike,
        range_end: KeyLike | None = None,
        *,
        prefix: bool = False,
        from_key: bool = False,
        start_revision: int = 0,
        progress_notify: bool = False,
        no_put: bool = False,
        no_delete: bool = False,
        prev_kv: bool = False,
        fragment: bool = False,
        watch_id: int = 0,
    ) -> AsyncWatch:
        """Watch a key or range on the client's shared stream; iterate the result for responses."""
        if self._watch_stream is None or self._watch_stream.closed:
            self._watch_stream = self.watch_stream()
        request = rq.watch_create_request(
            key,
            range_end,
            prefix=prefix,
            from_key=from_key,
            start_revision=start_revision,
            progress_notify=progress_notify,
            no_put=no_put,
            no_delete=no_delete,
            prev_kv=prev_kv,
            fragment=fragment,
            watch_id=watch_id,
        )
        return await self._watch_stream.watch_request(request)

    async def request_progress(self) -> None:
        """Ask the shared watch stream for a progress notification (watch_id -1 to every watch)."""
        if self._watch_stream is not None and not self._watch_stream.closed:
            await self._watch_stream.request_progress()

    # --- Lease ------------------------------------------------------------------------------

    async def lease_grant(self, ttl: int, lease_id: int = 0) -> rpc_pb2.LeaseGrantResponse:
        response = await self.unary(tp.LEASE_GRANT, rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lease_id))
        if response.error:
            raise errors.from_status(errors.GrpcCode.UNKNOWN, response.error)
        return response

    async def lease_revoke(self, lease_id: int) -> rpc_pb2.LeaseRevokeResponse:
        return await self.unary(tp.LEASE_REVOKE, rpc_pb2.LeaseRevokeRequest(ID=lease_id))

    async def lease_time_to_live(
        self, lease_id: int, keys: bool = False
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=keys)
        return await self.unary(tp.LEASE_TTL, request)

    async def lease_leases(self) -> rpc_pb2.LeaseLeasesResponse:
        return await self.unary(tp.LEASE_LEASES, rpc_pb2.LeaseLeasesRequest())

    def lease_keep_alive_stream(self) -> AsyncLeaseKeepAliveStream:
        """A LeaseKeepAlive stream of its own: `await stream.keep_alive(id)` per renewal."""
        stream = AsyncLeaseKeepAliveStream(self)
        self._streams.add(stream)
        return stream

    async def lease_keep_alive_once(self, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
        """Renew once; raises LeaseNotFoundError if the lease is gone (TTL 0), as clientv3."""
        if self._keepalive_stream is None or self._keepalive_stream.closed:
            self._keepalive_stream = self.lease_keep_alive_stream()
        response = await self._keepalive_stream.keep_alive(lease_id)
        if response.TTL <= 0:
            raise errors.LeaseNotFoundError()
        return response

    async def lease_keep_alive(
        self, lease_id: int, interval: float | None = None
    ) -> AsyncKeepAlive:
        """Renew `lease_id` in a background task (every TTL/3 s) until `stop()` or the lease ends."""
        keepalive = AsyncKeepAlive(self, lease_id, interval)
        self._keepalives.add(keepalive)
        await keepalive.start()
        return keepalive

    def forget_keepalive(self, keepalive: AsyncKeepAlive) -> None:
        self._keepalives.discard(keepalive)

    # --- Cluster ----------------------------------------------------------------------------

    async def member_list(self, linearizable: bool = False) -> rpc_pb2.MemberListResponse:
        return await self.unary(
            tp.MEMBER_LIST, rpc_pb2.MemberListRequest(linearizable=linearizable)
        )

    async def member_add(
        self, peer_urls: Sequence[str], is_learner: bool = False
    ) -> rpc_pb2.MemberAddResponse:
        request = rpc_pb2.MemberAddRequest(peerURLs=list(peer_urls), isLearner=is_learner)
        return await self.unary(tp.MEMBER_ADD, request)

    async def member_remove(self, member_id: int) -> rpc_pb2.MemberRemoveResponse:
        return await self.unary(tp.MEMBER_REMOVE, rpc_pb2.MemberRemoveRequest(ID=member_id))

    async def member_update(
        self, member_id: int, peer_urls: Sequence[str]
    ) -> rpc_pb2.MemberUpdateResponse:
        request = rpc_pb2.MemberUpdateRequest(ID=member_id, peerURLs=list(peer_urls))
        return await self.unary(tp.MEMBER_UPDATE, request)

    async def member_promote(self, member_id: int) -> rpc_pb2.MemberPromoteResponse:
        return await self.unary(tp.MEMBER_PROMOTE, rpc_pb2.MemberPromoteRequest(ID=member_id))

    # --- Maintenance ------------------------------------------------------------------------

    async def status(self, endpoint: str | None = None) -> rpc_pb2.StatusResponse:
        """Status of the current member, or of `endpoint` exactly (no failover then)."""
        if endpoint is None:
            return await self.unary(tp.M_STATUS, rpc_pb2.StatusRequest())
        call = self._callable(tp.parse_endpoints([endpoint])[0][0], tp.M_STATUS)
        try:
            response: rpc_pb2.StatusResponse = await call(
                rpc_pb2.StatusRequest(), timeout=self.timeout, metadata=self.metadata
            )
        except grpc.RpcError as exc:
            raise tp.error_from_rpc(exc) from None
        return response

    async def alarm_list(self) -> rpc_pb2.AlarmResponse:
        request = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET, alarm=rpc_pb2.NONE)
        return await self.unary(tp.M_ALARM, request)

    async def alarm_activate(
        self, member_id: int, alarm: AlarmName | rpc_pb2.AlarmType
    ) -> rpc_pb2.AlarmResponse:
        request = rpc_pb2.AlarmRequest(
            action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=member_id, alarm=alarm
        )
        return await self.unary(tp.M_ALARM, request)

    async def alarm_disarm(
        self, member_id: int | None = None, alarm: AlarmName | rpc_pb2.AlarmType = "NONE"
    ) -> rpc_pb2.AlarmResponse:
        """Disarm one alarm; with no member, every active alarm (as `etcdctl alarm disarm`)."""
        if member_id is not None:
            request = rpc_pb2.AlarmRequest(
                action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=member_id, alarm=alarm
            )
            return await self.unary(tp.M_ALARM, request)
        listed = await self.alarm_list()
        result = rpc_pb2.AlarmResponse()
        result.header.CopyFrom(listed.header)
        for active in listed.alarms:
            response = await self.alarm_disarm(active.memberID, active.alarm)
            result.alarms.extend(response.alarms)
            result.header.CopyFrom(response.header)
        return result

    async def defragment(self, timeout: float | None = None) -> rpc_pb2.DefragmentResponse:
        return await self.unary(tp.M_DEFRAG, rpc_pb2.DefragmentRequest(), timeout)

    async def hash(self) -> rpc_pb2.HashResponse:
        return await self.unary(tp.M_HASH, rpc_pb2.HashRequest())

    async def hash_kv(self, revision: int = 0) -> rpc_pb2.HashKVResponse:
        return await self.unary(tp.M_HASH_KV, rpc_pb2.HashKVRequest(revision=revision))

    async def move_leader(self, target_id: int) -> rpc_pb2.MoveLeaderResponse:
        return await self.unary(tp.M_MOVE_LEADER, rpc_pb2.MoveLeaderRequest(targetID=target_id))

    async def snapshot(
        self, path: str | os.PathLike[str], timeout: float | None = None
    ) -> SnapshotResult:
        """Stream the backend to `path` (written to `path.part`, renamed once its SHA-256 checks)."""
        target = os.fspath(path)
        partial = target + ".part"
        verifier = SnapshotVerifier()
        stream = self.channel().unary_stream(
            tp.M_SNAPSHOT_PATH,
            request_serializer=rpc_pb2.SnapshotRequest.SerializeToString,
            response_deserializer=rpc_pb2.SnapshotResponse.FromString,
        )
        if self._username is not None and self._token is None:
            await self._authenticate(asyncio.get_running_loop().time() + self.timeout)
        try:
            with open(partial, "wb") as f:
                call = stream(rpc_pb2.SnapshotRequest(), timeout=timeout, metadata=self.metadata)
                async for response in call:
                    verifier.feed(response.blob)
                    await asyncio.to_thread(f.write, response.blob)
                await asyncio.to_thread(os.fsync, f.fileno())
            digest = verifier.finish()
        except grpc.RpcError as exc:
            os.unlink(partial)
            raise tp.error_from_rpc(exc) from None
        except errors.PetcdError:
            os.unlink(partial)
            raise
        os.replace(partial, target)
        assert os.path.getsize(target) == verifier.size_bytes
        return SnapshotResult(target, verifier.size_bytes, digest)

    # --- Auth -------------------------------------------------------------------------------

    async def auth_enable(self) -> rpc_pb2.AuthEnableResponse:
        return await self.unary(tp.AUTH_ENABLE, rpc_pb2.AuthEnableRequest())

    async def auth_disable(self) -> rpc_pb2.AuthDisableResponse:
        return await self.unary(tp.AUTH_DISABLE, rpc_pb2.AuthDisableRequest())

    async def auth_status(self) -> rpc_pb2.AuthStatusResponse:
        return await self.unary(tp.AUTH_STATUS, rpc_pb2.AuthStatusRequest())

    async def authenticate(self, name: str, password: str) -> rpc_pb2.AuthenticateResponse:
        """Authenticate as `name` (the client keeps its own credentials and token)."""
        request = rpc_pb2.AuthenticateRequest(name=name, password=password)
        return await self.unary(tp.AUTHENTICATE, request, auth=False)

    async def user_add(
        self, name: str, password: str = "", no_password: bool = False
    ) -> rpc_pb2.AuthUserAddResponse:
        options = auth_pb2.UserAddOptions(no_password=no_password)
        request = rpc_pb2.AuthUserAddRequest(name=name, password=password, options=options)
        return await self.unary(tp.USER_ADD, request)

    async def user_get(self, name: str) -> rpc_pb2.AuthUserGetResponse:
        return await self.unary(tp.USER_GET, rpc_pb2.AuthUserGetRequest(name=name))

    async def user_list(self) -> rpc_pb2.AuthUserListResponse:
        return await self.unary(tp.USER_LIST, rpc_pb2.AuthUserListRequest())

    async def user_delete(self, name: str) -> rpc_pb2.AuthUserDeleteResponse:
        return await self.unary(tp.USER_DELETE, rpc_pb2.AuthUserDeleteRequest(name=name))

    async def user_change_password(
        self, name: str, password: str
    ) -> rpc_pb2.AuthUserChangePasswordResponse:
        request = rpc_pb2.AuthUserChangePasswordRequest(name=name, password=password)
        return await self.unary(tp.USER_CHANGE_PASSWORD, request)

    async def user_grant_role(self, user: str, role: str) -> rpc_pb2.AuthUserGrantRoleResponse:
        return await self.unary(
            tp.USER_GRANT_ROLE, rpc_pb2.AuthUserGrantRoleRequest(user=user, role=role)
        )

    async def user_revoke_role(self, name: str, role: str) -> rpc_pb2.AuthUserRevokeRoleResponse:
        return await self.unary(
            tp.USER_REVOKE_ROLE, rpc_pb2.AuthUserRevokeRoleRequest(name=name, role=role)
        )

    async def role_add(self, name: str) -> rpc_pb2.AuthRoleAddResponse:
        return await self.unary(tp.ROLE_ADD, rpc_pb2.AuthRoleAddRequest(name=name))

    async def role_get(self, role: str) -> rpc_pb2.AuthRoleGetResponse:
        return await self.unary(tp.ROLE_GET, rpc_pb2.AuthRoleGetRequest(role=role))

    async def role_list(self) -> rpc_pb2.AuthRoleListResponse:
        return await self.unary(tp.ROLE_LIST, rpc_pb2.AuthRoleListRequest())

    async def role_delete(self, role: str) -> rpc_pb2.AuthRoleDeleteResponse:
        return await self.unary(tp.ROLE_DELETE, rpc_pb2.AuthRoleDeleteRequest(role=role))

    async def role_grant_permission(
        self,
        name: str,
        perm_type: PermissionType,
        key: KeyLike,
        range_end: KeyLike | None = None,
        *,
        prefix: bool = False,
        from_key: bool = False,
    ) -> rpc_pb2.AuthRoleGrantPermissionResponse:
        perm = rq.permission(perm_type, key, range_end, prefix=prefix, from_key=from_key)
        request = rpc_pb2.AuthRoleGrantPermissionRequest(name=name, perm=perm)
        return await self.unary(tp.ROLE_GRANT_PERMISSION, request)

    async def role_revoke_permission(
        self,
        role: str,
        key: KeyLike,
        range_end: KeyLike | None = None,
        *,
        prefix: bool = False,
        from_key: bool = False,
    ) -> rpc_pb2.AuthRoleRevokePermissionResponse:
        raw_key, end = rq.key_range(key, range_end, prefix=prefix, from_key=from_key)
        request = rpc_pb2.AuthRoleRevokePermissionRequest(role=role, key=raw_key, range_end=end)
        return await self.unary(tp.ROLE_REVOKE_PERMISSION, request)
