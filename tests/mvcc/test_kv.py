"""KV semantics through the store's public interface: revisions, range options, put flags,
delete, txn, compaction (logical and physical), hashes, aborts and reopening."""

from __future__ import annotations

from typing import Any

import pytest

from petcd import errors
from petcd.mvcc import Backend, WatchableStore
from petcd.pb import rpc_pb2 as rpc
from tests.mvcc.conftest import FakeLessor


def put(store: WatchableStore, key: bytes, value: bytes = b"v", **kw: Any) -> rpc.PutResponse:
    b = store.write_batch()
    try:
        resp = b.put(rpc.PutRequest(key=key, value=value, **kw))
    except BaseException:
        b.abort()
        raise
    b.commit()
    return resp


def delete(store: WatchableStore, key: bytes, end: bytes = b"", prev: bool = False) -> Any:
    b = store.write_batch()
    resp = b.delete_range(rpc.DeleteRangeRequest(key=key, range_end=end, prev_kv=prev))
    b.commit()
    return resp


def rng(store: WatchableStore, key: bytes, end: bytes = b"", **kw: Any) -> rpc.RangeResponse:
    return store.range(rpc.RangeRequest(key=key, range_end=end, **kw))


def keys_of(resp: rpc.RangeResponse) -> list[bytes]:
    return [kv.key for kv in resp.kvs]


def backend_revisions(store: WatchableStore) -> int:
    return len(store.backend.items_raw("key"))


def test_empty_store_is_at_revision_one_and_first_write_makes_two(store: WatchableStore) -> None:
    assert store.current_revision == 1
    assert store.compact_revision == -1
    assert put(store, b"a").header.revision == 2
    assert store.current_revision == 2


def test_versions_and_generations(store: WatchableStore) -> None:
    put(store, b"k", b"1")
    put(store, b"k", b"2")
    kv = rng(store, b"k").kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version, kv.value) == (2, 3, 2, b"2")
    resp = delete(store, b"k", prev=True)
    assert resp.deleted == 1
    assert resp.header.revision == 4
    assert resp.prev_kvs[0].value == b"2"
    put(store, b"k", b"3")
    kv = rng(store, b"k").kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version) == (5, 5, 1)
    # history stays readable at every revision
    assert rng(store, b"k", revision=3).kvs[0].value == b"2"
    assert rng(store, b"k", revision=4).count == 0
    assert rng(store, b"k", revision=1).count == 0


def test_delete_of_nothing_makes_no_revision(store: WatchableStore) -> None:
    put(store, b"a")
    resp = delete(store, b"zzz", b"\x00")
    assert resp.deleted == 0
    assert resp.header.revision == 2
    assert store.current_revision == 2


def test_range_end_conventions_limit_more_count(store: WatchableStore) -> None:
    for key in [b"a", b"ab", b"abc", b"b", b"c\xff"]:
        put(store, key)
    assert keys_of(rng(store, b"ab")) == [b"ab"]
    assert keys_of(rng(store, b"a", b"b")) == [b"a", b"ab", b"abc"]
    assert keys_of(rng(store, b"ab", b"\x00")) == [b"ab", b"abc", b"b", b"c\xff"]
    assert keys_of(rng(store, b"\x00", b"\x00")) == [b"a", b"ab", b"abc", b"b", b"c\xff"]
    assert rng(store, b"b", b"a").count == 0  # end <= key: empty
    resp = rng(store, b"a", b"\x00", limit=2)
    assert keys_of(resp) == [b"a", b"ab"]
    assert resp.more is True
    assert resp.count == 5
    resp = rng(store, b"a", b"\x00", limit=5)
    assert resp.more is False
    resp = rng(store, b"a", b"\x00", count_only=True)
    assert resp.count == 5
    assert len(resp.kvs) == 0
    resp = rng(store, b"a", b"b", keys_only=True)
    assert [kv.value for kv in resp.kvs] == [b"", b"", b""]
    assert resp.kvs[0].mod_revision == 2


