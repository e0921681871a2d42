"""The LMDB backend: named databases, raw access, sizes, consistent copies while serving,
online defragmentation, restore from a snapshot, the quota and a full map, corrupt files."""

from __future__ import annotations

import os
import pathlib
import random
import threading

import lmdb
import pytest

from petcd import errors
from petcd.mvcc import DB_NAMES, Backend, WatchableStore, snapshot
from petcd.mvcc import backend as backend_module
from petcd.pb import rpc_pb2 as rpc
from tests.mvcc.test_kv import put


def fill(store: WatchableStore, n: int, value: bytes = b"v" * 100, prefix: bytes = b"key") -> None:
    for start in range(0, n, 1000):
        b = store.write_batch()
        for i in range(start, min(n, start + 1000)):
            b.put(rpc.PutRequest(key=prefix + b"%06d" % i, value=value))
        b.commit()


def all_kvs(store: WatchableStore) -> list[tuple[bytes, bytes, int]]:
    resp = store.range(rpc.RangeRequest(key=b"\x00", range_end=b"\x00"))
    return [(kv.key, kv.value, kv.mod_revision) for kv in resp.kvs]


def test_named_databases_and_raw_access(db_path: str) -> None:
    backend = Backend(db_path)
    store = WatchableStore(backend)
    assert set(backend.dbs) == set(DB_NAMES)
    b = store.write_batch()
    b.put_raw("members", b"m1", b"one")
    b.put_raw("alarm", b"a1", b"NOSPACE")
    assert b.get_raw("members", b"m1") == b"one"  # the batch sees its own writes
    assert backend.get_raw("members", b"m1") is None  # readers do not, until commit
    b.commit()
    b = store.write_batch()
    b.delete_raw("alarm", b"a1")
    b.commit()
    assert backend.get_raw("members", b"m1") == b"one"
    assert backend.items_raw("alarm") == []
    assert backend.size_bytes() >= backend.size_in_use_bytes() > 0
    backend.close()


def test_sync_and_hash_run_in_a_worker_thread_while_writing(store: WatchableStore) -> None:
    done = threading.Event()

    def syncer() -> None:
        for _ in range(20):
            store.backend.sync()
            store.hash()  # its own snapshot: safe beside the writer
        done.set()

    thread = threading.Thread(target=syncer)
    thread.start()
    for i in range(50):
        put(store, b"k%d" % i)
    thread.join(timeout=30)
    assert done.is_set()
    assert store.current_revision == 51


def test_copy_defrag_swap_keeps_every_write(db_path: str, tmp_path: pathlib.Path) -> None:
    backend = Backend(db_path)
    store = WatchableStore(backend)
    fill(store, 20000)
    b = store.write_batch()
    b.delete_range(rpc.DeleteRangeRequest(key=b"key001000", range_end=b"key020000"))
    b.compact(store.current_revision + 1)
    b.commit()
    while store.compaction_step(max_keys=5000):
        pass
    size_before = backend.size_bytes()
    copy = str(tmp_path / "defrag.db")
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(backend.copy_to(copy)))
    thread.start()
    fill(store, 300, b"during", prefix=b"new")  # writes while the copy runs
    thread.join(timeout=60)
    assert result, "copy did not finish"
    b = store.write_batch()  # and after it, before the swap
    b.put(rpc.PutRequest(key=b"after", value=b"x"))
    b.put_raw("members", b"m", b"after-copy")
    b.set_consistent_index(99, 3)
    b.commit()
    expected = all_kvs(store)
    hash_kv = store.hash_kv(0)
    store.defrag_swap(copy)
    assert not os.path.exists(copy)
    assert backend.size_bytes() < size_before / 2
    assert all_kvs(store) == expected
    assert store.hash_kv(0) == hash_kv
    assert backend.get_raw("members", b"m") == b"after-copy"
    put(store, b"later")  # still writable after the swap
    backend.close()
    backend = Backend(db_path)
    store = WatchableStore(backend)
    assert store.consistent_index == 99
    assert len(all_kvs(store)) == len(expected) + 1
    backend.close()


