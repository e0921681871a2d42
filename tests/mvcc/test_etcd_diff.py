"""Differential test: the same seeded random KV history (put, delete, txn with nested txns,
range with every option, compact) run against a real etcd 3.5.1 over gRPC and against
petcd.mvcc in-process. Responses must be byte-identical (etcd's header reduced to the revision,
which is all the store sets) and errors must be the same classes."""

from __future__ import annotations

import os
import queue
import random
import threading
from typing import Any

import grpc

from petcd import errors
from petcd.mvcc import Backend, WatchableStore, validate
from petcd.pb import rpc_pb2 as rpc
from petcd.pb import rpc_pb2_grpc
from tests.mvcc.conftest import FakeLessor
from tests.support.process import EtcdProcess

KEYS = [b"a", b"b", b"c", b"d", b"e"]
STEPS = int(os.environ.get("PETCD_MVCC_DIFF_STEPS", "400"))


class Gen:
    def __init__(self, rng: random.Random, rev: Any) -> None:
        self.rng = rng
        self.rev = rev  # () -> current revision, for plausible revision arguments

    def key(self) -> bytes:
        return self.rng.choice(KEYS)

    def end(self) -> bytes:
        return self.rng.choice([b"", b"", b"\x00", b"c", b"f", b"b"])

    def revision(self) -> int:
        return self.rng.choice([0, 0, 0, -1, self.rng.randint(1, self.rev() + 2)])

    def put(self) -> rpc.PutRequest:
        r = self.rng
        ignore_value = r.random() < 0.1
        ignore_lease = r.random() < 0.1
        return rpc.PutRequest(
            key=self.key(),
            value=b"" if ignore_value else r.choice([b"", b"x", b"yy", b"zzz"]),
            lease=0 if ignore_lease else r.choice([0, 0, 0, 1, 2]),
            prev_kv=r.random() < 0.5,
            ignore_value=ignore_value,
            ignore_lease=ignore_lease,
        )

    def range(self) -> rpc.RangeRequest:
        r = self.rng

        def small() -> int:
            return r.choice([0, 0, 0, 0, r.randint(1, self.rev() + 1)])

        return rpc.RangeRequest(
            key=self.key(),
            range_end=self.end(),
            revision=self.revision(),
            limit=r.choice([0, 0, 1, 2, 3]),
            sort_order=r.choice([0, 0, 1, 2]),
            sort_target=r.choice([0, 0, 1, 2, 3, 4]),
            keys_only=r.random() < 0.2,
            count_only=r.random() < 0.1,
            min_mod_revision=small(),
            max_mod_revision=small(),
            min_create_revision=small(),
            max_create_revision=small(),
        )

    def delete(self) -> rpc.DeleteRangeRequest:
        return rpc.DeleteRangeRequest(
            key=self.key(), range_end=self.end(), prev_kv=self.rng.random() < 0.5
        )

    def compare(self) -> rpc.Compare:
        r = self.rng
        c = rpc.Compare(
            key=self.key(),
            range_end=r.choice([b"", b"", b"c", b"\x00"]),
            target=r.randint(0, 4),
            result=r.randint(0, 3),
        )
        if r.random() < 0.2:
            return c
        if c.target == rpc.Compare.VALUE:
            c.value = r.choice([b"", b"x", b"yy"])
        else:
            name = ["version", "create_revision", "mod_revision", "", "lease"][c.target]
            setattr(c, name, r.randint(0, self.rev() + 1))
        return c

    def op(self, depth: int) -> rpc.RequestOp:
        kind = self.rng.choice(
            ["range", "put", "put", "delete", "txn"] if depth < 2 else ["range", "put", "delete"]
        )
        if kind == "range":
            return rpc.RequestOp(request_range=self.range())
        if kind == "put":
            return rpc.RequestOp(request_put=self.put())
        if kind == "delete":
            req = self.delete()
            if req.range_end == b"\x00":  # our one stricter duplicate rule: keep it out
                req.range_end = b"f"
            return rpc.RequestOp(request_delete_range=req)
        return rpc.RequestOp(request_txn=self.txn(depth + 1))

    def txn(self, depth: int = 0) -> rpc.TxnRequest:
        r = self.rng
        return rpc.TxnRequest(
            compare=[self.compare() for _ in range(r.randint(0, 2))],
            success=[self.op(depth) for _ in range(r.randint(0, 3))],
            failure=[self.op(depth) for _ in range(r.randint(0, 2))],
        )