def test_range_revision_errors(store: WatchableStore) -> None:
    put(store, b"a")
    put(store, b"a")
    with pytest.raises(errors.FutureRevisionError):
        rng(store, b"a", revision=4)
    b = store.write_batch()
    b.compact(3)
    b.commit()
    with pytest.raises(errors.CompactedError):
        rng(store, b"a", revision=2)
    assert rng(store, b"a", revision=3).count == 1  # the compact revision itself is readable


def test_sort_and_revision_filters(store: WatchableStore) -> None:
    put(store, b"a", b"3")
    put(store, b"b", b"1")
    put(store, b"c", b"2")
    put(store, b"a", b"4")  # a: version 2, mod 5
    desc = rng(store, b"a", b"\x00", sort_order=rpc.RangeRequest.DESCEND)
    assert keys_of(desc) == [b"c", b"b", b"a"]
    by_value = rng(store, b"a", b"\x00", sort_target=rpc.RangeRequest.VALUE)  # NONE -> ASCEND
    assert keys_of(by_value) == [b"b", b"c", b"a"]
    by_mod = rng(
        store,
        b"a",
        b"\x00",
        sort_target=rpc.RangeRequest.MOD,
        sort_order=rpc.RangeRequest.DESCEND,
        limit=2,
    )
    assert keys_of(by_mod) == [b"a", b"c"]
    assert by_mod.more is True
    assert by_mod.count == 3
    filtered = rng(store, b"a", b"\x00", min_mod_revision=3, max_create_revision=3)
    assert keys_of(filtered) == [b"a", b"b"]  # c was created at 4
    assert filtered.count == 3  # count is before the filters


def test_put_flags(store: WatchableStore) -> None:
    lessor = store.lease_hooks
    assert isinstance(lessor, FakeLessor)
    with pytest.raises(errors.KeyNotFoundError):
        put(store, b"k", b"", ignore_value=True)
    with pytest.raises(errors.LeaseNotFoundError):
        put(store, b"k", lease=7)
    assert store.current_revision == 1  # refused requests change nothing
    put(store, b"k", b"v1", lease=1)
    assert lessor.attached == {b"k": 1}
    resp = put(store, b"k", b"", ignore_value=True, prev_kv=True)
    assert resp.prev_kv.value == b"v1"
    kv = rng(store, b"k").kvs[0]
    assert (kv.value, kv.lease) == (b"v1", 0)
    assert lessor.attached == {}
    put(store, b"k", b"v2", lease=1)
    put(store, b"k", b"v3", ignore_lease=True)
    kv = rng(store, b"k").kvs[0]
    assert (kv.value, kv.lease) == (b"v3", 1)
    delete(store, b"k")
    assert lessor.attached == {}


def cmp(key: bytes, target: str, result: str, **value: Any) -> rpc.Compare:
    return rpc.Compare(
        key=key,
        target=getattr(rpc.Compare, target),
        result=getattr(rpc.Compare, result),
        **value,
    )


def op_put(key: bytes, value: bytes = b"v") -> rpc.RequestOp:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))


def op_range(key: bytes, end: bytes = b"") -> rpc.RequestOp:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key, range_end=end))


