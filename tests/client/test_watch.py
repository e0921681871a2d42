"""Watches against real etcd 3.5, sync and asyncio: interleaved writes, shared streams, cancel,
progress, filters, history, compaction, and resuming after the server restarts.

Waits are bounded (`watch.get(timeout=...)`, `asyncio.timeout`), never sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from petcd import errors
from petcd.client import AsyncClient, AsyncWatch, Client, Watch
from petcd.pb import kv_pb2, rpc_pb2
from tests.support import EtcdProcess

WAIT_S = 10.0


@pytest.fixture
def client(etcd35_module: EtcdProcess) -> Iterator[Client]:
    with Client([etcd35_module.endpoint]) as c:
        yield c


@pytest.fixture
def p(request: pytest.FixtureRequest) -> str:
    return f"/{request.node.name}/"


def _collect(watch: Watch, count: int) -> list[kv_pb2.Event]:
    """The next `count` events of `watch` (fails the test if they do not come in time)."""
    events: list[kv_pb2.Event] = []
    while len(events) < count:
        response = watch.get(timeout=WAIT_S)
        assert response is not None, "watch ended early"
        events.extend(response.events)
    return events


def test_watch_sees_interleaved_writes_in_order(client: Client, p: str) -> None:
    with client.watch(p, prefix=True, prev_kv=True) as watch:
        assert watch.created_revision > 0
        writer_revisions: list[int] = []

        def writer() -> None:
            with Client(client.endpoints) as other:
                for i in range(20):
                    writer_revisions.append(other.put(f"{p}{i % 3}", str(i)).header.revision)
                writer_revisions.append(other.delete(f"{p}0").header.revision)

        thread = threading.Thread(target=writer)
        thread.start()
        events = _collect(watch, 21)
        thread.join(WAIT_S)
    assert [e.kv.mod_revision for e in events] == writer_revisions
    assert events[-1].type == kv_pb2.Event.DELETE
    assert events[-1].prev_kv.value == b"18"
    assert events[3].prev_kv.value == b"0"  # the 4th write overwrote key 0


def test_many_watches_share_one_stream_and_cancel_independently(client: Client, p: str) -> None:
    a = client.watch(p + "a")
    b = client.watch(p + "b")
    everything = client.watch(p, prefix=True)
    assert len({a.watch_id, b.watch_id, everything.watch_id}) == 3
    client.put(p + "a", "1")
    client.put(p + "b", "2")
    assert [e.kv.value for e in _collect(a, 1)] == [b"1"]
    assert [e.kv.value for e in _collect(b, 1)] == [b"2"]
    a.cancel()
    assert a.get(timeout=WAIT_S) is None  # iteration ended
    client.put(p + "a", "3")
    assert [e.kv.value for e in _collect(everything, 3)] == [b"1", b"2", b"3"]
    b.cancel()
    everything.cancel()


def test_watch_history_filters_and_progress(client: Client, p: str) -> None:
    start = client.put(p + "k", "1").header.revision
    client.put(p + "k", "2")
    client.delete(p + "k")
    with client.watch(p + "k", start_revision=start) as history:
        assert [e.type for e in _collect(history, 3)] == [0, 0, 1]
    with client.watch(p + "k", start_revision=start, no_put=True) as deletes:
        assert [e.type for e in _collect(deletes, 1)] == [kv_pb2.Event.DELETE]
    with client.watch(p + "k") as idle:
        client.request_progress()
        progress = idle.get(timeout=WAIT_S)
        assert progress is not None
        assert progress.watch_id == -1 and not progress.events
        assert progress.header.revision >= start + 2


def test_watch_creation_failure_is_an_error(client: Client, p: str) -> None:
    with pytest.raises(errors.WatcherRangeEmptyError):
        client.watch(p + "z", p + "a")
    # the stream survives a failed creation
    with client.watch(p + "ok") as watch:
        client.put(p + "ok", "1")
        assert len(_collect(watch, 1)) == 1


def test_watch_on_compacted_revision_raises(etcd35: EtcdProcess) -> None:
    with Client([etcd35.endpoint]) as client:
        first = client.put("w", "1").header.revision
        last = client.put("w", "2").header.revision
        client.compact(last)
        watch = client.watch("w", start_revision=first)
        with pytest.raises(errors.CompactedError):
            watch.get(timeout=WAIT_S)
        assert watch.compact_revision == last


def test_watch_resumes_after_the_server_restarts(etcd35: EtcdProcess) -> None:
    with Client([etcd35.endpoint], timeout=20) as client:
        watch = client.watch("r", prefix=True)
        client.put("r/1", "before")
        assert [e.kv.value for e in _collect(watch, 1)] == [b"before"]
        etcd35.stop()
        etcd35.launch()
        etcd35.wait_ready()
        # written by another client at once, most likely before the watch has reconnected:
        # the resumed watch starts from its next revision, so it must see both
        with Client([etcd35.endpoint]) as writer:
            writer.put("r/2", "after-1")
            writer.put("r/3", "after-2")
        assert [e.kv.value for e in _collect(watch, 2)] == [b"after-1", b"after-2"]
        watch.cancel()


def test_fragmented_watch_responses_are_joined(client: Client, p: str) -> None:
    # One delete of 4 keys whose prev_kv carry 600 KiB each: a 2.4 MiB response, above etcd's
    # 2 MiB threshold, so etcd splits it into fragments; the client hands back one response.
    value = b"v" * (600 * 1024)
    for i in range(4):
        client.put(f"{p}{i}", value)
    with client.watch(p, prefix=True, fragment=True, prev_kv=True) as watch:
        deleted = client.delete(p, prefix=True)
        response = watch.get(timeout=WAIT_S)
    assert response is not None
    assert len(response.events) == 4
    assert {e.kv.mod_revision for e in response.events} == {deleted.header.revision}
    assert all(e.prev_kv.value == value for e in response.events)


async def _take(watch: AsyncWatch, count: int) -> AsyncIterator[rpc_pb2.WatchResponse]:
    """Responses of `watch` until `count` events have come."""
    seen = 0
    async for response in watch:
        yield response
        seen += len(response.events)
        if seen >= count:
            return


async def test_async_watch_interleaved_writes_and_cancel(etcd35_module: EtcdProcess) -> None:
    async with AsyncClient([etcd35_module.endpoint]) as client:
        watch = await client.watch("/async/", prefix=True)
        other = await client.watch("/async/b")

        async def writer() -> list[int]:
            return [(await client.put(f"/async/{k}", k)).header.revision for k in "abab"]

        async with asyncio.timeout(WAIT_S):
            revisions = await writer()
            seen: list[int] = []
            async for response in watch:
                seen.extend(e.kv.mod_revision for e in response.events)
                if len(seen) == 4:
                    break
            b_events = [e async for r in _take(other, 2) for e in r.events]
        assert seen == revisions
        assert [e.kv.mod_revision for e in b_events] == revisions[1::2]
        await watch.cancel()
        async with asyncio.timeout(WAIT_S):
            assert [r async for r in watch] == []
        await client.request_progress()
        async with asyncio.timeout(WAIT_S):
            progress = await anext(aiter(other))
        assert progress.watch_id == -1
        await other.cancel()


async def test_async_watch_errors_and_separate_streams(etcd35: EtcdProcess) -> None:
    async with AsyncClient([etcd35.endpoint]) as client:
        with pytest.raises(errors.WatcherRangeEmptyError):
            await client.watch("z", "a")
        first = (await client.put("k", "1")).header.revision
        last = (await client.put("k", "2")).header.revision
        await client.compact(last)
        stream = client.watch_stream()
        watch = await stream.watch("k", start_revision=first)
        async with asyncio.timeout(WAIT_S):
            with pytest.raises(errors.CompactedError):
                await anext(aiter(watch))
        await stream.close()


async def test_async_watch_resumes_after_the_server_restarts(etcd35: EtcdProcess) -> None:
    async with AsyncClient([etcd35.endpoint], timeout=20) as client:
        watch = await client.watch("r", prefix=True)
        await client.put("r/1", "before")
        etcd35.stop()
        etcd35.launch()
        await asyncio.to_thread(etcd35.wait_ready)
        with Client([etcd35.endpoint]) as writer:
            writer.put("r/2", "after")
        values: list[bytes] = []
        async with asyncio.timeout(WAIT_S):
            async for response in watch:
                values.extend(e.kv.value for e in response.events)
                if len(values) == 2:
                    break
        assert values == [b"before", b"after"]
        await watch.cancel()
