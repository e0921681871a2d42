"""Lock and Election recipes against real etcd 3.5, with two clients competing.

Mutual exclusion is checked by a shared critical-section counter that each holder raises and
lowers: with a broken lock two holders would overlap and the counter would reach 2.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from petcd import errors
from petcd.client import AsyncClient, AsyncElection, AsyncLock, Client, Election, Lock
from tests.support import EtcdProcess

WAIT_S = 15.0


@pytest.fixture
def clients(etcd35_module: EtcdProcess) -> Iterator[tuple[Client, Client]]:
    with Client([etcd35_module.endpoint]) as a, Client([etcd35_module.endpoint]) as b:
        yield a, b


def test_lock_is_mutually_exclusive_between_two_clients(clients: tuple[Client, Client]) -> None:
    inside = 0
    most_inside = 0
    rounds: list[str] = []
    guard = threading.Lock()

    def worker(client: Client, name: str) -> None:
        nonlocal inside, most_inside
        for _ in range(5):
            with Lock(client, "/locks/mutex", ttl=10):
                with guard:
                    inside += 1
                    most_inside = max(most_inside, inside)
                rounds.append(name)
                client.put("/locks/holder", name)  # a round trip while holding the lock
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=worker, args=(c, n)) for c, n in zip(clients, "ab")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(t.is_alive() for t in threads)
    assert most_inside == 1
    assert sorted(rounds) == ["a"] * 5 + ["b"] * 5


def test_lock_waits_for_the_holder_and_try_acquire(clients: tuple[Client, Client]) -> None:
    a, b = clients
    first = Lock(a, "/locks/wait", ttl=10)
    assert first.acquire()
    assert first.is_owner()
    second = Lock(b, "/locks/wait", ttl=10)
    assert not second.try_acquire()
    assert not second.acquire(timeout=0.3)  # still held: gives up, leaves the queue
    got: list[bool] = []
    before = a.get("x").header.revision
    waiter = threading.Thread(target=lambda: got.append(second.acquire(timeout=WAIT_S)))
    waiter.start()
    # the waiter is queued once its key exists; then release and it must take over
    queued = b.watch("/locks/wait/", prefix=True, start_revision=before + 1)
    assert queued.get(timeout=WAIT_S) is not None
    queued.cancel()
    first.release()
    waiter.join(WAIT_S)
    assert got == [True]
    assert second.is_owner() and not first.is_owner()
    second.release()
    assert a.get("/locks/wait/", prefix=True).count == 0


def test_lock_reports_an_expired_session(clients: tuple[Client, Client]) -> None:
    a, b = clients
    holder = Lock(a, "/locks/expire", ttl=10)
    holder.acquire()
    loser = Lock(b, "/locks/expire", ttl=10)
    result: list[BaseException | bool] = []

    def wait() -> None:
        try:
            result.append(loser.acquire(timeout=WAIT_S))
        except errors.PetcdError as exc:
            result.append(exc)

    before = a.get("x").header.revision
    thread = threading.Thread(target=wait)
    thread.start()
    # the waiter's key appears, then its lease is revoked: it must not think it holds the lock
    with b.watch("/locks/expire/", prefix=True, start_revision=before + 1) as w:
        response = w.get(timeout=WAIT_S)
        assert response is not None
        lease = response.events[0].kv.lease
    b.lease_revoke(lease)
    holder.release()
    thread.join(WAIT_S)
    assert len(result) == 1 and isinstance(result[0], errors.LockSessionExpiredError)


def test_election_handover_and_observe(clients: tuple[Client, Client]) -> None:
    a, b = clients
    first = Election(a, "/elect/e1", ttl=10)
    with pytest.raises(errors.ElectionNoLeaderError):
        first.leader()
    with pytest.raises(errors.ElectionNotLeaderError):
        first.proclaim("nope")
    assert first.campaign("alpha")
    assert first.leader().value == b"alpha"
    first.proclaim("alpha-2")
    observer = Election(b, "/elect/e1").observe(timeout=WAIT_S)
    assert next(observer).value == b"alpha-2"
    second = Election(b, "/elect/e1", ttl=10)
    won: list[bool] = []
    thread = threading.Thread(target=lambda: won.append(second.campaign("beta", timeout=WAIT_S)))
    thread.start()
    first.proclaim("alpha-3")
    assert next(observer).value == b"alpha-3"
    first.resign()
    assert next(observer).value == b"beta"  # the next candidate takes over
    thread.join(WAIT_S)
    assert won == [True]
    assert first.leader().value == b"beta"
    with pytest.raises(errors.ElectionNotLeaderError):
        first.proclaim("stale")
    second.resign()
    observer.close()


async def test_async_lock_and_election(etcd35_module: EtcdProcess) -> None:
    async with (
        AsyncClient([etcd35_module.endpoint]) as a,
        AsyncClient([etcd35_module.endpoint]) as b,
    ):
        inside = 0
        most_inside = 0

        async def worker(client: AsyncClient) -> None:
            nonlocal inside, most_inside
            for _ in range(4):
                async with AsyncLock(client, "/alocks/m", ttl=10):
                    inside += 1
                    most_inside = max(most_inside, inside)
                    await client.put("/alocks/holder", "x")
                    inside -= 1

        async with asyncio.timeout(WAIT_S):
            await asyncio.gather(worker(a), worker(b))
        assert most_inside == 1
        contender = AsyncLock(b, "/alocks/held", ttl=10)
        holder = AsyncLock(a, "/alocks/held", ttl=10)
        await holder.acquire()
        assert not await contender.try_acquire()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await contender.acquire()  # cancelled while queued: leaves the queue
        assert (await a.get("/alocks/held/", prefix=True)).count == 1
        await holder.release()

        first, second = AsyncElection(a, "/aelect", ttl=10), AsyncElection(b, "/aelect", ttl=10)
        await first.campaign("one")
        observe = AsyncElection(b, "/aelect").observe()
        async with asyncio.timeout(WAIT_S):
            assert (await anext(observe)).value == b"one"
            campaign = asyncio.create_task(second.campaign("two"))
            await first.resign()
            assert (await anext(observe)).value == b"two"
            await campaign
        assert (await second.leader()).value == b"two"
        await second.resign()
        await observe.aclose()