def test_txn_compares_branches_and_headers(store: WatchableStore) -> None:
    put(store, b"a", b"1")
    txn = rpc.TxnRequest(
        compare=[
            cmp(b"a", "VALUE", "EQUAL", value=b"1"),
            cmp(b"zz", "VERSION", "EQUAL", version=0),
        ],
        success=[op_range(b"a"), op_put(b"b"), op_range(b"a", b"\x00")],
        failure=[op_put(b"c")],
    )
    b = store.write_batch()
    resp = b.txn(txn)
    b.commit()
    assert resp.succeeded is True
    assert resp.header.revision == 3
    revs = [r.WhichOneof("response") for r in resp.responses]
    assert revs == ["response_range", "response_put", "response_range"]
    assert resp.responses[0].response_range.header.revision == 2  # before the first write
    assert resp.responses[1].response_put.header.revision == 3
    assert keys_of(resp.responses[2].response_range) == [b"a", b"b"]  # sees the txn's put
    # value compare on a missing key is false; other targets compare against 0
    missing = rpc.TxnRequest(compare=[cmp(b"nope", "VALUE", "EQUAL", value=b"")])
    assert store.txn_read_only(missing).succeeded is False
    zero = rpc.TxnRequest(compare=[cmp(b"nope", "MOD", "LESS", mod_revision=1)])
    assert store.txn_read_only(zero).succeeded is True
    ranged = rpc.TxnRequest(
        compare=[
            rpc.Compare(
                key=b"a",
                range_end=b"c",
                target=rpc.Compare.CREATE,
                result=rpc.Compare.GREATER,
                create_revision=1,
            )
        ]
    )
    assert store.txn_read_only(ranged).succeeded is True


def test_txn_nested_and_read_only_make_no_revision(store: WatchableStore) -> None:
    inner = rpc.TxnRequest(
        compare=[cmp(b"x", "VERSION", "GREATER", version=0)], failure=[op_put(b"x")]
    )
    outer = rpc.TxnRequest(success=[rpc.RequestOp(request_txn=inner), op_put(b"y")])
    b = store.write_batch()
    resp = b.txn(outer)
    ro = b.txn(rpc.TxnRequest(success=[op_range(b"x")]))
    b.commit()
    nested = resp.responses[0].response_txn
    assert nested.succeeded is False
    assert nested.HasField("header")
    assert nested.header.revision == 0
    assert nested.responses[0].response_put.header.revision == 2
    x = rng(store, b"x").kvs[0]
    y = rng(store, b"y").kvs[0]
    assert (x.mod_revision, y.mod_revision) == (2, 2)  # one revision for the whole txn
    assert ro.header.revision == 2
    assert store.current_revision == 2


def test_txn_failures_change_nothing(store: WatchableStore) -> None:
    put(store, b"a")
    bad = rpc.TxnRequest(
        success=[op_put(b"b"), rpc.RequestOp(request_put=rpc.PutRequest(key=b"c", lease=9))]
    )
    future = rpc.TxnRequest(
        success=[op_put(b"b"), rpc.RequestOp(request_range=rpc.RangeRequest(key=b"a", revision=9))]
    )
    b = store.write_batch()
    with pytest.raises(errors.LeaseNotFoundError):
        b.txn(bad)
    with pytest.raises(errors.FutureRevisionError):
        b.txn(future)
    b.commit()
    assert store.current_revision == 2
    assert rng(store, b"b").count == 0


def test_abort_rolls_back_everything(store: WatchableStore) -> None:
    put(store, b"a", b"1", lease=1)
    before = store.hash_kv(0)
    b = store.write_batch()
    b.put(rpc.PutRequest(key=b"a", value=b"2"))
    b.put(rpc.PutRequest(key=b"new", value=b"x", lease=1))
    b.delete_range(rpc.DeleteRangeRequest(key=b"a"))
    b.compact(3)
    assert rng(store, b"a").kvs[0].value == b"1"  # readers see committed state meanwhile
    b.abort()
    assert store.current_revision == 2
    assert store.compact_revision == -1
    assert rng(store, b"a", b"\x00").count == 1
    assert store.hash_kv(0) == before
    assert store.lease_hooks.attached == {b"a": 1}  # type: ignore[union-attr]
    assert put(store, b"b").header.revision == 3


