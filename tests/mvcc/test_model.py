"""Random sequences of put, delete, txn, compact, range at revisions and watch, run against
petcd.mvcc and a simple reference model of etcd's semantics (model.py): every response and
error must be identical, batches may abort, the store may be reopened, and every watcher must
see exactly the model's events for its range, once, in revision order.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from petcd import errors
from petcd.mvcc import Backend, WatchableStore, WatchStream, validate, watchable
from petcd.pb import rpc_pb2
from tests.mvcc.conftest import FakeLessor
from tests.mvcc.model import Model, ModelEvent, in_range

KEYS = [b"a", b"b", b"c", b"d"]
keys = st.sampled_from(KEYS)
values = st.sampled_from([b"", b"x", b"yy", b"zzz"])
ends = st.sampled_from([b"", b"", b"\x00", b"c", b"e", b"b"])
leases = st.sampled_from([0, 0, 0, 1, 2])


def put_requests() -> st.SearchStrategy[rpc_pb2.PutRequest]:
    return st.builds(
        lambda k, v, lease, prev, iv, il: rpc_pb2.PutRequest(
            key=k,
            value=b"" if iv else v,
            lease=0 if il else lease,
            prev_kv=prev,
            ignore_value=iv,
            ignore_lease=il,
        ),
        keys,
        values,
        leases,
        st.booleans(),
        st.sampled_from([False, False, False, True]),
        st.sampled_from([False, False, False, True]),
    )


def range_requests(max_rev: int = 12) -> st.SearchStrategy[rpc_pb2.RangeRequest]:
    small = st.sampled_from([0, 0, 0, 0, 0, 2, 3, 5])
    return st.builds(
        lambda k, e, rev, limit, so, stt, ko, co, f: rpc_pb2.RangeRequest(
            key=k,
            range_end=e,
            revision=rev,
            limit=limit,
            sort_order=so,
            sort_target=stt,
            keys_only=ko,
            count_only=co,
            min_mod_revision=f[0],
            max_mod_revision=f[1],
            min_create_revision=f[2],
            max_create_revision=f[3],
        ),
        keys,
        ends,
        st.one_of(st.just(0), st.integers(-1, max_rev)),
        st.sampled_from([0, 0, 1, 2, 3]),
        st.sampled_from([0, 0, 1, 2]),
        st.sampled_from([0, 0, 1, 2, 3, 4]),
        st.sampled_from([False, False, True]),
        st.sampled_from([False, False, False, True]),
        st.tuples(small, small, small, small),
    )


def compares() -> st.SearchStrategy[rpc_pb2.Compare]:
    def build(k: bytes, e: bytes, target: int, result: int, n: int, v: bytes, unset: bool) -> Any:
        c = rpc_pb2.Compare(key=k, range_end=e, target=target, result=result)
        if unset:
            return c
        if target == rpc_pb2.Compare.VALUE:
            c.value = v
        else:
            setattr(c, ["version", "create_revision", "mod_revision", "", "lease"][target], n)
        return c

    return st.builds(
        build,
        keys,
        st.sampled_from([b"", b"", b"c", b"\x00"]),
        st.integers(0, 4),
        st.integers(0, 3),
        st.integers(0, 6),
        values,
        st.sampled_from([False, False, False, True]),
    )


def ops(depth: int, read_only: bool) -> st.SearchStrategy[rpc_pb2.RequestOp]:
    choices: list[st.SearchStrategy[rpc_pb2.RequestOp]] = [
        range_requests(8).map(lambda r: rpc_pb2.RequestOp(request_range=r))
    ]
    if not read_only:
        choices.append(put_requests().map(lambda r: rpc_pb2.RequestOp(request_put=r)))
        choices.append(
            st.builds(
                lambda k, e, p: rpc_pb2.RequestOp(
                    request_delete_range=rpc_pb2.DeleteRangeRequest(key=k, range_end=e, prev_kv=p)
                ),
                keys,
                ends,
                st.booleans(),
            )
        )
    if depth < 2:
        choices.append(txns(depth + 1, read_only).map(lambda t: rpc_pb2.RequestOp(request_txn=t)))
    return st.one_of(*choices)


def txns(depth: int = 0, read_only: bool = False) -> st.SearchStrategy[rpc_pb2.TxnRequest]:
    return st.builds(
        lambda c, s, f: rpc_pb2.TxnRequest(compare=c, success=s, failure=f),
        st.lists(compares(), max_size=2),
        st.lists(ops(depth, read_only), max_size=3),
        st.lists(ops(depth, read_only), max_size=2),
    )


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        resp = fn(*args)
    except errors.PetcdError as exc:
        return "error", type(exc).__name__
    return "ok", resp.SerializeToString(deterministic=True)


@dataclass
class TrackedWatch:
    stream: WatchStream
    watch_id: int
    key: bytes
    end: bytes
    start: int
    no_put: bool
    no_delete: bool
    prev_kv: bool
    received: list[Any] = field(default_factory=list)
    canceled_at: int = 0
    last_batch_rev: int = 0


def event_tuple(ev: Any) -> tuple[Any, ...]:
    kv = ev.kv
    if ev.type == ev.DELETE:
        return (kv.mod_revision, False, kv.key)
    return (kv.mod_revision, True, kv.key, kv.create_revision, kv.version, kv.value, kv.lease)


def model_tuple(ev: ModelEvent) -> tuple[Any, ...]:
    if not ev.is_put:
        return (ev.rev, False, ev.kv[0])
    key, create, mod, version, value, lease = ev.kv
    return (mod, True, key, create, version, value, lease)


class MVCCMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="petcd-model-")
        self.path = self.dir + "/db"
        self.lessor = FakeLessor({1})
        self.backend = Backend(self.path, quota_bytes=64 * 1024**2)
        self.store = WatchableStore(self.backend, self.lessor)
        self.model = Model()
        self.batch: Any = None
        self.saved: tuple[int, int, int, int] | None = None
        self.committed_events = 0
        self.committed_cur = 1
        self.watches: list[TrackedWatch] = []
        self.streams: list[WatchStream] = []
        # tiny bounds so that bounded catch-up scans and 1000-revision batches are exercised
        self._bounds = (watchable.SYNC_SCAN_MAX_ENTRIES, watchable.MAX_REVISIONS_PER_BATCH)
        watchable.SYNC_SCAN_MAX_ENTRIES, watchable.MAX_REVISIONS_PER_BATCH = 3, 2

    def teardown(self) -> None:
        try:
            if self.batch is not None:
                self.abort()
            self.drain()
        finally:
            watchable.SYNC_SCAN_MAX_ENTRIES, watchable.MAX_REVISIONS_PER_BATCH = self._bounds
            self.backend.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- batches ------------------------------------------------------------------------------

    def _open_batch(self) -> Any:
        if self.batch is None:
            self.batch = self.store.write_batch()
            m = self.model
            self.saved = (m.cur, m.compact, len(m.events), len(m.compact_revs))
        return self.batch

    def _same(self, store_fn: Any, model_fn: Any, *args: Any) -> None:
        got = outcome(store_fn, *args)
        want = outcome(model_fn, *args)
        assert got == want, f"{args}\nstore: {got}\nmodel: {want}"

    @rule(req=put_requests(), then_commit=st.booleans())
    def put(self, req: rpc_pb2.PutRequest, then_commit: bool) -> None:
        validate.check_put(req)
        self._same(self._open_batch().put, self.model.put, req)
        if then_commit:
            self.commit()

    @rule(reqs=st.lists(put_requests(), min_size=2, max_size=6))
    def burst(self, reqs: list[rpc_pb2.PutRequest]) -> None:
        """Several committed batches in a row: fills watch queues, makes victims."""
        for req in reqs:
            self._same(self._open_batch().put, self.model.put, req)
            self.commit()

    @rule(key=keys, end=ends, prev=st.booleans(), then_commit=st.booleans())
    def delete_range(self, key: bytes, end: bytes, prev: bool, then_commit: bool) -> None:
        req = rpc_pb2.DeleteRangeRequest(key=key, range_end=end, prev_kv=prev)
        self._same(self._open_batch().delete_range, self.model.delete_range, req)
        if then_commit:
            self.commit()

    @rule(req=txns(), then_commit=st.booleans())
    def txn(self, req: rpc_pb2.TxnRequest, then_commit: bool) -> None:
        try:
            validate.check_txn(req)
        except errors.PetcdError:
            return
        self._same(self._open_batch().txn, self.model.txn, req)
        if then_commit:
            self.commit()

    @rule(delta=st.integers(-2, 2))
    def compact(self, delta: int) -> None:
        rev = max(self.model.compact, 1) + delta if delta < 0 else self.model.cur - delta
        batch = self._open_batch()
        self._same(
            lambda r: (batch.compact(r), rpc_pb2.CompactionResponse())[1],
            lambda r: (self.model.do_compact(r), rpc_pb2.CompactionResponse())[1],
            rev,
        )

    @rule()
    def commit(self) -> None:
        if self.batch is None:
            return
        self.batch.commit()
        self.batch = None
        self.saved = None
        self.committed_events = len(self.model.events)
        self.committed_cur = self.model.cur

    @rule()
    def abort(self) -> None:
        if self.batch is None:
            return
        self.batch.abort()
        self.batch = None
        assert self.saved is not None
        cur, compact, n_events, n_compacts = self.saved
        self.saved = None
        m = self.model
        for rev in range(cur + 1, m.cur + 1):
            del m.states[rev]
        m.cur, m.compact = cur, compact
        del m.events[n_events:]
        del m.compact_revs[n_compacts:]

    # --- reads --------------------------------------------------------------------------------

    @rule(req=range_requests())
    def range(self, req: rpc_pb2.RangeRequest) -> None:
        # readers see the committed revision even while a batch is open
        committed_compact = self.model.compact if self.saved is None else self.saved[1]
        self._same(
            lambda r: rpc_pb2.RangeResponse.FromString(self.store.range_encoded(r)),
            lambda r: self.model.range(r, self.committed_cur, None, committed_compact),
            req,
        )
        self._same(
            self.store.range,
            lambda r: self.model.range(r, self.committed_cur, None, committed_compact),
            req,
        )

    @precondition(lambda self: self.batch is None)
    @rule(req=txns(read_only=True))
    def txn_read_only(self, req: rpc_pb2.TxnRequest) -> None:
        self._same(self.store.txn_read_only, self.model.txn, req)

    @precondition(lambda self: self.batch is None)
    @rule(max_keys=st.integers(1, 4))
    def compaction_step(self, max_keys: int) -> None:
        before = self.store.hash_kv(0)
        self.store.compaction_step(max_keys)
        assert self.store.hash_kv(0) == before  # physical progress never changes HashKV

    # --- watches ------------------------------------------------------------------------------

    @rule(
        key=keys,
        end=st.sampled_from([b"", b"", b"\x00", b"c", b"e"]),
        back=st.integers(-1, 6),
        no_put=st.sampled_from([False, False, True]),
        no_delete=st.sampled_from([False, False, True]),
        prev_kv=st.booleans(),
        new_stream=st.booleans(),
        pending=st.sampled_from([1, 1, 2, 3, 128]),
    )
    def watch(
        self,
        key: bytes,
        end: bytes,
        back: int,
        no_put: bool,
        no_delete: bool,
        prev_kv: bool,
        new_stream: bool,
        pending: int,
    ) -> None:
        if end and end != b"\x00" and key >= end:
            return
        if new_stream or not self.streams:
            self.streams.append(self.store.new_watch_stream(lambda: None, pending))
        stream = self.streams[-1]
        cur = self.store.current_revision  # the committed revision, even inside a batch
        assert cur == self.committed_cur
        start = 0 if back < 0 else max(1, cur + 1 - back)
        wid = stream.watch(key, end, start, no_put, no_delete, prev_kv)
        effective = cur + 1 if start == 0 else start
        self.watches.append(
            TrackedWatch(stream, wid, key, end, effective, no_put, no_delete, prev_kv)
        )

    @precondition(lambda self: self.batch is None)
    @rule(max_watchers=st.integers(1, 3))
    def sync_watchers(self, max_watchers: int) -> None:
        self.store.sync_watchers(max_watchers)

    @rule()
    def poll_all(self) -> None:
        for stream in self.streams:
            batches = stream.poll()
            for b in batches:
                w = next(t for t in self.watches if t.stream is stream and t.watch_id == b.watch_id)
                assert not w.canceled_at, "batch after cancel"
                if b.canceled:
                    assert b.compact_revision in self.model.compact_revs
                    w.canceled_at = b.compact_revision
                    assert not b.events
                    continue
                assert b.events, "empty batch"
                assert b.revision >= b.events[-1].kv.mod_revision
                assert b.revision > w.last_batch_rev
                w.last_batch_rev = b.revision
                w.received.extend(b.events)
        for w in self.watches:
            self._check_watch(w, complete=False)

    def _expected(self, w: TrackedWatch) -> list[ModelEvent]:
        return [
            e
            for e in self.model.events[: self.committed_events]
            if e.rev >= w.start
            and in_range(e.kv[0], w.key, w.end)
            and not (w.no_put if e.is_put else w.no_delete)
        ]

    def _check_watch(self, w: TrackedWatch, complete: bool) -> None:
        expected = self._expected(w)
        compacted = set(self.model.compact_revs)
        max_compact = max(compacted, default=-1)
        i = 0
        for ev in w.received:
            # a tombstone at exactly a compact revision is gone from the backend (as in etcd)
            while (
                i < len(expected)
                and not expected[i].is_put
                and expected[i].rev in compacted
                and model_tuple(expected[i]) != event_tuple(ev)
            ):
                i += 1
            assert i < len(expected), f"unexpected event {event_tuple(ev)}"
            assert event_tuple(ev) == model_tuple(expected[i]), (event_tuple(ev), expected[i])
            want_prev = expected[i].prev if w.prev_kv else None
            if want_prev is not None and ev.HasField("prev_kv"):
                assert ev.prev_kv.mod_revision == want_prev[2]
                assert ev.prev_kv.value == want_prev[4]
            elif want_prev is not None:
                assert expected[i].rev - 1 < max_compact, "prev_kv missing"
            else:
                assert not ev.HasField("prev_kv")
            i += 1
        if w.canceled_at:
            assert all(e.kv.mod_revision < w.canceled_at for e in w.received)
        elif complete:
            rest = [e for e in expected[i:] if e.is_put or e.rev not in compacted]
            assert not rest, f"missing events {rest}"

    def drain(self) -> None:
        for _ in range(100):
            self.store.sync_watchers(512)
            self.poll_all()
            if all(s.progress() is not None or not s.watch_ids for s in self.streams):
                break
        for w in self.watches:
            if w.start < self.model.compact and not w.canceled_at:
                # start below the compact revision: canceled unless it caught up first
                pass
            self._check_watch(w, complete=True)

    # --- reopen -------------------------------------------------------------------------------

    @precondition(lambda self: self.batch is None)
    @rule()
    def reopen(self) -> None:
        self.drain()
        for s in self.streams:
            s.close()
        self.streams.clear()
        self.watches.clear()
        self.backend.close()
        self.lessor = FakeLessor({1})
        self.backend = Backend(self.path, quota_bytes=64 * 1024**2)
        self.store = WatchableStore(self.backend, self.lessor)

    # --- invariants ---------------------------------------------------------------------------

    @invariant()
    def revisions_agree(self) -> None:
        if self.batch is None:
            assert self.store.current_revision == self.model.cur
            assert self.store.compact_revision == self.model.compact
        else:
            assert self.saved is not None
            assert self.store.current_revision == self.saved[0]
            assert self.store.compact_revision == self.saved[1]

    @invariant()
    def lease_attachments_agree(self) -> None:
        state = self.model.states[self.model.cur]
        want = {k: kv[5] for k, kv in state.items() if kv[5]}
        assert self.lessor.attached == want


MVCCMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("PETCD_MVCC_MODEL_EXAMPLES", "120")),
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestMVCCModel = MVCCMachine.TestCase
