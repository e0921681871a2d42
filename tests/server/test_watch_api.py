"""The Watch API on the wire, checked against real etcd 3.5 with the same test.

Each test runs twice, against etcd 3.5.1 and against petcd, through raw gRPC streams, so the
responses (created/canceled flags, ids, cancel reasons, compact revisions, fragments, progress
notifications) must be what etcd sends.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from petcd.pb import rpc_pb2, rpc_pb2_grpc
from tests.support.petcd_process import PetcdProcess
from tests.support.process import EtcdProcess, require_binary

pytestmark = pytest.mark.integration
PROGRESS_ARGS = ["--experimental-watch-progress-notify-interval=300ms"]


@pytest.fixture(scope="module", params=["etcd", "petcd"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    data = tmp_path_factory.mktemp(request.param)
    if request.param == "etcd":
        require_binary("3.5")
        with EtcdProcess("3.5", data, extra_args=PROGRESS_ARGS) as etcd:
            yield etcd
    else:
        with PetcdProcess(data, extra_args=PROGRESS_ARGS) as petcd:
            yield petcd


class Stream:
    """A raw Watch stream: send requests, receive responses with a timeout."""

    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self.stub = rpc_pb2_grpc.WatchStub(self.channel)  # type: ignore[no-untyped-call]
        self.kv = rpc_pb2_grpc.KVStub(self.channel)  # type: ignore[no-untyped-call]
        self.requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
        self.responses: queue.Queue[rpc_pb2.WatchResponse] = queue.Queue()
        self.call = self.stub.Watch(iter(self.requests.get, None))
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        try:
            for response in self.call:
                self.responses.put(response)
        except grpc.RpcError:
            pass

    def send(self, **kwargs: Any) -> None:
        self.requests.put(rpc_pb2.WatchRequest(**kwargs))

    def recv(self, timeout: float = 10.0) -> rpc_pb2.WatchResponse:
        return self.responses.get(timeout=timeout)

    def quiet(self, seconds: float) -> bool:
        try:
            self.responses.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def put(self, key: bytes, value: bytes) -> int:
        return int(self.kv.Put(rpc_pb2.PutRequest(key=key, value=value)).header.revision)

    def close(self) -> None:
        self.requests.put(None)
        self.call.cancel()
        self.channel.close()


@pytest.fixture
def stream(server: Any) -> Iterator[Stream]:
    s = Stream(server.endpoint)
    yield s
    s.close()


def create(**kwargs: Any) -> rpc_pb2.WatchCreateRequest:
    return rpc_pb2.WatchCreateRequest(**kwargs)


def test_create_events_and_cancel(stream: Stream) -> None:
    stream.send(create_request=create(key=b"wa/", range_end=b"wa0", prev_kv=True))
    created = stream.recv()
    assert created.created and not created.canceled and created.watch_id == 0
    first = stream.put(b"wa/1", b"one")
    stream.put(b"wa/1", b"two")
    events = stream.recv()
    assert [(e.kv.key, e.kv.value, e.kv.mod_revision) for e in events.events] == [
        (b"wa/1", b"one", first)
    ]
    second = stream.recv()
    assert second.events[0].prev_kv.value == b"one"
    assert second.header.revision == first + 1
    stream.send(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=0))
    canceled = stream.recv()
    assert canceled.canceled and canceled.watch_id == 0 and not canceled.created
    stream.put(b"wa/1", b"three")
    assert stream.quiet(0.5)


def test_filters_and_explicit_ids(stream: Stream) -> None:
    stream.send(
        create_request=create(key=b"wf", watch_id=7, filters=[rpc_pb2.WatchCreateRequest.NOPUT])
    )
    assert stream.recv().watch_id == 7
    stream.send(create_request=create(key=b"wf", watch_id=7))
    duplicate = stream.recv()
    assert (duplicate.created, duplicate.canceled, duplicate.watch_id) == (True, True, -1)
    assert duplicate.cancel_reason == "mvcc: duplicate watch ID provided on the WatchStream"
    stream.send(create_request=create(key=b"wf"))
    assert stream.recv().watch_id == 0  # auto ids count from 0, skipping ids in use
    stream.put(b"wf", b"v")
    only_put = stream.recv()
    assert only_put.watch_id == 0 and only_put.events[0].type == 0
    kv = stream.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"wf"))
    deletes = sorted([stream.recv(), stream.recv()], key=lambda r: r.watch_id)
    assert [r.watch_id for r in deletes] == [0, 7]
    assert deletes[1].events[0].type == 1
    assert deletes[1].events[0].kv.mod_revision == kv.header.revision


def test_empty_range_is_refused(stream: Stream) -> None:
    stream.send(create_request=create(key=b"b", range_end=b"a"))
    refused = stream.recv()
    assert (refused.created, refused.canceled, refused.watch_id) == (True, True, -1)
    assert refused.cancel_reason == "mvcc: watcher range is empty"


def test_compacted_start_revision(stream: Stream) -> None:
    first = stream.put(b"wc", b"1")
    last = stream.put(b"wc", b"2")
    stream.kv.Compact(rpc_pb2.CompactionRequest(revision=last, physical=True))
    stream.send(create_request=create(key=b"wc", start_revision=first))
    created = stream.recv()
    assert created.created
    canceled = stream.recv()
    assert canceled.canceled and canceled.compact_revision == last
    assert canceled.watch_id == created.watch_id
    assert not canceled.events


def test_history_then_live(stream: Stream) -> None:
    first = stream.put(b"wh", b"1")
    stream.put(b"wh", b"2")
    stream.send(create_request=create(key=b"wh", start_revision=first))
    assert stream.recv().created
    history = []
    while len(history) < 2:
        history.extend(e.kv.value for e in stream.recv().events)
    assert history == [b"1", b"2"]
    stream.put(b"wh", b"3")
    assert [e.kv.value for e in stream.recv().events] == [b"3"]


def test_progress_notify_and_request(stream: Stream) -> None:
    stream.send(create_request=create(key=b"wp", progress_notify=True))
    created = stream.recv()
    notify = stream.recv(timeout=5)
    assert notify.watch_id == created.watch_id and not notify.events
    assert notify.header.revision >= created.header.revision
    stream.send(progress_request=rpc_pb2.WatchProgressRequest())
    while True:
        progress = stream.recv(timeout=5)
        if progress.watch_id == -1:
            break
    assert not progress.events and not progress.created


def test_fragmented_large_revision(stream: Stream) -> None:
    # One revision whose events (with their previous values) pass the 2 MiB fragment limit
    # while the txn itself stays under --max-request-bytes (1.5 MiB).
    value = b"x" * (340 * 1024)

    def overwrite() -> None:
        stream.kv.Txn(
            rpc_pb2.TxnRequest(
                success=[
                    rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"wl/%d" % i, value=value))
                    for i in range(4)
                ]
            )
        )

    overwrite()
    stream.send(create_request=create(key=b"wl/", range_end=b"wl0", fragment=True, prev_kv=True))
    assert stream.recv().created
    overwrite()
    parts = [stream.recv()]
    while parts[-1].fragment:
        parts.append(stream.recv())
    assert len(parts) > 1
    assert sum(len(p.events) for p in parts) == 4
    assert all(p.fragment for p in parts[:-1]) and not parts[-1].fragment
    assert all(p.events[0].prev_kv.value == value for p in parts)