def etcd_call(fn: Any, req: Any) -> tuple[str, Any]:
    try:
        resp = fn(req, timeout=10)
    except grpc.RpcError as exc:
        err = errors.from_status(exc.code().value[0], exc.details())
        return "error", type(err).__name__
    rev = resp.header.revision
    resp.ClearField("header")
    resp.header.revision = rev
    return "ok", resp.SerializeToString(deterministic=True)


def store_call(fn: Any, req: Any, header_rev: int | None = None) -> tuple[str, Any]:
    try:
        resp = fn(req)
    except errors.PetcdError as exc:
        return "error", type(exc).__name__
    if header_rev is not None:
        resp.header.revision = header_rev
    return "ok", resp.SerializeToString(deterministic=True)


def test_random_history_matches_etcd_3_5(etcd35: EtcdProcess, tmp_path: Any) -> None:
    channel = grpc.insecure_channel(etcd35.endpoint)
    kv = rpc_pb2_grpc.KVStub(channel)
    lease = rpc_pb2_grpc.LeaseStub(channel)
    lease.LeaseGrant(rpc.LeaseGrantRequest(ID=1, TTL=3600), timeout=10)
    backend = Backend(str(tmp_path / "db"))
    store = WatchableStore(backend, FakeLessor({1}))
    seed = int(os.environ.get("PETCD_MVCC_DIFF_SEED", random.randrange(1 << 30)))
    gen = Gen(random.Random(seed), lambda: store.current_revision)

    def write(method: str, req: Any) -> tuple[str, Any]:
        b = store.write_batch()
        try:
            return store_call(getattr(b, method), req)
        finally:
            b.commit()

    def compact(req: rpc.CompactionRequest) -> rpc.CompactionResponse:
        b = store.write_batch()
        try:
            b.compact(req.revision)
        finally:
            b.commit()
        while store.compaction_step(max_keys=1000):
            pass
        resp = rpc.CompactionResponse()
        resp.header.revision = store.current_revision
        return resp

    for step in range(STEPS):
        kind = gen.rng.choice(["put"] * 4 + ["delete", "range", "range", "txn", "txn", "compact"])
        if kind == "put":
            req: Any = gen.put()
            validate.check_put(req)
            got, want = write("put", req), etcd_call(kv.Put, req)
        elif kind == "delete":
            req = gen.delete()
            got, want = write("delete_range", req), etcd_call(kv.DeleteRange, req)
        elif kind == "range":
            req = gen.range()
            got = store_call(store.range, req, store.current_revision)
            want = etcd_call(kv.Range, req)
        elif kind == "txn":
            req = gen.txn()
            try:
                validate.check_txn(req)
            except errors.PetcdError as exc:
                got = ("error", type(exc).__name__)
            else:
                got = write("txn", req)
            want = etcd_call(kv.Txn, req)
        else:
            req = rpc.CompactionRequest(revision=store.current_revision - gen.rng.randint(0, 8))
            got = store_call(compact, req)
            want = etcd_call(kv.Compact, req)
        assert got == want, f"seed {seed} step {step} {kind}: {req}\npetcd: {got}\netcd:  {want}"
    assert (
        store.current_revision == kv.Range(rpc.RangeRequest(key=b"a"), timeout=10).header.revision
    )
    channel.close()
    backend.close()


class EtcdWatch:
    """One etcd Watch stream with one watcher, read by a thread into a bounded queue."""

    def __init__(self, stub: Any, create: rpc.WatchCreateRequest) -> None:
        self.out: queue.Queue[Any] = queue.Queue(maxsize=10_000)
        self.done = threading.Event()

        def requests() -> Any:
            yield rpc.WatchRequest(create_request=create)
            self.done.wait(60)

        self.call = stub.Watch(requests(), timeout=60)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        # etcd creates the watcher when the request arrives: wait for it, so that a watch
        # "from the next revision" starts where petcd's did
        self.created = self.out.get(timeout=10)
        assert self.created.created

    def _read(self) -> None:
        try:
            for resp in self.call:
                self.out.put(resp, timeout=10)
        except grpc.RpcError:
            pass

    def responses(self, want_events: int, want_canceled: bool) -> list[Any]:
        """Responses until `want_events` events (or a cancel) have arrived."""
        got: list[Any] = [self.created]
        events = 0
        while events < want_events or (want_canceled and not any(r.canceled for r in got)):
            try:
                resp = self.out.get(timeout=10)
            except queue.Empty:
                raise AssertionError(f"etcd sent only {got}") from None
            got.append(resp)
            events += len(resp.events)
        return got

    def close(self) -> None:
        self.done.set()
        self.call.cancel()


