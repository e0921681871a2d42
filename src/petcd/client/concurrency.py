"""Distributed lock and leader election over leases and revisions (etcd's `concurrency` package).

Both recipes queue candidates by create revision under a prefix:

- a `Session` is a lease kept alive in the background; its keys vanish when it ends;
- a candidate puts `<name>/<lease id in hex>` with the session's lease, only if that key does
  not exist yet (a Txn on create_revision == 0), so a session queues at most once per name;
- the candidate with the lowest create revision under `<name>/` holds the lock (is leader);
- everyone else watches the key just before theirs (the newest one created before theirs) for
  deletion, and checks again — nobody is woken by a change that cannot concern them.

Worked example: A and B lock "job". A's key `job/1a` gets create revision 5, B's `job/2b`
revision 7. A holds the lock (5 is lowest). B asks for the newest key under `job/` created at
or before revision 6, finds `job/1a`, and waits for its DELETE event. A releases (deletes
`job/1a`): B asks again, finds nothing older than 7, and holds the lock.

If the session's lease expires while waiting, our key is gone too: acquire raises
LockSessionExpiredError instead of pretending to hold the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Generator, Iterator
from types import TracebackType

from petcd import errors
from petcd.client import requests as rq
from petcd.client.aio import AsyncClient
from petcd.client.aio_streams import AsyncKeepAlive
from petcd.client.sync import Client
from petcd.client.sync_streams import KeepAlive
from petcd.client.transport import KV_RANGE as _RANGE
from petcd.pb import kv_pb2, rpc_pb2

DEFAULT_TTL_S = 60
WAIT_ROUNDS_MAX = 1_000_000  # bound on "someone older is still there" rounds while waiting


def _prefix(name: str | bytes) -> bytes:
    raw = rq.to_bytes(name)
    assert raw, "a lock or election name must not be empty"
    return raw + b"/"


def _queue_txn(
    key: bytes, value: bytes, lease: int, prefix: bytes
) -> tuple[list[rpc_pb2.Compare], list[rpc_pb2.RequestOp], list[rpc_pb2.RequestOp]]:
    """Put our key if absent (else read it), and read the oldest key under the prefix."""
    owner = rq.op_get(prefix, prefix=True, sort_order="ascend", sort_target="create", limit=1)
    return (
        [rq.compare_create(key, "=", 0)],
        [rq.op_put(key, value, lease=lease), owner],
        [rq.op_get(key), owner],
    )


def _my_revision(response: rpc_pb2.TxnResponse) -> int:
    """Our key's create revision after the queueing Txn."""
    if response.succeeded:
        return response.header.revision
    kvs = response.responses[0].response_range.kvs
    assert len(kvs) == 1, "the key existed for the compare but not for the read"
    return int(kvs[0].create_revision)


def _older_request(prefix: bytes, my_revision: int) -> rpc_pb2.RangeRequest:
    """The newest key under `prefix` created before `my_revision` (the one to wait for)."""
    return rq.range_request(
        prefix,
        prefix=True,
        sort_order="descend",
        sort_target="create",
        limit=1,
        max_create_revision=my_revision - 1,
    )


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


# --- sync ---------------------------------------------------------------------------------------


class Session:
    """A lease kept alive by a background thread; closing it revokes the lease."""

    def __init__(self, client: Client, ttl: int = DEFAULT_TTL_S) -> None:
        assert ttl > 0
        self.client = client
        self.lease_id = client.lease_grant(ttl).ID
        self._keepalive: KeepAlive | None = client.lease_keep_alive(self.lease_id)

    @property
    def alive(self) -> bool:
        keepalive = self._keepalive
        return keepalive is not None and keepalive.running and not keepalive.expired

    def close(self) -> None:
        if self._keepalive is None:
            return
        self._keepalive.stop()
        self._keepalive = None
        with contextlib.suppress(errors.LeaseNotFoundError):
            self.client.lease_revoke(self.lease_id)

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _wait_deleted(client: Client, key: bytes, revision: int, deadline: float | None) -> bool:
    """Wait for a DELETE of `key` at or after `revision`; False if the deadline passed first."""
    with client.watch(key, start_revision=revision, no_put=True) as watch:
        while True:
            try:
                response = watch.get(timeout=_remaining(deadline))
            except TimeoutError:
                return False
            if response is None:
                raise errors.CanceledError("petcd: watch ended while waiting for a deletion")
            if any(e.type == kv_pb2.Event.DELETE for e in response.events):
                return True


def _wait_older_gone(
    client: Client, prefix: bytes, my_revision: int, deadline: float | None
) -> bool:
    """Wait until no key under `prefix` is older than ours; False on timeout."""
    for _ in range(WAIT_ROUNDS_MAX):
        response = client.unary(_RANGE, _older_request(prefix, my_revision))
        if not response.kvs:
            return True
        if not _wait_deleted(client, response.kvs[0].key, response.header.revision, deadline):
            return False
    raise AssertionError("waited for WAIT_ROUNDS_MAX older keys in turn")


