"""KV through the sync client against real etcd 3.5: every Range option, Put, Delete, Txn, errors.

One etcd member serves the module; each test works under its own key prefix.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from petcd import errors
from petcd.client import (
    Client,
    compare_mod,
    compare_value,
    compare_version,
    op_delete,
    op_get,
    op_put,
    op_txn,
)
from tests.support import EtcdProcess


@pytest.fixture
def client(etcd35_module: EtcdProcess) -> Iterator[Client]:
    with Client([etcd35_module.endpoint]) as c:
        yield c


@pytest.fixture
def p(request: pytest.FixtureRequest) -> str:
    """A key prefix of this test's own."""
    return f"/{request.node.name}/"


def test_put_get_roundtrip_and_revisions(client: Client, p: str) -> None:
    first = client.put(p + "a", "1")
    second = client.put(p + "a", b"2", prev_kv=True)
    assert second.header.revision == first.header.revision + 1
    assert second.prev_kv.value == b"1"
    kv = client.get(p + "a").kvs[0]
    assert (kv.value, kv.version, kv.create_revision, kv.mod_revision) == (
        b"2",
        2,
        first.header.revision,
        second.header.revision,
    )
    assert client.get(p + "missing").kvs == []


def test_range_options(client: Client, p: str) -> None:
    revisions = {
        k: client.put(p + k, v).header.revision for k, v in [("a", "3"), ("b", "1"), ("c", "2")]
    }
    client.put(p + "c", "22")
    everything = client.get(p, prefix=True)
    assert [kv.key for kv in everything.kvs] == [(p + k).encode() for k in "abc"]
    assert everything.count == 3
    limited = client.get(p, prefix=True, limit=2)
    assert len(limited.kvs) == 2 and limited.more and limited.count == 3
    by_value = client.get(p, prefix=True, sort_order="descend", sort_target="value")
    assert [kv.value for kv in by_value.kvs] == [b"3", b"22", b"1"]
    assert client.get(p + "a", p + "c").count == 2  # explicit [a, c)
    assert client.get(p + "b", from_key=True, count_only=True).count >= 2
    keys_only = client.get(p, prefix=True, keys_only=True)
    assert all(kv.value == b"" and kv.key for kv in keys_only.kvs)
    old = client.get(p + "c", revision=revisions["c"])
    assert old.kvs[0].value == b"2"
    assert client.get(p, prefix=True, serializable=True).count == 3
    mod = client.get(p, prefix=True, min_mod_revision=revisions["c"] + 1)
    assert [kv.key for kv in mod.kvs] == [(p + "c").encode()]
    created = client.get(p, prefix=True, max_create_revision=revisions["a"])
    assert [kv.key for kv in created.kvs] == [(p + "a").encode()]
    assert (
        client.get(
            p, prefix=True, min_create_revision=revisions["b"], max_mod_revision=revisions["b"]
        ).count
        == 3
    )


def test_delete_forms(client: Client, p: str) -> None:
    for k in ["a", "b", "c", "d"]:
        client.put(p + k, k)
    single = client.delete(p + "a", prev_kv=True)
    assert single.deleted == 1 and single.prev_kvs[0].value == b"a"
    ranged = client.delete(p + "b", p + "d")
    assert ranged.deleted == 2
    rest = client.delete(p, prefix=True)
    assert rest.deleted == 1
    assert client.delete(p + "nothing").deleted == 0


def test_put_with_ignore_value_and_lease(client: Client, p: str) -> None:
    lease = client.lease_grant(30).ID
    client.put(p + "k", "v", lease=lease)
    client.put(p + "k", ignore_value=True, ignore_lease=True)
    kv = client.get(p + "k").kvs[0]
    assert (kv.value, kv.lease) == (b"v", lease)
    with pytest.raises(errors.KeyNotFoundError):
        client.put(p + "absent", ignore_value=True)
    with pytest.raises(errors.ValueProvidedError):
        client.put(p + "k", "x", ignore_value=True)
    with pytest.raises(errors.LeaseProvidedError):
        client.put(p + "k", "x", lease=lease, ignore_lease=True)
    client.lease_revoke(lease)
    assert client.get(p + "k").kvs == []


def test_txn_compare_and_swap(client: Client, p: str) -> None:
    rev = client.put(p + "k", "v1").header.revision
    won = client.txn([compare_mod(p + "k", "=", rev)], [op_put(p + "k", "v2")], [op_get(p + "k")])
    assert won.succeeded
    lost = client.txn([compare_mod(p + "k", "=", rev)], [op_put(p + "k", "v3")], [op_get(p + "k")])
    assert not lost.succeeded
    assert lost.responses[0].response_range.kvs[0].value == b"v2"
    both = client.txn(
        [compare_value(p + "k", "=", "v2"), compare_version(p + "k", ">", 1)],
        [op_put(p + "x", "1"), op_delete(p + "k", prev_kv=True), op_txn([], [op_get(p + "x")])],
    )
    assert both.succeeded
    assert both.responses[1].response_delete_range.prev_kvs[0].value == b"v2"
    # ops inside a txn see earlier ops' writes, all under one revision
    assert both.responses[2].response_txn.responses[0].response_range.kvs[0].value == b"1"
    assert client.get(p + "x").kvs[0].mod_revision == both.header.revision


def test_compare_on_missing_key_and_prefix(client: Client, p: str) -> None:
    assert client.txn([compare_version(p + "nope", "=", 0)]).succeeded
    assert not client.txn([compare_value(p + "nope", "=", "")]).succeeded
    client.put(p + "r/1", "a")
    client.put(p + "r/2", "a")
    assert client.txn([compare_value(p + "r/", "=", "a", prefix=True)]).succeeded


def test_request_errors_are_mapped(client: Client, p: str) -> None:
    with pytest.raises(errors.EmptyKeyError) as empty:
        client.put("", "v")
    assert empty.value.message == "etcdserver: key is not provided"
    assert empty.value.code == errors.GrpcCode.INVALID_ARGUMENT
    with pytest.raises(errors.EmptyKeyError):
        client.get("")
    current = client.get(p + "k").header.revision
    with pytest.raises(errors.FutureRevisionError):
        client.get(p + "k", revision=current + 1000)
    with pytest.raises(errors.LeaseNotFoundError):
        client.put(p + "k", "v", lease=123456789)
    with pytest.raises(errors.TooManyOpsError):
        client.txn([], [op_put(f"{p}{i}", "v") for i in range(129)])
    with pytest.raises(errors.DuplicateKeyError):
        client.txn([], [op_put(p + "d", "1"), op_put(p + "d", "2")])
    with pytest.raises(errors.RequestTooLargeError):
        client.put(p + "big", b"x" * (2 * 1024 * 1024 - 100))


def test_compaction_errors(etcd35: EtcdProcess) -> None:
    with Client([etcd35.endpoint]) as client:
        first = client.put("c", "1").header.revision
        client.put("c", "2")
        last = client.put("c", "3").header.revision
        client.compact(last - 1, physical=True)
        with pytest.raises(errors.CompactedError):
            client.get("c", revision=first)
        assert client.get("c", revision=last - 1).kvs[0].value == b"2"
        with pytest.raises(errors.CompactedError):
            client.compact(first)
        with pytest.raises(errors.FutureRevisionError):
            client.compact(last + 100)
        with pytest.raises(errors.CompactedError):
            client.hash_kv(first)
