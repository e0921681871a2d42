"""A write batch: one LMDB write transaction applying a run of raft entries to the store.

Each request applied through the batch is one MVCC transaction: it takes the next main
revision if it changes anything, its changes get sub revisions 0, 1, ... in order, and its
response carries that revision. Checks come first (etcd's applier order: lease existence,
then ignore_value/ignore_lease on a missing key; ranges in a txn: future/compacted revision),
so a refused request raises before it changes anything.

The quota does not refuse writes here by default: sizes differ between members (compaction
and defragmentation run at different times), so refusing at apply would let their states
diverge. As etcd's quota applier, the write applies and `over_quota` tells the server to
answer NOSPACE and raise the (replicated) alarm. `Backend(enforce_quota=True)` refuses puts
past the quota with NoSpaceError instead, for a single member or offline tools. The hard
limit is the LMDB map (quota + headroom): past it the batch breaks with BackendFullError.

Invariants:
- while the batch is open the store's `_rev` counts its revisions and readers still see
  `_committed_rev`; commit publishes both, abort rolls back index, revision, compaction mark
  and lease attachments;
- `revisions` lists (main revision, changes) in order: the watchable store delivers them after
  commit;
- a batch whose LMDB transaction failed (map full) is broken: every call raises
  BackendFullError and only abort() or commit() (which aborts) may follow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lmdb

from petcd import errors
from petcd.mvcc import revision
from petcd.mvcc.backend import META_CONSISTENT_INDEX, META_SCHEDULED_COMPACT, META_TERM, RawOp
from petcd.mvcc.key_index import latest
from petcd.mvcc.kvstore import PUT_COST_BYTES, Change, Compaction
from petcd.pb import kv_pb2, rpc_pb2

if TYPE_CHECKING:
    from petcd.mvcc.kvstore import KVStore

KeyValue = kv_pb2.KeyValue
_to_bytes = revision.to_bytes
_REV_PACK = revision.REV_STRUCT.pack
_SUB_MASK = 0xFFFFFFFF


class WriteBatch:
    """See the module docstring. Created by KVStore.write_batch()."""

    __slots__ = (
        "_backend",
        "_broken",
        "_consistent",
        "_cost",
        "_enforce_quota",
        "_hook_log",
        "_hooks",
        "_index",
        "_key_db",
        "_kv",
        "_open",
        "_prev",
        "_raw_ops",
        "_space_left",
        "_start_compact_rev",
        "_start_rev",
        "_store",
        "_txn",
        "_undo",
        "compactions",
        "revisions",
    )

    def __init__(self, store: KVStore) -> None:
        backend = store.backend
        self._store = store
        self._backend = backend
        self._index = store.index
        self._key_db = backend.key_db
        self._hooks = store.lease_hooks
        self._kv = store._scratch_kv
        self._prev = store._scratch_prev
        self._undo: dict[bytes, tuple[Any, int]] = {}
        self._raw_ops: list[RawOp] = []
        self._hook_log: list[tuple[bool, int, bytes]] = []
        self._start_rev = store._rev
        self._start_compact_rev = store._compact_rev
        self._consistent: tuple[int, int] | None = None
        self._broken = False
        self.revisions: list[tuple[int, list[Change]]] = []
        self.compactions: list[Compaction] = []
        self._space_left = backend.space_left_bytes()
        self._enforce_quota = backend.enforce_quota
        self._cost = 0  # quota cost of this batch's puts
        self._txn = backend.begin_write()
        self._open = True

    @property
    def revision(self) -> int:
        """The store's revision including this batch's uncommitted writes."""
        return self._store._rev

    # --- single requests ---------------------------------------------------------------------

    def put(self, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        """One put as its own MVCC transaction (the hot path: see _put_record)."""
        assert self._open, "batch already ended"
        if self._broken:
            raise errors.BackendFullError()
        store = self._store
        rev = store._rev + 1
        key = req.key
        value = req.value
        lease = req.lease
        if lease and not self._lease_exists(lease):
            raise errors.LeaseNotFoundError()
        entry = self._index.entries.get(key)
        if entry is None:
            prev_packed = None
        elif type(entry) is int:
            prev_packed = entry
        else:
            prev_packed = entry[-1]  # type: ignore[index]
            if prev_packed & 1:
                prev_packed = None
        if (req.ignore_value or req.ignore_lease) and prev_packed is None:
            raise errors.KeyNotFoundError()
        cost = PUT_COST_BYTES + len(key) + len(value)
        if cost > self._space_left and self._enforce_quota:
            raise errors.NoSpaceError()
        try:
            raw, prev_raw, prev_lease, lease = self._put_record(req, rev, prev_packed)
        except lmdb.MapFullError as exc:
            self._broken = True
            raise errors.BackendFullError() from exc
        self._index_append(key, entry, rev << 33)
        if self._hooks is not None:
            if prev_lease:
                self._hook(False, prev_lease, key)
            if lease:
                self._hook(True, lease, key)
        self._space_left -= cost
        self._cost += cost
        store._rev = rev
        self.revisions.append((rev, [(key, raw, prev_raw)]))
        resp = rpc_pb2.PutResponse()
        resp.header.revision = rev
        if prev_raw is not None and req.prev_kv:
            resp.prev_kv.ParseFromString(prev_raw)
        return resp

    def _put_record(
        self, req: rpc_pb2.PutRequest, rev: int, prev_packed: int | None
    ) -> tuple[bytes, bytes | None, int, int]:
        """Write the new KeyValue at (rev, 0); returns (raw, previous raw, old lease, lease).

        Scratch messages instead of new ones, and revision keys packed directly (a live
        revision is never a tombstone): this is most of a put's cost.
        """
        txn = self._txn
        key_db = self._key_db
        value = req.value
        lease = req.lease
        prev_raw: bytes | None = None
        prev_lease = 0
        kv = self._kv  # every field is set below: nothing carries over from the last put
        if prev_packed is not None:
            prev_raw = txn.get(
                _REV_PACK(prev_packed >> 33, b"_", (prev_packed >> 1) & _SUB_MASK), db=key_db
            )
            assert prev_raw is not None, "index names a revision missing from the backend"
            prev = self._prev
            prev.ParseFromString(prev_raw)
            prev_lease = prev.lease
            kv.create_revision = prev.create_revision
            kv.version = prev.version + 1
            if req.ignore_value:
                value = prev.value
            if req.ignore_lease:
                lease = prev_lease
        else:
            kv.create_revision = rev
            kv.version = 1
        kv.key = req.key
        kv.mod_revision = rev
        kv.value = value
        kv.lease = lease
        raw: bytes = kv.SerializeToString()
        txn.put(_REV_PACK(rev, b"_", 0), raw, db=key_db, append=True)
        return raw, prev_raw, prev_lease, lease

    def _index_append(self, key: bytes, entry: Any, packed: int) -> None:
        """KeyIndex.add for an entry already looked up, saving it first for abort()."""
        undo = self._undo
        if key not in undo:
            undo[key] = (entry, len(entry) if type(entry) is list else 0)
        index = self._index
        if entry is None:
            index.entries[key] = packed
            index.keys.add(key)
        elif type(entry) is int:
            assert entry < packed
            index.entries[key] = [entry, packed]
            index.multi.add(key)
        else:
            assert entry[-1] < packed
            entry.append(packed)

    def delete_range(self, req: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        self._check_usable()
        store = self._store
        resp = rpc_pb2.DeleteRangeResponse()
        changes: list[Change] = []
        try:
            self._write_delete_range(req, store._rev + 1, changes, resp)
        except lmdb.MapFullError as exc:
            self._broken = True
            raise errors.BackendFullError() from exc
        if changes:
            store._rev += 1
            self.revisions.append((store._rev, changes))
        resp.header.revision = store._rev
        return resp

    def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        self._check_usable()
        store = self._store
        begin = store._rev
        path = store._txn_path(req, begin, self._txn)
        cost = self._check_puts(req, path, 0)[1]
        store._check_ranges(req, path, 0, begin, True)
        if cost > self._space_left and self._enforce_quota:
            raise errors.NoSpaceError()
        resp = rpc_pb2.TxnResponse()
        changes: list[Change] = []
        try:
            self._apply_txn(req, path, 0, begin, changes, resp)
        except lmdb.MapFullError as exc:
            self._broken = True
            raise errors.BackendFullError() from exc
        self._space_left -= cost
        self._cost += cost
        if changes:
            store._rev = begin + 1
            self.revisions.append((begin + 1, changes))
        resp.header.revision = store._rev
        return resp

    def compact(self, rev: int) -> Compaction:
        """Schedule a compaction at `rev`: reads below it fail from now on."""
        self._check_usable()
        store = self._store
        if rev <= store._compact_rev:
            raise errors.CompactedError()
        if rev > store._rev:
            raise errors.FutureRevisionError()
        mark = revision.main_bytes(rev)
        self._meta_put(META_SCHEDULED_COMPACT, mark)
        store._compact_rev = rev
        compaction = Compaction(rev)
        self.compactions.append(compaction)
        return compaction

    def put_raw(self, db: str, key: bytes, value: bytes) -> None:
        """Write to another package's database (lease, auth, members, alarm, ...)."""
        self._check_usable()
        assert db != "key", "the key database is written through MVCC requests only"
        try:
            self._txn.put(key, value, db=self._backend.dbs[db])
        except lmdb.MapFullError as exc:
            self._broken = True
            raise errors.BackendFullError() from exc
        self._raw_ops.append((db, key, value))

    def delete_raw(self, db: str, key: bytes) -> None:
        self._check_usable()
        assert db != "key", "the key database is written through MVCC requests only"
        try:
            self._txn.delete(key, db=self._backend.dbs[db])
        except lmdb.MapFullError as exc:  # copy-on-write: a delete needs pages too
            self._broken = True
            raise errors.BackendFullError() from exc
        self._raw_ops.append((db, key, None))

    def get_raw(self, db: str, key: bytes) -> bytes | None:
        """Read another package's database as this batch sees it."""
        assert self._open
        value: bytes | None = self._txn.get(key, db=self._backend.dbs[db])
        return value

    def set_consistent_index(self, index: int, term: int) -> None:
        """Record the last applied raft entry; committed atomically with the batch's data."""
        self._check_usable()
        assert index >= self._store._consistent_index, (index, self._store._consistent_index)
        assert term >= 0
        self._meta_put(META_CONSISTENT_INDEX, index.to_bytes(8, "big"))
        self._meta_put(META_TERM, term.to_bytes(8, "big"))
        self._consistent = (index, term)

    def reset_consistent_index(self, index: int, term: int) -> None:
        """Offline restore only: the backend starts a new raft log, so the index may go down."""
        self._check_usable()
        assert index >= 0
        assert term >= 0
        self._meta_put(META_CONSISTENT_INDEX, index.to_bytes(8, "big"))
        self._meta_put(META_TERM, term.to_bytes(8, "big"))
        self._consistent = (index, term)

    @property
    def over_quota(self) -> bool:
        """True once this batch's puts took the backend past its quota.

        As etcd's quota applier: the writes are applied all the same (every member must
        apply the same entries; sizes differ between members), the server answers NOSPACE
        and raises the alarm.
        """
        return self._space_left < 0

    # --- end of the batch --------------------------------------------------------------------

    def commit(self) -> None:
        """Commit to LMDB, then deliver the batch's events to synced watchers."""
        assert self._open, "batch already ended"
        if self._broken:
            self.abort()
            raise errors.BackendFullError()
        self._open = False
        try:
            self._backend.commit_write(self._txn, self._raw_ops, self._cost)
        except BaseException:
            self._rollback()
            self._store._batch_done(self, committed=False)
            raise
        store = self._store
        if self._consistent is not None:
            store._consistent_index, store._consistent_term = self._consistent
        store._batch_done(self, committed=True)

    def abort(self) -> None:
        assert self._open, "batch already ended"
        self._open = False
        self._backend.abort_write(self._txn)
        self._rollback()
        self._store._batch_done(self, committed=False)

    def _rollback(self) -> None:
        index = self._index
        for key, saved in self._undo.items():
            index.restore(key, saved)
        hooks = self._hooks
        if hooks is not None:
            for attached, lease_id, key in reversed(self._hook_log):
                if attached:
                    hooks.detach(lease_id, key)
                else:
                    hooks.attach(lease_id, key)
        self._store._rev = self._start_rev
        self._store._compact_rev = self._start_compact_rev
        self.revisions.clear()
        self.compactions.clear()

    # --- helpers -----------------------------------------------------------------------------

    def _check_usable(self) -> None:
        assert self._open, "batch already ended"
        if self._broken:
            raise errors.BackendFullError()

    def _lease_exists(self, lease_id: int) -> bool:
        hooks = self._hooks
        return hooks is None or hooks.lease_exists(lease_id)

    def _meta_put(self, key: bytes, value: bytes) -> None:
        try:
            self._txn.put(key, value, db=self._backend.meta_db)
        except lmdb.MapFullError as exc:
            self._broken = True
            raise errors.BackendFullError() from exc
        self._raw_ops.append(("meta", key, value))

    def _index_add(self, key: bytes, packed: int) -> None:
        undo = self._undo
        if key not in undo:
            undo[key] = self._index.save(key)
        self._index.add(key, packed)

    def _hook(self, attach: bool, lease_id: int, key: bytes) -> None:
        hooks = self._hooks
        if hooks is None:
            return
        if attach:
            hooks.attach(lease_id, key)
        else:
            hooks.detach(lease_id, key)
        self._hook_log.append((attach, lease_id, key))

    def _write_put(self, req: rpc_pb2.PutRequest, rev: int, changes: list[Change]) -> Any:
        """Write one put at (rev, len(changes)); returns the previous KeyValue or None."""
        key = req.key
        txn = self._txn
        prev_packed = latest(self._index.entries.get(key))
        prev_raw: bytes | None = None
        prev: Any = None
        value = req.value
        lease = req.lease
        if prev_packed is not None:
            prev_raw = txn.get(_to_bytes(prev_packed), db=self._key_db)
            assert prev_raw is not None, "index names a revision missing from the backend"
            prev = KeyValue.FromString(prev_raw)
            kv = KeyValue(
                key=key,
                create_revision=prev.create_revision,
                mod_revision=rev,
                version=prev.version + 1,
                value=prev.value if req.ignore_value else value,
                lease=prev.lease if req.ignore_lease else lease,
            )
        else:
            assert not (req.ignore_value or req.ignore_lease), "ignore_* checked before"
            kv = KeyValue(key=key, create_revision=rev, mod_revision=rev, version=1, value=value)
            kv.lease = lease
        raw = kv.SerializeToString()
        packed = (rev << 33) | (len(changes) << 1)
        txn.put(_to_bytes(packed), raw, db=self._key_db, append=True)
        self._index_add(key, packed)
        changes.append((key, raw, prev_raw))
        if prev is not None and prev.lease:
            self._hook(False, prev.lease, key)
        if kv.lease:
            self._hook(True, kv.lease, key)
        return prev

    def _write_delete_range(
        self,
        req: rpc_pb2.DeleteRangeRequest,
        rev: int,
        changes: list[Change],
        resp: rpc_pb2.DeleteRangeResponse,
    ) -> None:
        """Delete every live key in range as of (rev, len(changes)); fills deleted/prev_kvs."""
        keys, revs, _ = self._index.range_at(req.key, req.range_end, rev, 0)
        txn = self._txn
        key_db = self._key_db
        for key, prev_packed in zip(keys, revs, strict=True):
            prev_raw = txn.get(_to_bytes(prev_packed), db=key_db)
            assert prev_raw is not None, "index names a revision missing from the backend"
            packed = (rev << 33) | (len(changes) << 1) | 1
            tomb = KeyValue(key=key).SerializeToString()
            txn.put(_to_bytes(packed), tomb, db=key_db, append=True)
            self._index_add(key, packed)
            changes.append((key, None, prev_raw))
            if req.prev_kv or self._hooks is not None:
                prev = resp.prev_kvs.add()
                prev.ParseFromString(prev_raw)
                if prev.lease:
                    self._hook(False, prev.lease, key)
        resp.deleted = len(keys)
        if not req.prev_kv:
            resp.ClearField("prev_kvs")

    def _check_puts(self, req: rpc_pb2.TxnRequest, path: list[bool], at: int) -> tuple[int, int]:
        """etcd's checkRequests(checkPut) along the path; returns (next path index, cost)."""
        succeeded = path[at]
        at += 1
        cost = 0
        entries = self._index.entries
        for op in req.success if succeeded else req.failure:
            which = op.WhichOneof("request")
            if which == "request_txn":
                at, inner = self._check_puts(op.request_txn, path, at)
                cost += inner
            elif which == "request_put":
                put = op.request_put
                if (put.ignore_value or put.ignore_lease) and latest(entries.get(put.key)) is None:
                    raise errors.KeyNotFoundError()
                if put.lease and not self._lease_exists(put.lease):
                    raise errors.LeaseNotFoundError()
                cost += PUT_COST_BYTES + len(put.key) + len(put.value)
        return at, cost

    def _apply_txn(
        self,
        req: rpc_pb2.TxnRequest,
        path: list[bool],
        at: int,
        begin: int,
        changes: list[Change],
        resp: rpc_pb2.TxnResponse,
    ) -> int:
        """Apply the chosen branch's ops in order (they see earlier ops' writes)."""
        succeeded = path[at]
        resp.succeeded = succeeded
        at += 1
        rev = begin + 1
        for op in req.success if succeeded else req.failure:
            out = resp.responses.add()
            which = op.WhichOneof("request")
            if which == "request_range":
                view = rev if changes else begin
                self._store._range(op.request_range, view, self._txn, out.response_range, True)
                out.response_range.header.revision = view
            elif which == "request_put":
                put = op.request_put
                assert not (put.ignore_value or put.ignore_lease) or latest(
                    self._index.entries.get(put.key)
                ), "ignore_* on a key deleted earlier in the txn (validation forbids it)"
                prev = self._write_put(put, rev, changes)
                out.response_put.header.revision = rev
                if put.prev_kv and prev is not None:
                    out.response_put.prev_kv.CopyFrom(prev)
            elif which == "request_delete_range":
                deleted = out.response_delete_range
                self._write_delete_range(op.request_delete_range, rev, changes, deleted)
                deleted.header.revision = rev if changes else begin
            else:
                assert which == "request_txn", which
                inner = out.response_txn
                inner.header.SetInParent()
                at = self._apply_txn(op.request_txn, path, at, begin, changes, inner)
        return at