class Lock:
    """A distributed mutex named `name` (the recipe of etcd's concurrency.Mutex)."""

    def __init__(
        self,
        client: Client,
        name: str | bytes,
        ttl: int = DEFAULT_TTL_S,
        session: Session | None = None,
    ) -> None:
        self.client = client
        self.prefix = _prefix(name)
        self.ttl = ttl
        self._session = session
        self._own_session = session is None
        self.key = b""
        self.revision = 0  # our key's create revision while queued or holding

    def _queue(self) -> rpc_pb2.TxnResponse:
        if self._session is None:
            self._session = Session(self.client, self.ttl)
        lease = self._session.lease_id
        self.key = self.prefix + f"{lease:x}".encode()
        response = self.client.txn(*_queue_txn(self.key, b"", lease, self.prefix))
        self.revision = _my_revision(response)
        return response

    def acquire(self, timeout: float | None = None) -> bool:
        """Block until we hold the lock (True), or until `timeout` seconds pass (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        response = self._queue()
        owner = response.responses[1].response_range.kvs
        if owner and owner[0].create_revision != self.revision:
            if not _wait_older_gone(self.client, self.prefix, self.revision, deadline):
                self._dequeue()
                return False
            if not self.client.get(self.key).kvs:
                self._dequeue()
                raise errors.LockSessionExpiredError()
        assert self.revision > 0
        return True

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never waits."""
        response = self._queue()
        owner = response.responses[1].response_range.kvs
        if not owner or owner[0].create_revision == self.revision:
            return True
        self._dequeue()
        return False

    def _dequeue(self) -> None:
        if self.key:
            self.client.delete(self.key)
        self.key, self.revision = b"", 0
        if self._own_session and self._session is not None:
            self._session.close()
            self._session = None

    def release(self) -> None:
        """Give the lock up (delete our key) and end our own session."""
        self._dequeue()
        assert not self.key

    def is_owner(self) -> bool:
        """Whether our key is (still) the oldest under the lock's prefix."""
        if not self.key:
            return False
        response = self.client.get(
            self.prefix, prefix=True, sort_order="ascend", sort_target="create", limit=1
        )
        return bool(response.kvs) and response.kvs[0].key == self.key

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Election:
    """Leader election named `name` (the recipe of etcd's concurrency.Election)."""

    def __init__(
        self,
        client: Client,
        name: str | bytes,
        ttl: int = DEFAULT_TTL_S,
        session: Session | None = None,
    ) -> None:
        self.client = client
        self.prefix = _prefix(name)
        self.ttl = ttl
        self._session = session
        self._own_session = session is None
        self.key = b""
        self.revision = 0  # our candidacy key's create revision

    def campaign(self, value: str | bytes, timeout: float | None = None) -> bool:
        """Become leader with `value` (True), or give up after `timeout` seconds (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._session is None:
            self._session = Session(self.client, self.ttl)
        lease = self._session.lease_id
        raw = rq.to_bytes(value)
        self.key = self.prefix + f"{lease:x}".encode()
        response = self.client.txn(*_queue_txn(self.key, raw, lease, self.prefix))
        self.revision = _my_revision(response)
        if not response.succeeded and response.responses[0].response_range.kvs[0].value != raw:
            self.proclaim(raw)
        if not _wait_older_gone(self.client, self.prefix, self.revision, deadline):
            self.resign()
            return False
        if not self.client.get(self.key).kvs:
            self.resign()
            raise errors.LockSessionExpiredError()
        return True

    def proclaim(self, value: str | bytes) -> None:
        """Change the leader's value without an election; ElectionNotLeaderError if not leader."""
        if not self.key or self._session is None:
            raise errors.ElectionNotLeaderError()
        response = self.client.txn(
            [rq.compare_create(self.key, "=", self.revision)],
            [rq.op_put(self.key, value, lease=self._session.lease_id)],
        )
        if not response.succeeded:
            self.key = b""
            raise errors.ElectionNotLeaderError()

    def resign(self) -> None:
        """Stop being leader (or candidate): delete our key if it is still ours."""
        if self.key:
            self.client.txn(
                [rq.compare_create(self.key, "=", self.revision)], [rq.op_delete(self.key)]
            )
        self.key, self.revision = b"", 0
        if self._own_session and self._session is not None:
            self._session.close()
            self._session = None

    def leader(self) -> kv_pb2.KeyValue:
        """The current leader's key and value; ElectionNoLeaderError when there is none."""
        response = self.client.get(
            self.prefix, prefix=True, sort_order="ascend", sort_target="create", limit=1
        )
        if not response.kvs:
            raise errors.ElectionNoLeaderError()
        leader: kv_pb2.KeyValue = response.kvs[0]
        return leader

    def observe(self, timeout: float | None = None) -> Iterator[kv_pb2.KeyValue]:
        """The leader now, then every new leader or new value, as they happen.

        Waits for a first leader if there is none. With `timeout`, stops after that many
        seconds without any change.
        """
        while True:
            response = self.client.get(
                self.prefix, prefix=True, sort_order="ascend", sort_target="create", limit=1
            )
            if response.kvs:
                leader = response.kvs[0]
                revision = response.header.revision
            else:
                found = self._first_put(response.header.revision, timeout)
                if found is None:
                    return
                leader, revision = found
            yield leader
            if not (yield from self._follow(leader.key, revision, timeout)):
                return

    def _first_put(
        self, revision: int, timeout: float | None
    ) -> tuple[kv_pb2.KeyValue, int] | None:
        with self.client.watch(
            self.prefix, prefix=True, start_revision=revision, no_delete=True
        ) as watch:
            while True:
                try:
                    response = watch.get(timeout=timeout)
                except TimeoutError:
                    return None
                if response is None:
                    return None
                for event in response.events:
                    return event.kv, event.kv.mod_revision

    def _follow(
        self, key: bytes, revision: int, timeout: float | None
    ) -> Generator[kv_pb2.KeyValue, None, bool]:
        """Yield each new value of the leader key; returns False on timeout, True once deleted."""
        with self.client.watch(key, start_revision=revision + 1) as watch:
            while True:
                try:
                    response = watch.get(timeout=timeout)
                except TimeoutError:
                    return False
                if response is None:
                    return False
                for event in response.events:
                    if event.type == kv_pb2.Event.DELETE:
                        return True
                    yield event.kv

    def close(self) -> None:
        self.resign()

    def __enter__(self) -> Election:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --- asyncio ------------------------------------------------------------------------------------


