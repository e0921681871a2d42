"""HashKV in steps (KVHasher): the same answer as at once, whatever happens between steps."""

from __future__ import annotations

import pathlib
import threading

import pytest

from petcd import errors
from petcd.mvcc import Backend, WatchableStore
from petcd.mvcc.kvstore import KVHasher
from petcd.pb import rpc_pb2 as rpc
from tests.mvcc.test_kv import delete, put


def stepped(store: WatchableStore, rev: int, rows: int) -> tuple[int, int, int]:
    hasher = KVHasher(store, rev)
    steps = 0
    while hasher.step(rows):
        steps += 1
        assert steps < 10_000
    return hasher.result()


def history(store: WatchableStore) -> None:
    for i in range(40):
        put(store, b"k%02d" % (i % 7), b"%d" % i)
        if i % 5 == 4:
            delete(store, b"k%02d" % (i % 3))


@pytest.mark.parametrize("rows", [1, 2, 3, 7, 1000])
def test_stepped_equals_at_once_at_every_revision(store: WatchableStore, rows: int) -> None:
    history(store)
    b = store.write_batch()
    b.compact(20)
    b.commit()
    for rev in [0, 21, 30, store.current_revision]:
        assert stepped(store, rev, rows) == store.hash_kv(rev)
    with pytest.raises(errors.CompactedError):
        KVHasher(store, 20)
    with pytest.raises(errors.FutureRevisionError):
        KVHasher(store, store.current_revision + 1)


def test_writes_and_compaction_between_steps_do_not_change_the_hash(store: WatchableStore) -> None:
    history(store)
    b = store.write_batch()
    b.compact(15)
    b.commit()
    rev = store.current_revision
    expected = store.hash_kv(rev)
    hasher = KVHasher(store, rev)
    assert hasher.step(3)
    put(store, b"k01", b"later")  # past the hashed revision
    delete(store, b"k02")
    assert hasher.step(3)
    while store.compaction_step(max_keys=1):  # index and rows of the compaction go meanwhile
        hasher.step(1)
    b = store.write_batch()
    b.compact(rev)  # a further compaction scheduled while hashing
    b.commit()
    while store.compaction_step(max_keys=2):
        pass
    while hasher.step(2):
        pass
    assert hasher.result() == expected


def test_a_swapped_backend_makes_the_hasher_stale(db_path: str, tmp_path: pathlib.Path) -> None:
    backend = Backend(db_path)
    store = WatchableStore(backend)
    try:
        history(store)
        expected = store.hash_kv(0)
        copy = str(tmp_path / "defrag.db")
        thread = threading.Thread(target=backend.copy_to, args=(copy,))
        thread.start()
        thread.join(timeout=30)
        hasher = KVHasher(store, 0)
        assert hasher.step(2)
        store.defrag_swap(copy)
        assert hasher.stale
        hasher.close()  # releases nothing of the new file
        assert stepped(store, 0, 2) == expected
        b = store.write_batch()
        b.put(rpc.PutRequest(key=b"after", value=b"x"))
        b.commit()
    finally:
        backend.close()


def test_an_abandoned_hasher_releases_its_snapshot(store: WatchableStore) -> None:
    history(store)
    for _ in range(3):
        hasher = KVHasher(store, 0)
        assert hasher.step(1)
        hasher.close()
        hasher.close()
    assert stepped(store, 0, 5) == store.hash_kv(0)
