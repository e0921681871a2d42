"""The client's pure parts, without a server: ranges, builders, errors, retries, demux, snapshot."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from petcd import errors
from petcd.client import requests as rq
from petcd.client import transport as tp
from petcd.client.snapshot import SnapshotVerifier
from petcd.client.watchdemux import DeliveryKind, WatchDemux, WatchState
from petcd.pb import kv_pb2, rpc_pb2

# --- key ranges --------------------------------------------------------------------------------


def test_prefix_range_end_examples() -> None:
    assert rq.prefix_range_end(b"abc") == b"abd"
    assert rq.prefix_range_end(b"a\xff") == b"b"
    assert rq.prefix_range_end(b"\xff\xff") == b"\x00"
    assert rq.prefix_range_end(b"") == b"\x00"


@given(st.binary(min_size=1, max_size=8), st.binary(max_size=10))
def test_prefix_range_end_selects_exactly_the_prefix(prefix: bytes, key: bytes) -> None:
    end = rq.prefix_range_end(prefix)
    in_range = prefix <= key and (end == b"\x00" or key < end)
    assert in_range == key.startswith(prefix)


def test_key_range_forms() -> None:
    assert rq.key_range("k") == (b"k", b"")
    assert rq.key_range("a", "c") == (b"a", b"c")
    assert rq.key_range("ab", prefix=True) == (b"ab", b"ac")
    assert rq.key_range("", prefix=True) == (b"\x00", b"\x00")
    assert rq.key_range("m", from_key=True) == (b"m", b"\x00")
    assert rq.key_range("", from_key=True) == (b"\x00", b"\x00")
    with pytest.raises(ValueError):
        rq.key_range("a", "b", prefix=True)


def test_range_request_carries_every_option() -> None:
    request = rq.range_request(
        "k",
        prefix=True,
        limit=3,
        revision=9,
        sort_order="descend",
        sort_target="mod",
        serializable=True,
        keys_only=True,
        count_only=True,
        min_mod_revision=1,
        max_mod_revision=2,
        min_create_revision=3,
        max_create_revision=4,
    )
    assert (request.key, request.range_end, request.limit, request.revision) == (b"k", b"l", 3, 9)
    assert request.sort_order == rpc_pb2.RangeRequest.DESCEND
    assert request.sort_target == rpc_pb2.RangeRequest.MOD
    assert request.serializable and request.keys_only and request.count_only
    assert (request.min_mod_revision, request.max_mod_revision) == (1, 2)
    assert (request.min_create_revision, request.max_create_revision) == (3, 4)


def test_compare_and_op_helpers() -> None:
    cmp = rq.compare_mod("k", "<", 7)
    assert (cmp.key, cmp.target, cmp.result, cmp.mod_revision) == (
        b"k",
        rpc_pb2.Compare.MOD,
        rpc_pb2.Compare.LESS,
        7,
    )
    assert rq.compare_value("k", "!=", "v").result == rpc_pb2.Compare.NOT_EQUAL
    assert rq.compare_version("p", "=", 0, prefix=True).range_end == b"q"
    assert rq.compare_create("k", "==", 0).result == rpc_pb2.Compare.EQUAL
    assert rq.compare_lease("k", ">", 5).lease == 5
    with pytest.raises(ValueError):
        rq.compare_mod("k", "<=", 1)  # type: ignore[arg-type]
    nested = rq.op_txn([cmp], [rq.op_put("k", "v", lease=3)], [rq.op_delete("k", prev_kv=True)])
    assert nested.request_txn.success[0].request_put.lease == 3
    assert nested.request_txn.failure[0].request_delete_range.prev_kv
    with pytest.raises(TypeError):
        rq.txn_request([rq.op_get("k")])  # type: ignore[list-item]


def test_watch_and_permission_builders() -> None:
    request = rq.watch_create_request("p", prefix=True, start_revision=4, no_put=True, prev_kv=True)
    assert (request.key, request.range_end, request.start_revision) == (b"p", b"q", 4)
    assert list(request.filters) == [rpc_pb2.WatchCreateRequest.NOPUT]
    perm = rq.permission("readwrite", "a", prefix=True)
    assert (perm.key, perm.range_end) == (b"a", b"b")


# --- errors and retries ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "cls"),
    [
        (11, "etcdserver: mvcc: required revision has been compacted", errors.CompactedError),
        (3, "etcdserver: key is not provided", errors.EmptyKeyError),
        (14, "etcdserver: no leader", errors.NoLeaderError),
        (14, "failed to connect to all addresses; last error: ...", errors.UnavailableError),
        (4, "Deadline Exceeded", errors.DeadlineExceededError),
        (1, "Cancelled", errors.CanceledError),
        (8, "grpc: received message larger than max (5 vs. 4)", errors.MessageTooLargeError),
        (2, "election: no leader", errors.ElectionNoLeaderError),
    ],
)
def test_error_from_status(code: int, message: str, cls: type[errors.PetcdError]) -> None:
    error = tp.error_from_status(code, message)
    assert type(error) is cls
    assert error.message == message


def test_retry_rules_follow_clientv3() -> None:
    refused = errors.UnavailableError("failed to connect to all addresses; last error: refused")
    timeout = errors.RequestTimeoutError()
    assert tp.retry_kind(refused, repeatable=False, can_reauth=False) is tp.RetryKind.ELSEWHERE
    assert tp.retry_kind(timeout, repeatable=True, can_reauth=False) is tp.RetryKind.ELSEWHERE
    # a write that may have reached the server is never sent twice
    assert tp.retry_kind(timeout, repeatable=False, can_reauth=False) is tp.RetryKind.FINAL
    assert (
        tp.retry_kind(errors.InvalidAuthTokenError(), False, can_reauth=True) is tp.RetryKind.REAUTH
    )
    assert (
        tp.retry_kind(errors.InvalidAuthTokenError(), False, can_reauth=False) is tp.RetryKind.FINAL
    )
    assert tp.retry_kind(errors.CompactedError(), True, can_reauth=True) is tp.RetryKind.FINAL


def test_parse_endpoints() -> None:
    assert tp.parse_endpoints("a:1, http://b:2/") == (["a:1", "b:2"], False)
    assert tp.parse_endpoints(["https://c:3"]) == (["c:3"], True)
    with pytest.raises(ValueError):
        tp.parse_endpoints("")


# --- watch demux -------------------------------------------------------------------------------


def _created(
    watch_id: int, revision: int, canceled: bool = False, reason: str = ""
) -> rpc_pb2.WatchResponse:
    response = rpc_pb2.WatchResponse(
        watch_id=watch_id, created=True, canceled=canceled, cancel_reason=reason
    )
    response.header.revision = revision
    return response


def _events(watch_id: int, *revisions: int, fragment: bool = False) -> rpc_pb2.WatchResponse:
    events = [kv_pb2.Event(kv=kv_pb2.KeyValue(key=b"k", mod_revision=r)) for r in revisions]
    return rpc_pb2.WatchResponse(watch_id=watch_id, events=events, fragment=fragment)


def test_demux_routes_creations_in_order_and_events_by_id() -> None:
    demux = WatchDemux()
    a, b = (
        WatchState(rq.watch_create_request("a")),
        WatchState(rq.watch_create_request("b", start_revision=3)),
    )
    demux.create(a)
    demux.create(b)
    (da,), _ = demux.receive(_created(0, 10))
    (db,), _ = demux.receive(_created(1, 10))
    assert (da.state, da.kind, db.state, db.kind) == (
        a,
        DeliveryKind.CREATED,
        b,
        DeliveryKind.CREATED,
    )
    assert (a.next_revision, b.next_revision) == (11, 3)
    (d,), _ = demux.receive(_events(1, 4, 5))
    assert d.state is b and d.kind is DeliveryKind.RESPONSE
    assert b.next_revision == 6
    progress, _ = demux.receive(rpc_pb2.WatchResponse(watch_id=-1))
    assert {p.state.request.key for p in progress} == {b"a", b"b"}


def test_demux_failed_creation_and_cancel() -> None:
    demux = WatchDemux()
    bad = WatchState(rq.watch_create_request("z", "a"))
    demux.create(bad)
    (d,), _ = demux.receive(_created(-1, 5, canceled=True, reason="mvcc: watcher range is empty"))
    assert d.kind is DeliveryKind.CREATE_FAILED
    assert isinstance(d.error, errors.WatcherRangeEmptyError)
    good = WatchState(rq.watch_create_request("k"))
    demux.create(good)
    demux.receive(_created(7, 5))
    cancel = demux.cancel(good)
    assert cancel is not None and cancel.cancel_request.watch_id == 7
    assert demux.receive(_events(7, 6)) == ([], [])  # late events of a cancelled watch are dropped


def test_demux_cancel_before_created_cancels_on_the_server() -> None:
    demux = WatchDemux()
    state = WatchState(rq.watch_create_request("k"))
    demux.create(state)
    assert demux.cancel(state) is None
    deliveries, sends = demux.receive(_created(3, 9))
    assert deliveries == []
    assert sends[0].cancel_request.watch_id == 3


def test_demux_joins_fragments_and_reports_compaction() -> None:
    demux = WatchDemux()
    state = WatchState(rq.watch_create_request("k", fragment=True))
    demux.create(state)
    demux.receive(_created(0, 1))
    assert demux.receive(_events(0, 2, fragment=True)) == ([], [])
    (joined,), _ = demux.receive(_events(0, 2))
    assert joined.response is not None
    assert [e.kv.mod_revision for e in joined.response.events] == [2, 2]
    (end,), _ = demux.receive(rpc_pb2.WatchResponse(watch_id=0, canceled=True, compact_revision=5))
    assert end.kind is DeliveryKind.ERROR and isinstance(end.error, errors.CompactedError)
    assert state.compact_revision == 5


def test_demux_resumes_from_the_next_revision() -> None:
    demux = WatchDemux()
    state = WatchState(rq.watch_create_request("k"))
    demux.create(state)
    demux.receive(_created(0, 10))
    demux.receive(_events(0, 12))
    (resume,) = demux.disconnected()
    assert resume.create_request.start_revision == 13
    deliveries, _ = demux.receive(_created(4, 20))
    assert deliveries == []  # the caller saw its creation long ago
    (d,), _ = demux.receive(_events(4, 13))
    assert d.state is state


# --- snapshot verification ---------------------------------------------------------------------


@pytest.mark.parametrize("split", [1, 7, 32, 1000])
def test_snapshot_verifier_accepts_the_trailer_however_split(split: int) -> None:
    data = bytes(range(256)) * 9
    stream = data + hashlib.sha256(data).digest()
    verifier = SnapshotVerifier()
    for i in range(0, len(stream), split):
        verifier.feed(stream[i : i + split])
    assert verifier.finish() == hashlib.sha256(data).hexdigest()
    assert verifier.size_bytes == len(stream)


def test_snapshot_verifier_rejects_a_bad_trailer() -> None:
    verifier = SnapshotVerifier()
    verifier.feed(b"x" * 100)
    verifier.feed(b"\x00" * 32)
    with pytest.raises(errors.SnapshotIntegrityError):
        verifier.finish()
    short = SnapshotVerifier()
    short.feed(b"abc")
    with pytest.raises(errors.SnapshotIntegrityError):
        short.finish()