class AsyncSession:
    """A lease kept alive by a background task; closing it revokes the lease."""

    def __init__(self, client: AsyncClient, ttl: int = DEFAULT_TTL_S) -> None:
        assert ttl > 0
        self.client = client
        self.ttl = ttl
        self.lease_id = 0
        self._keepalive: AsyncKeepAlive | None = None

    async def start(self) -> AsyncSession:
        assert self._keepalive is None, "already started"
        self.lease_id = (await self.client.lease_grant(self.ttl)).ID
        self._keepalive = await self.client.lease_keep_alive(self.lease_id)
        return self

    @property
    def alive(self) -> bool:
        keepalive = self._keepalive
        return keepalive is not None and keepalive.running and not keepalive.expired

    async def close(self) -> None:
        if self._keepalive is None:
            return
        await self._keepalive.stop()
        self._keepalive = None
        with contextlib.suppress(errors.LeaseNotFoundError):
            await self.client.lease_revoke(self.lease_id)

    async def __aenter__(self) -> AsyncSession:
        if self._keepalive is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _async_wait_deleted(client: AsyncClient, key: bytes, revision: int) -> None:
    async with await client.watch(key, start_revision=revision, no_put=True) as watch:
        async for response in watch:
            if any(e.type == kv_pb2.Event.DELETE for e in response.events):
                return
    raise errors.CanceledError("petcd: watch ended while waiting for a deletion")


async def _async_wait_older_gone(client: AsyncClient, prefix: bytes, my_revision: int) -> None:
    for _ in range(WAIT_ROUNDS_MAX):
        response = await client.unary(_RANGE, _older_request(prefix, my_revision))
        if not response.kvs:
            return
        await _async_wait_deleted(client, response.kvs[0].key, response.header.revision)
    raise AssertionError("waited for WAIT_ROUNDS_MAX older keys in turn")