def test_plain_copy_and_restore(db_path: str, tmp_path: pathlib.Path) -> None:
    backend = Backend(db_path)
    store = WatchableStore(backend)
    fill(store, 500)
    b = store.write_batch()
    b.set_consistent_index(7, 1)
    b.commit()
    snap = str(tmp_path / "snap.db")
    info = backend.copy_to(snap, compact=False)
    backend.release_copy(snap)
    assert (info.revision, info.consistent_index, info.term) == (501, 7, 1)
    expected = all_kvs(store)
    fill(store, 100, b"changed")
    store.restore(snap)
    assert all_kvs(store) == expected
    assert store.consistent_index == 7
    assert store.current_revision == 501
    assert os.path.exists(snap)  # the caller's file is copied, not taken
    with pytest.raises(errors.StorageError):
        store.defrag_swap(snap)  # not a journaled copy
    backend.close()


def test_over_quota_applies_as_etcd_and_flags_it(db_path: str) -> None:
    backend = Backend(db_path, quota_bytes=1024 * 1024)
    store = WatchableStore(backend)
    flagged = 0
    for i in range(200):  # 2 MB of values: twice the quota
        b = store.write_batch()
        b.put(rpc.PutRequest(key=b"k%04d" % i, value=b"x" * 10_000))
        flagged += b.over_quota
        b.commit()
    assert store.current_revision == 201  # every member applies every entry
    assert 50 < flagged < 150
    backend.close()


def test_enforced_quota_refuses_puts_but_reads_deletes_and_compaction_work(db_path: str) -> None:
    backend = Backend(db_path, quota_bytes=1024 * 1024, enforce_quota=True)
    store = WatchableStore(backend)
    written = 0
    with pytest.raises(errors.NoSpaceError):
        for i in range(1000):
            put(store, b"k%04d" % i, b"x" * 10_000)
            written += 1
    assert 50 < written < 110
    rev = store.current_revision
    assert store.range(rpc.RangeRequest(key=b"k0000")).count == 1
    b = store.write_batch()  # a refused txn changes nothing
    txn = rpc.TxnRequest(
        success=[rpc.RequestOp(request_put=rpc.PutRequest(key=b"t", value=b"y" * 10_000))]
    )
    with pytest.raises(errors.NoSpaceError):
        b.txn(txn)
    b.delete_range(rpc.DeleteRangeRequest(key=b"k", range_end=b"l"))
    b.compact(store.current_revision + 1)
    b.commit()
    assert store.current_revision == rev + 1
    while store.compaction_step(max_keys=100):
        pass
    assert backend.size_in_use_bytes() < 200_000
    put(store, b"k0000", b"x" * 10_000)  # space is reusable at once
    backend.close()


def test_full_map_is_a_clean_error(db_path: str) -> None:
    backend = Backend(db_path, quota_bytes=1024 * 1024)
    store = WatchableStore(backend)
    put(store, b"keep", b"me")
    b = store.write_batch()
    b.put(rpc.PutRequest(key=b"lost", value=b"with the batch"))
    with pytest.raises(errors.BackendFullError):
        for i in range(10_000):  # raw writes bypass the quota: fill the whole map
            b.put_raw("auth", b"%06d" % i, b"z" * 100_000)
    with pytest.raises(errors.BackendFullError):
        b.put(rpc.PutRequest(key=b"more", value=b"x"))  # the broken batch refuses
    b.abort()
    assert store.current_revision == 2
    assert store.range(rpc.RangeRequest(key=b"keep")).kvs[0].value == b"me"
    assert store.range(rpc.RangeRequest(key=b"lost")).count == 0
    b = store.write_batch()
    b.delete_range(rpc.DeleteRangeRequest(key=b"keep"))
    b.commit()
    backend.close()
    backend = Backend(db_path, quota_bytes=1024 * 1024)
    store = WatchableStore(backend)
    assert store.current_revision == 3
    assert backend.items_raw("auth") == []
    backend.close()


