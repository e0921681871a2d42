"""Watch streams: synced delivery, catch-up batches, filters, prev_kv, ids, compaction,
slow watchers (parked, bounded, never blocking writes), progress and restore."""

from __future__ import annotations

import os
from typing import Any

import pytest

from petcd import errors
from petcd.mvcc import Backend, WatchableStore
from petcd.pb import rpc_pb2 as rpc
from tests.mvcc.test_kv import delete, put


class Notified:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def events(batches: list[Any]) -> list[tuple[int, int, bytes, bytes]]:
    return [(e.type, e.kv.mod_revision, e.kv.key, e.kv.value) for b in batches for e in b.events]


def test_synced_watch_gets_each_revision_once_in_order(store: WatchableStore) -> None:
    notified = Notified()
    ws = store.new_watch_stream(notified)
    point = ws.watch(b"a")
    prefix = ws.watch(b"a", b"b")
    all_keys = ws.watch(b"", b"\x00")  # empty key means "\0": every key
    assert (point, prefix, all_keys) == (0, 1, 2)
    b = store.write_batch()
    b.put(rpc.PutRequest(key=b"a", value=b"1"))
    b.put(rpc.PutRequest(key=b"ab", value=b"2"))
    b.txn(
        rpc.TxnRequest(
            success=[
                rpc.RequestOp(request_put=rpc.PutRequest(key=b"a", value=b"3")),
                rpc.RequestOp(request_put=rpc.PutRequest(key=b"c", value=b"4")),
            ]
        )
    )
    assert notified.calls == 0  # nothing before commit
    b.commit()
    assert notified.calls == 1  # once until the next poll
    batches = ws.poll()
    by_id: dict[int, list[Any]] = {}
    for batch in batches:
        by_id.setdefault(batch.watch_id, []).append(batch)
    assert [b.revision for b in by_id[point]] == [2, 4]
    assert events(by_id[prefix]) == [(0, 2, b"a", b"1"), (0, 3, b"ab", b"2"), (0, 4, b"a", b"3")]
    assert [len(b.events) for b in by_id[all_keys]] == [1, 1, 2]  # one batch per revision
    assert ws.poll() == []
    # the same change is one shared Event object for every watcher without prev_kv
    assert by_id[point][0].events[0] is by_id[prefix][0].events[0]


def test_filters_prev_kv_and_delete_events(store: WatchableStore) -> None:
    put(store, b"k", b"old")
    ws = store.new_watch_stream(Notified())
    no_put = ws.watch(b"k", no_put=True)
    no_delete = ws.watch(b"k", no_delete=True, prev_kv=True)
    put(store, b"k", b"new")
    delete(store, b"k")
    batches = ws.poll()
    [only_delete] = [b for b in batches if b.watch_id == no_put]
    ev = only_delete.events[0]
    assert (ev.type, ev.kv.key, ev.kv.mod_revision, ev.kv.value) == (1, b"k", 4, b"")
    assert not ev.HasField("prev_kv")
    [only_put] = [b for b in batches if b.watch_id == no_delete]
    ev = only_put.events[0]
    assert (ev.type, ev.kv.value, ev.prev_kv.value) == (0, b"new", b"old")
    put(store, b"k", b"again")
    put(store, b"k", b"more")
    ws2 = store.new_watch_stream(Notified())
    catch_up = ws2.watch(b"k", start_revision=3, prev_kv=True)
    store.sync_watchers()
    [batch] = ws2.poll()
    assert batch.watch_id == catch_up
    assert batch.revision == 6
    assert events([batch]) == [
        (0, 3, b"k", b"new"),
        (1, 4, b"k", b""),
        (0, 5, b"k", b"again"),
        (0, 6, b"k", b"more"),
    ]
    prevs = [e.prev_kv.value if e.HasField("prev_kv") else None for e in batch.events]
    assert prevs == [b"old", b"new", None, b"again"]


def test_watch_ids_and_errors(store: WatchableStore) -> None:
    ws = store.new_watch_stream(Notified())
    assert ws.watch(b"a", watch_id=1) == 1
    assert ws.watch(b"a") == 0
    assert ws.watch(b"a") == 2  # auto ids skip ids in use
    with pytest.raises(errors.WatchDuplicateIdError):
        ws.watch(b"a", watch_id=2)
    with pytest.raises(errors.WatcherRangeEmptyError):
        ws.watch(b"b", b"a")
    with pytest.raises(errors.CompactedError):
        ws.watch(b"a", start_revision=-1)
    assert ws.cancel(1) is True
    assert ws.cancel(1) is False
    assert ws.watch(b"a", watch_id=1) == 1