def test_compaction_removes_history_keeps_latest(store: WatchableStore) -> None:
    for i in range(10):
        put(store, b"k", b"%d" % i)  # revisions 2..11
    put(store, b"gone")  # 12
    delete(store, b"gone")  # 13
    put(store, b"live")  # 14
    assert backend_revisions(store) == 13
    b = store.write_batch()
    compaction = b.compact(13)
    b.commit()
    assert store.compact_revision == 13
    hash_before = store.hash_kv(14)
    steps = 0
    while store.compaction_step(max_keys=2):
        steps += 1
        assert steps < 50
    assert compaction.done
    # k keeps only its newest (rev 11); the tombstone at 13 and its put are gone
    assert backend_revisions(store) == 2
    assert rng(store, b"k", revision=13).kvs[0].value == b"9"
    assert rng(store, b"gone", revision=13).count == 0
    assert store.hash_kv(14) == hash_before  # physical progress does not change HashKV
    with pytest.raises(errors.CompactedError):
        store.hash_kv(13)  # as etcd 3.5: the compact revision itself is refused
    b = store.write_batch()
    with pytest.raises(errors.CompactedError):
        b.compact(13)
    with pytest.raises(errors.FutureRevisionError):
        b.compact(15)
    b.abort()


def test_compaction_survives_reopen_midway(db_path: str) -> None:
    backend = Backend(db_path)
    store = WatchableStore(backend)
    for i in range(20):
        put(store, b"k%d" % (i % 3), b"%d" % i)
    b = store.write_batch()
    b.compact(15)
    b.commit()
    store.compaction_step(max_keys=3)  # partly done
    backend.close()
    backend = Backend(db_path)
    store = WatchableStore(backend)
    assert store.compact_revision == 15
    assert store.current_revision == 21
    while store.compaction_step(max_keys=5):
        pass
    assert backend.get_raw("meta", b"finishedCompactRev") is not None
    assert backend_revisions(store) == 3 + 6  # one kept per key at 15, then revisions 16..21
    backend.close()


def test_reopen_restores_revision_consistent_index_and_leases(db_path: str) -> None:
    backend = Backend(db_path)
    store = WatchableStore(backend, FakeLessor())
    b = store.write_batch()
    b.put(rpc.PutRequest(key=b"a", value=b"1", lease=1))
    b.put(rpc.PutRequest(key=b"b", value=b"2"))
    b.put_raw("lease", b"\0" * 7 + b"\1", b"lease-record")
    b.set_consistent_index(42, 7)
    b.commit()
    h = store.hash()
    backend.close()
    lessor = FakeLessor()
    backend = Backend(db_path)
    store = WatchableStore(backend, lessor)
    assert (store.current_revision, store.consistent_index, store.consistent_term) == (3, 42, 7)
    assert lessor.attached == {b"a": 1}
    assert backend.items_raw("lease") == [(b"\0" * 7 + b"\1", b"lease-record")]
    assert store.hash() == h
    backend.close()


def test_hash_ignores_consistent_index(store: WatchableStore) -> None:
    put(store, b"a")
    h = store.hash()
    b = store.write_batch()
    b.set_consistent_index(10, 2)
    b.commit()
    assert store.hash() == h
    put(store, b"a")
    assert store.hash() != h


def test_mod_compare_of_one_key_follows_its_live_revision(store: WatchableStore) -> None:
    def mod_is(revision: int) -> bool:
        txn = rpc.TxnRequest(compare=[cmp(b"k", "MOD", "EQUAL", mod_revision=revision)])
        return store.txn_read_only(txn).succeeded

    put(store, b"k", b"1")  # 2
    put(store, b"k", b"2")  # 3
    assert mod_is(3) and not mod_is(2)
    delete(store, b"k")  # 4
    assert mod_is(0) and not mod_is(3)  # deleted: compared as a missing key
    b = store.write_batch()
    b.put(rpc.PutRequest(key=b"k", value=b"3"))  # 5
    swap = rpc.TxnRequest(
        compare=[cmp(b"k", "MOD", "EQUAL", mod_revision=5)], success=[op_put(b"k", b"4")]
    )
    assert b.txn(swap).succeeded  # sees the batch's earlier write
    b.commit()
    assert mod_is(6)
    b = store.write_batch()
    b.compact(5)
    b.commit()
    while store.compaction_step(max_keys=1):
        pass
    assert mod_is(6)