def test_corrupt_files_are_refused(tmp_path: pathlib.Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(64 * 1024))
    with pytest.raises(errors.CorruptFileError):
        Backend(str(garbage))
    path = str(tmp_path / "bad.db")
    env = lmdb.open(path, subdir=False, max_dbs=4)
    key_db = env.open_db(b"key")
    with env.begin(write=True) as txn:
        txn.put(b"not-a-revision", b"\x0a\x01k", db=key_db)
    env.close()
    backend = Backend(path)
    with pytest.raises(errors.CorruptFileError):
        WatchableStore(backend)
    backend.close()


def test_snapshot_stream_round_trip(db_path: str, tmp_path: pathlib.Path) -> None:
    backend = Backend(db_path)
    store = WatchableStore(backend)
    fill(store, 2000)
    copy = str(tmp_path / "copy.db")
    backend.copy_to(copy)
    backend.release_copy(copy)
    received = tmp_path / "received.db"
    parts = list(snapshot.chunks(copy))
    assert all(len(blob) <= snapshot.CHUNK_BYTES for blob, _ in parts)
    assert [left for _, left in parts][-2:] == [0, 0]  # last data chunk, then the digest
    received.write_bytes(b"".join(blob for blob, _ in parts))  # as etcdctl saves it
    assert snapshot.strip_trailer(str(received)) is True
    assert received.read_bytes() == pathlib.Path(copy).read_bytes()
    assert snapshot.strip_trailer(str(received)) is False
    expected = all_kvs(store)
    fill(store, 10, b"later", prefix=b"zz")
    store.restore(str(received))
    assert all_kvs(store) == expected
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"".join(blob for blob, _ in parts)[:-1] + b"\0")
    with pytest.raises(errors.CorruptFileError):
        snapshot.strip_trailer(str(damaged))
    backend.close()


def test_defrag_under_concurrent_random_writes_keeps_every_database(
    db_path: str, tmp_path: pathlib.Path
) -> None:
    backend = Backend(db_path)
    store = WatchableStore(backend)
    fill(store, 30_000)
    rng = random.Random(11)
    for round_ in range(4):
        copy = str(tmp_path / f"defrag-{round_}.db")
        thread = threading.Thread(target=backend.copy_to, args=(copy,))
        thread.start()
        for step in range(3000):  # writes race the copy; bounded whether or not it finishes
            if not thread.is_alive() and step > 200:
                break
            b = store.write_batch()
            roll = rng.random()
            key = b"key%06d" % rng.randrange(30_000)
            if roll < 0.5:
                b.put(rpc.PutRequest(key=key, value=b"r%d" % step))
            elif roll < 0.7:
                b.delete_range(rpc.DeleteRangeRequest(key=key, range_end=key + b"\xff"))
            elif roll < 0.8:
                b.put_raw("members", b"m%d" % rng.randrange(50), b"v%d" % step)
            elif roll < 0.85:
                b.delete_raw("members", b"m%d" % rng.randrange(50))
            elif roll < 0.9 and store.current_revision - 50 > store.compact_revision:
                b.compact(store.current_revision - 50)
            b.set_consistent_index(store.consistent_index + 1, 1)
            b.commit()
            store.compaction_step(max_keys=200)
        thread.join(timeout=60)
        assert not thread.is_alive()
        before = {name: backend.items_raw(name) for name in DB_NAMES}
        store.defrag_swap(copy)
        after = {name: backend.items_raw(name) for name in DB_NAMES}
        assert after == before, f"round {round_}"
    backend.close()


def test_a_copy_left_behind_costs_bounded_memory(
    db_path: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend_module, "JOURNAL_MAX_OPS", 50)
    backend = Backend(db_path)
    store = WatchableStore(backend)
    fill(store, 100)
    copy = str(tmp_path / "forgotten.db")
    backend.copy_to(copy)  # neither swapped in nor released
    for i in range(30):  # two meta ops per batch: past the bound after 25 batches
        b = store.write_batch()
        b.put(rpc.PutRequest(key=b"k%d" % i, value=b"v"))
        b.set_consistent_index(i + 1, 1)
        b.commit()
    assert backend._journals == {}
    with pytest.raises(errors.StorageError):
        store.defrag_swap(copy)
    backend.close()