class AsyncLock:
    """The asyncio twin of `Lock` (use `asyncio.timeout` around `acquire` to bound the wait)."""

    def __init__(
        self,
        client: AsyncClient,
        name: str | bytes,
        ttl: int = DEFAULT_TTL_S,
        session: AsyncSession | None = None,
    ) -> None:
        self.client = client
        self.prefix = _prefix(name)
        self.ttl = ttl
        self._session = session
        self._own_session = session is None
        self.key = b""
        self.revision = 0

    async def _queue(self) -> rpc_pb2.TxnResponse:
        if self._session is None:
            self._session = await AsyncSession(self.client, self.ttl).start()
        lease = self._session.lease_id
        self.key = self.prefix + f"{lease:x}".encode()
        response = await self.client.txn(*_queue_txn(self.key, b"", lease, self.prefix))
        self.revision = _my_revision(response)
        return response

    async def acquire(self) -> None:
        """Wait until we hold the lock. Cancelling the wait leaves the queue cleanly."""
        response = await self._queue()
        owner = response.responses[1].response_range.kvs
        if not owner or owner[0].create_revision == self.revision:
            return
        try:
            await _async_wait_older_gone(self.client, self.prefix, self.revision)
        except BaseException:
            await asyncio.shield(self._dequeue())
            raise
        if not (await self.client.get(self.key)).kvs:
            await self._dequeue()
            raise errors.LockSessionExpiredError()

    async def try_acquire(self) -> bool:
        response = await self._queue()
        owner = response.responses[1].response_range.kvs
        if not owner or owner[0].create_revision == self.revision:
            return True
        await self._dequeue()
        return False

    async def _dequeue(self) -> None:
        if self.key:
            await self.client.delete(self.key)
        self.key, self.revision = b"", 0
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def release(self) -> None:
        await self._dequeue()

    async def is_owner(self) -> bool:
        if not self.key:
            return False
        response = await self.client.get(
            self.prefix, prefix=True, sort_order="ascend", sort_target="create", limit=1
        )
        return bool(response.kvs) and response.kvs[0].key == self.key

    async def __aenter__(self) -> AsyncLock:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()


class AsyncElection:
    """The asyncio twin of `Election`."""

    def __init__(
        self,
        client: AsyncClient,
        name: str | bytes,
        ttl: int = DEFAULT_TTL_S,
        session: AsyncSession | None = None,
    ) -> None:
        self.client = client
        self.prefix = _prefix(name)
        self.ttl = ttl
        self._session = session
        self._own_session = session is None
        self.key = b""
        self.revision = 0

    async def campaign(self, value: str | bytes) -> None:
        """Wait until we are leader with `value`. Cancelling the wait withdraws the candidacy."""
        if self._session is None:
            self._session = await AsyncSession(self.client, self.ttl).start()
        lease = self._session.lease_id
        raw = rq.to_bytes(value)
        self.key = self.prefix + f"{lease:x}".encode()
        response = await self.client.txn(*_queue_txn(self.key, raw, lease, self.prefix))
        self.revision = _my_revision(response)
        if not response.succeeded and response.responses[0].response_range.kvs[0].value != raw:
            await self.proclaim(raw)
        try:
            await _async_wait_older_gone(self.client, self.prefix, self.revision)
        except BaseException:
            await asyncio.shield(self.resign())
            raise
        if not (await self.client.get(self.key)).kvs:
            await self.resign()
            raise errors.LockSessionExpiredError()

    async def proclaim(self, value: str | bytes) -> None:
        if not self.key or self._session is None:
            raise errors.ElectionNotLeaderError()
        response = await self.client.txn(
            [rq.compare_create(self.key, "=", self.revision)],
            [rq.op_put(self.key, value, lease=self._session.lease_id)],
        )
        if not response.succeeded:
            self.key = b""
            raise errors.ElectionNotLeaderError()

    async def resign(self) -> None:
        if self.key:
            await self.client.txn(
                [rq.compare_create(self.key, "=", self.revision)], [rq.op_delete(self.key)]
            )
        self.key, self.revision = b"", 0
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def leader(self) -> kv_pb2.KeyValue:
        response = await self.client.get(
            self.prefix, prefix=True, sort_order="ascend", sort_target="create", limit=1
        )
        if not response.kvs:
            raise errors.ElectionNoLeaderError()
        leader: kv_pb2.KeyValue = response.kvs[0]
        return leader

    async def observe(self) -> AsyncIterator[kv_pb2.KeyValue]:
        """The leader now, then every new leader or new value (waits for a first leader)."""
        while True:
            response = await self.client.get(
                self.prefix, prefix=True, sort_order="ascend", sort_target="create", limit=1
            )
            if response.kvs:
                leader, revision = response.kvs[0], response.header.revision
            else:
                leader, revision = await self._first_put(response.header.revision)
            yield leader
            async with await self.client.watch(leader.key, start_revision=revision + 1) as watch:
                deleted = False
                async for update in watch:
                    for event in update.events:
                        if event.type == kv_pb2.Event.DELETE:
                            deleted = True
                            break
                        yield event.kv
                    if deleted:
                        break

    async def _first_put(self, revision: int) -> tuple[kv_pb2.KeyValue, int]:
        watch = await self.client.watch(
            self.prefix, prefix=True, start_revision=revision, no_delete=True
        )
        async with watch:
            async for response in watch:
                for event in response.events:
                    return event.kv, event.kv.mod_revision
        raise errors.CanceledError("petcd: watch ended while waiting for a leader")

    async def close(self) -> None:
        await self.resign()

    async def __aenter__(self) -> AsyncElection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