def test_catch_up_in_batches_of_at_most_1000_revisions(store: WatchableStore) -> None:
    for start in range(0, 2500, 500):
        b = store.write_batch()
        for i in range(start, start + 500):
            b.put(rpc.PutRequest(key=b"k%d" % (i % 7), value=b"%d" % i))
        b.commit()
    ws = store.new_watch_stream(Notified(), max_pending_responses=1000)
    ws.watch(b"k", b"l", start_revision=2)
    assert ws.progress() is None  # not synced yet
    seen: list[int] = []
    for _ in range(10):
        store.sync_watchers()
        for batch in ws.poll():
            revs = {e.kv.mod_revision for e in batch.events}
            assert len(revs) <= 1000
            seen.extend(e.kv.mod_revision for e in batch.events)
        if ws.progress() is not None:
            break
    assert seen == list(range(2, 2502))
    assert ws.progress() == store.current_revision == 2501
    put(store, b"k1", b"live")
    assert events(ws.poll()) == [(0, 2502, b"k1", b"live")]


def test_compacted_start_is_canceled_with_compact_revision(store: WatchableStore) -> None:
    for i in range(5):
        put(store, b"a", b"%d" % i)
    b = store.write_batch()
    b.compact(4)
    b.commit()
    ws = store.new_watch_stream(Notified())
    old = ws.watch(b"a", start_revision=3)
    at_compact = ws.watch(b"a", start_revision=4)
    store.sync_watchers()
    batches = {b.watch_id: b for b in ws.poll()}
    assert batches[old].canceled is True
    assert batches[old].compact_revision == 4
    assert batches[old].events == []
    assert events([batches[at_compact]]) == [
        (0, 4, b"a", b"2"),
        (0, 5, b"a", b"3"),
        (0, 6, b"a", b"4"),
    ]
    assert ws.watch_ids == [at_compact]


def test_slow_watcher_is_parked_bounded_and_catches_up(store: WatchableStore) -> None:
    slow = store.new_watch_stream(Notified(), max_pending_responses=2)
    fast = store.new_watch_stream(Notified(), max_pending_responses=1000)
    slow_id = slow.watch(b"k")
    fast.watch(b"k")
    for i in range(50):  # writes never wait for the slow stream
        put(store, b"k", b"%d" % i)
    assert len(fast.poll()) == 50
    assert store.watcher_counts == (1, 0, 1)  # the slow one is a victim
    assert slow.progress() is None
    got: list[int] = []
    for _ in range(60):
        batches = slow.poll()
        assert len(batches) <= 2  # its queue never grows past the bound
        got.extend(e.kv.mod_revision for b in batches for e in b.events)
        store.sync_watchers()
        if slow.progress() is not None and not batches:
            break
    assert got == list(range(2, 52))
    assert store.watcher_counts == (2, 0, 0)
    assert slow.watch_ids == [slow_id]


def test_progress_and_close(store: WatchableStore) -> None:
    ws = store.new_watch_stream(Notified())
    assert ws.progress() is None  # no watchers: etcd drops the request
    ws.watch(b"a")
    put(store, b"a")
    assert ws.progress() == 2
    ws.close()
    assert store.watcher_counts == (0, 0, 0)


def test_future_start_revision_skips_earlier_events(store: WatchableStore) -> None:
    ws = store.new_watch_stream(Notified())
    ws.watch(b"a", start_revision=4)
    for i in range(4):
        put(store, b"a", b"%d" % i)
    assert [e[1] for e in events(ws.poll())] == [4, 5]


def test_restore_keeps_streams_and_resyncs(store: WatchableStore, tmp_path: Any) -> None:
    ws = store.new_watch_stream(Notified())
    ws.watch(b"k", b"\x00")
    put(store, b"k1", b"a")
    assert len(ws.poll()) == 1
    # a second member that got further, then snapshot it
    other = Backend(str(tmp_path / "other" / "db"))
    peer = WatchableStore(other)
    for i in range(4):
        put(peer, b"k%d" % i, b"b")
    snap = str(tmp_path / "snap.db")
    info = other.copy_to(snap)
    other.release_copy(snap)
    assert info.revision == 5
    store.restore(snap)
    assert store.current_revision == 5
    store.sync_watchers()
    # the watcher had seen revision 2; it now gets 3..5 of the restored history
    assert [e[1] for e in events(ws.poll())] == [3, 4, 5]
    put(store, b"k9", b"c")
    assert [e[1] for e in events(ws.poll())] == [6]
    other.close()
    os.unlink(snap)