def test_watch_events_match_etcd_3_5(etcd35: EtcdProcess, tmp_path: Any) -> None:
    channel = grpc.insecure_channel(etcd35.endpoint)
    kv = rpc_pb2_grpc.KVStub(channel)
    watch = rpc_pb2_grpc.WatchStub(channel)
    backend = Backend(str(tmp_path / "db"))
    store = WatchableStore(backend, FakeLessor({1}))
    seed = int(os.environ.get("PETCD_MVCC_DIFF_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    gen = Gen(rng, lambda: store.current_revision)

    def write_some(n: int) -> None:
        for _ in range(n):
            if rng.random() < 0.7:
                req: Any = gen.put()
                req.lease = 0
                req.ignore_lease = False
                store_fn, etcd_fn = "put", kv.Put
            elif rng.random() < 0.5:
                req = gen.delete()
                store_fn, etcd_fn = "delete_range", kv.DeleteRange
            else:
                req = rpc.TxnRequest(
                    success=[
                        rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=b"t"))
                        for k in rng.sample(KEYS, 2)
                    ]
                )
                store_fn, etcd_fn = "txn", kv.Txn
            b = store.write_batch()
            try:
                got = store_call(getattr(b, store_fn), req)
            finally:
                b.commit()
            assert got == etcd_call(etcd_fn, req), f"seed {seed}: {req}"

    write_some(60)
    b = store.write_batch()
    b.compact(10)
    b.commit()
    while store.compaction_step():  # etcd compacts at once: a watch from 10 misses its tombstones
        pass
    kv.Compact(rpc.CompactionRequest(revision=10, physical=True), timeout=10)
    watchers = []
    for _ in range(12):
        create = rpc.WatchCreateRequest(
            key=gen.key(),
            range_end=rng.choice([b"", b"\x00", b"c", b"f"]),
            start_revision=rng.choice([0, 5, 10, 11, rng.randint(11, store.current_revision)]),
            prev_kv=rng.random() < 0.5,
            filters=rng.sample(
                [rpc.WatchCreateRequest.NOPUT, rpc.WatchCreateRequest.NODELETE], rng.randint(0, 1)
            ),
        )
        if create.range_end not in (b"", b"\x00") and create.key >= create.range_end:
            create.range_end = b""  # an empty range fails creation in both
        stream = store.new_watch_stream(lambda: None, 1000)
        stream.watch(
            create.key,
            create.range_end,
            create.start_revision,
            no_put=rpc.WatchCreateRequest.NOPUT in create.filters,
            no_delete=rpc.WatchCreateRequest.NODELETE in create.filters,
            prev_kv=create.prev_kv,
        )
        watchers.append((create, stream, EtcdWatch(watch, create)))
    store.sync_watchers()
    write_some(40)
    for _ in range(5):
        store.sync_watchers()
    compared: list[int] = []
    for create, stream, etcd_watch in watchers:
        ours = stream.poll()
        want_events = sum(len(b.events) for b in ours)
        canceled = any(b.canceled for b in ours)
        try:
            theirs = etcd_watch.responses(want_events, canceled)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed} watch {create}: petcd sent {ours}; {exc}") from None
        etcd_watch.close()
        assert theirs[0].created
        mine = [e.SerializeToString() for b in ours for e in b.events]
        etcds = [e.SerializeToString() for r in theirs for e in r.events]
        assert mine == etcds, f"seed {seed} watch {create}"
        compared.append(len(mine))
        if canceled:
            assert [b.compact_revision for b in ours if b.canceled] == [
                r.compact_revision for r in theirs if r.canceled
            ]
    assert sum(compared) > 50, compared  # the streams were not trivially empty
    channel.close()
    backend.close()
