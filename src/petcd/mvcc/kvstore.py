"""The MVCC key-value store: range, put, delete, txn and compaction over the key index and LMDB.

A write batch is ONE LMDB write transaction holding several MVCC transactions (one per applied
request); each MVCC transaction that changes something takes the next main revision and
numbers its changes with sub revisions. Readers outside the batch see only committed state:
they read at the committed revision through the backend's shared read transaction, and the key
index never hides an older revision from them (a batch only appends newer revisions; index
compaction happens between batches), so an open batch is invisible until commit.

Invariants:
- `_rev` >= `_committed_rev` >= 1; they differ only while a batch is open.
- a failed request raises before it changes anything (checks first, as etcd's applier);
  if LMDB fails mid-request (map full) the batch is marked broken and can only be aborted.
- abort restores the key index, revisions, compaction mark and lease attachments.
- compaction: `b.compact(rev)` records scheduledCompactRev and refuses older reads at once;
  `compaction_step` then compacts the index and deletes old revisions in bounded steps,
  keeping for each key its newest revision <= rev unless that is a tombstone, and writes
  finishedCompactRev in the step that finishes.
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from petcd import errors
from petcd.mvcc import revision
from petcd.mvcc.backend import (
    META_CONSISTENT_INDEX,
    META_FINISHED_COMPACT,
    META_SCHEDULED_COMPACT,
    META_TERM,
    Backend,
    RawOp,
)
from petcd.mvcc.key_index import KeyIndex, live_at
from petcd.pb import kv_pb2, rpc_pb2
from petcd.wire import length_delimited

if TYPE_CHECKING:
    from petcd.mvcc.write_batch import WriteBatch

KeyValue = kv_pb2.KeyValue
RangeRequest = rpc_pb2.RangeRequest
_NONE = RangeRequest.NONE
_ASCEND = RangeRequest.ASCEND
_DESCEND = RangeRequest.DESCEND
_SORT_KEYS = {
    RangeRequest.KEY: lambda kv: kv.key,
    RangeRequest.VERSION: lambda kv: kv.version,
    RangeRequest.CREATE: lambda kv: kv.create_revision,
    RangeRequest.MOD: lambda kv: kv.mod_revision,
    RangeRequest.VALUE: lambda kv: kv.value,
}
_REV_PACK = revision.REV_STRUCT.pack
_RANGE_FROM_STRING = rpc_pb2.RangeResponse.FromString
PUT_COST_BYTES = 256  # etcd's quota cost of a put beyond its key and value
COMPACTION_STEP_MAX = 100_000

# One change of a write: (key, encoded KeyValue or None for a delete, encoded previous KV).
Change = tuple[bytes, bytes | None, bytes | None]


class LeaseHooks(Protocol):
    """What the store needs from the lessor: existence checks and key attachments.

    The store calls attach/detach as each put or delete applies (so a lease revoked later in
    the same batch sees the key), undoes them on abort, and attaches every live key with a
    lease when it opens or restores. With no hooks (tests, tools) leases are not checked.
    """

    def lease_exists(self, lease_id: int) -> bool: ...

    def attach(self, lease_id: int, key: bytes) -> None: ...

    def detach(self, lease_id: int, key: bytes) -> None: ...


@dataclass(slots=True)
class Compaction:
    """A scheduled compaction; `done` once history below `revision` is gone from disk."""

    revision: int
    done: bool = False
    pending_keys: list[bytes] = field(default_factory=list)
    cursor: bytes = b""
    physical_done: bool = False


def key_of(raw: bytes) -> bytes:
    """The key field of an encoded KeyValue (field 1 comes first), without a full parse."""
    assert raw[0] == 0x0A, raw[:4]
    length = 0
    shift = 0
    pos = 1
    while True:
        byte = raw[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        assert shift < 64
    assert pos + length <= len(raw)
    return raw[pos : pos + length]


def _is_point_read(req: rpc_pb2.RangeRequest) -> bool:
    """A Range of one key's current value with no options (most reads).

    Quick test first: such a request encodes as just its key (tag, 1-byte length, key);
    serializable (no effect here) or a long key fall through to the field-by-field test.
    """
    if req.ByteSize() == len(req.key) + 2:
        return True
    return not (
        req.range_end
        or req.revision
        or req.count_only
        or req.keys_only
        or req.sort_order
        or req.sort_target
        or req.min_mod_revision
        or req.max_mod_revision
        or req.min_create_revision
        or req.max_create_revision
    )


def _point_response(raw: bytes) -> bytes:
    """An encoded RangeResponse (no header) of one stored KeyValue: kvs (field 2), count=1."""
    return length_delimited(b"\x12", raw) + b"\x20\x01"


def _u64(raw: bytes | None) -> int:
    return 0 if raw is None else int.from_bytes(raw, "big")


class KVStore:
    """The MVCC store over a Backend. WatchableStore adds watchers on top."""

    def __init__(self, backend: Backend, lease_hooks: LeaseHooks | None = None) -> None:
        self.backend = backend
        self.lease_hooks = lease_hooks
        self.index = KeyIndex()
        self._rev = 1
        self._committed_rev = 1
        self._compact_rev = -1  # includes a compaction scheduled in the open batch
        self._committed_compact_rev = -1  # what readers outside the batch see
        self._consistent_index = 0
        self._consistent_term = 0
        self._compactions: deque[Compaction] = deque()
        self._batch: WriteBatch | None = None
        self._scratch_kv = KeyValue()  # reused by the put hot path (one batch at a time)
        self._scratch_prev = KeyValue()
        self._load()

    # --- state -------------------------------------------------------------------------------

    @property
    def current_revision(self) -> int:
        return self._committed_rev

    @property
    def compact_revision(self) -> int:
        return self._committed_compact_rev

    @property
    def consistent_index(self) -> int:
        return self._consistent_index

    @property
    def consistent_term(self) -> int:
        return self._consistent_term

    @property
    def term(self) -> int:
        return self._consistent_term

    # --- open: rebuild the index from the backend --------------------------------------------

    def _load(self) -> None:
        txn = self.backend.reader()
        entries, multi, leases, last_main = self._scan_key_db(txn)
        meta = self.backend.meta_db
        raw_scheduled = txn.get(META_SCHEDULED_COMPACT, db=meta)
        raw_finished = txn.get(META_FINISHED_COMPACT, db=meta)
        scheduled = -1 if raw_scheduled is None else revision.main_from_bytes(raw_scheduled)
        finished = -1 if raw_finished is None else revision.main_from_bytes(raw_finished)
        self.index = KeyIndex.from_entries(entries, multi)
        self._rev = self._committed_rev = max(1, last_main, scheduled, finished)
        self._compact_rev = self._committed_compact_rev = max(scheduled, finished)
        self._consistent_index = _u64(txn.get(META_CONSISTENT_INDEX, db=meta))
        self._consistent_term = _u64(txn.get(META_TERM, db=meta))
        self._compactions.clear()
        if scheduled > finished:
            self._compactions.append(Compaction(scheduled, pending_keys=list(multi)))
        if self.lease_hooks is not None:
            for key, lease_id in leases.items():
                self.lease_hooks.attach(lease_id, key)

    def _scan_key_db(self, txn: Any) -> tuple[dict[bytes, Any], set[bytes], dict[bytes, int], int]:
        """Rebuild the index in one pass over the key database, in revision order.

        Returns (entries, multi-revision keys, lease of each live key, newest main revision).
        One tight loop: this is most of the open time (about 1 µs per stored revision).
        """
        entries: dict[bytes, Any] = {}
        multi: set[bytes] = set()
        leases: dict[bytes, int] = {}
        packed = 0
        unpack = revision.REV_STRUCT.unpack
        parse = KeyValue.FromString
        with txn.cursor(db=self.backend.key_db) as cursor:
            for raw_rev, raw_kv in cursor.iternext():
                size = len(raw_rev)
                tombstone = size == 18
                if (size != 17 and not (tombstone and raw_rev[17] == 0x74)) or raw_rev[8] != 0x5F:
                    raise self._corrupt(f"bad revision key {raw_rev!r}")
                try:
                    kv = parse(raw_kv)
                except Exception as exc:  # protobuf's DecodeError: the file is damaged
                    raise self._corrupt(f"bad KeyValue at {raw_rev!r}: {exc}") from exc
                main, _, sub = unpack(raw_rev[:17])
                assert (main << 33 | sub << 1) > packed, "revisions out of order"
                packed = main << 33 | sub << 1 | tombstone
                key = kv.key
                entry = entries.get(key)
                if entry is None:
                    if tombstone:  # a lone tombstone left by an unfinished compaction
                        entries[key] = [packed]
                        multi.add(key)
                    else:
                        entries[key] = packed
                elif type(entry) is int:
                    entries[key] = [entry, packed]
                    multi.add(key)
                else:
                    entry.append(packed)
                if kv.lease and not tombstone:
                    leases[key] = kv.lease
                elif leases:
                    leases.pop(key, None)
        return entries, multi, leases, packed >> 33

    def _corrupt(self, reason: str) -> errors.CorruptFileError:
        return errors.CorruptFileError(self.backend.path, 0, reason)

    # --- reads -------------------------------------------------------------------------------

    def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        """A Range at the committed revision (header left for the caller to fill)."""
        if _is_point_read(req):
            raw = self._point_raw(req.key)
            if raw is None:
                return rpc_pb2.RangeResponse()
            return _RANGE_FROM_STRING(_point_response(raw))  # one parse of the whole response
        return self._range(req, self._committed_rev, self.backend.reader())

    def range_encoded(self, req: rpc_pb2.RangeRequest) -> bytes:
        """The encoded RangeResponse (no header) of a Range at the committed revision.

        A point read of the current value, the common case, never builds a message: the
        stored KeyValue bytes go out as they are (RangeResponse field 2, then count=1 as
        field 4). The server splices a header (field 1) in front; fields may come in any
        order on the wire.
        """
        if not _is_point_read(req):
            return self.range(req).SerializeToString()
        raw = self._point_raw(req.key)
        if raw is None:
            return b""
        return _point_response(raw)

    def _point_raw(self, key: bytes) -> bytes | None:
        """The stored KeyValue of `key` at the committed revision, or None."""
        entry = self.index.entries.get(key)
        if entry is None:
            return None
        packed: int | None = entry if type(entry) is int else entry[-1]  # type: ignore[index]
        assert packed is not None
        if packed >> 33 > self._committed_rev:  # written by the open batch: read around it
            packed = live_at(entry, self._committed_rev)
        elif packed & 1:
            packed = None
        if packed is None:
            return None
        backend = self.backend
        txn = backend._rtxn if not backend._rtxn_stale else backend.reader()
        raw: bytes | None = txn.get(
            _REV_PACK(packed >> 33, b"_", (packed >> 1) & 0xFFFFFFFF), db=backend.key_db
        )
        assert raw is not None, "index names a revision missing from the backend"
        return raw

    def _check_read_rev(self, want: int, cur: int, inside: bool) -> int:
        """The revision a read at `want` uses; `inside` a batch, its compaction counts."""
        if want > cur:
            raise errors.FutureRevisionError()
        rev = cur if want <= 0 else want
        compact_rev = self._compact_rev if inside else self._committed_compact_rev
        if rev < compact_rev:
            raise errors.CompactedError()
        return rev

    def _range(
        self,
        req: rpc_pb2.RangeRequest,
        cur: int,
        txn: Any,
        resp: rpc_pb2.RangeResponse | None = None,
        inside: bool = False,
    ) -> rpc_pb2.RangeResponse:
        rev = self._check_read_rev(req.revision, cur, inside)
        if resp is None:
            resp = rpc_pb2.RangeResponse()
        key = req.key
        end = req.range_end
        limit = req.limit
        plain = (
            req.sort_order == _NONE
            and not req.min_mod_revision
            and not req.max_mod_revision
            and not req.min_create_revision
            and not req.max_create_revision
        )
        if not end:
            packed = live_at(self.index.entries.get(key), rev)
            if packed is None:
                return resp
            revs = [packed]
            resp.count = 1
        else:
            fetch = limit + 1 if plain and limit > 0 else 0
            _, revs, resp.count = self.index.range_at(key, end, rev, fetch)
        if req.count_only or not revs:
            return resp
        get = txn.get
        key_db = self.backend.key_db
        to_bytes = revision.to_bytes
        if plain and req.sort_target == RangeRequest.KEY:
            if 0 < limit < len(revs):
                resp.more = True
                del revs[limit:]
            kvs = resp.kvs
            for packed in revs:  # live revisions: never tombstones
                raw = get(_REV_PACK(packed >> 33, b"_", (packed >> 1) & 0xFFFFFFFF), db=key_db)
                kvs.add().ParseFromString(raw)
            if req.keys_only:
                for kv in kvs:
                    kv.ClearField("value")
            return resp
        parsed = [KeyValue.FromString(get(to_bytes(packed), db=key_db)) for packed in revs]
        self._filter_sort(req, parsed, resp)
        return resp

    @staticmethod
    def _filter_sort(
        req: rpc_pb2.RangeRequest, kvs: list[Any], resp: rpc_pb2.RangeResponse
    ) -> None:
        """etcd's applier: prune by min/max revisions, sort, truncate to limit (sets more)."""
        if req.max_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision <= req.max_mod_revision]
        if req.min_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision >= req.min_mod_revision]
        if req.max_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision <= req.max_create_revision]
        if req.min_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision >= req.min_create_revision]
        order = req.sort_order
        target = req.sort_target
        if target != RangeRequest.KEY and order == _NONE:
            order = _ASCEND
        elif target == RangeRequest.KEY and order == _ASCEND:
            order = _NONE  # already in key order
        if order != _NONE:
            kvs.sort(key=_SORT_KEYS[target], reverse=order == _DESCEND)
        if 0 < req.limit < len(kvs):
            resp.more = True
            del kvs[req.limit :]
        if req.keys_only:
            for kv in kvs:
                kv.ClearField("value")
        resp.kvs.extend(kvs)

    def txn_read_only(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        """A Txn without writes in any branch, at the committed revision."""
        assert not txn_has_writes(req), "txn_read_only given a txn that writes"
        cur = self._committed_rev
        txn = self.backend.reader()
        path = self._txn_path(req, cur, txn)
        self._check_ranges(req, path, 0, cur, False)
        resp = rpc_pb2.TxnResponse()
        self._read_txn_ops(req, path, 0, cur, txn, resp)
        resp.header.revision = cur
        return resp

    def _read_txn_ops(
        self,
        req: rpc_pb2.TxnRequest,
        path: list[bool],
        at: int,
        cur: int,
        txn: Any,
        resp: rpc_pb2.TxnResponse,
    ) -> int:
        succeeded = path[at]
        resp.succeeded = succeeded
        at += 1
        for op in req.success if succeeded else req.failure:
            out = resp.responses.add()
            if op.WhichOneof("request") == "request_range":
                self._range(op.request_range, cur, txn, out.response_range)
                out.response_range.header.revision = cur
            else:
                inner = out.response_txn
                inner.header.SetInParent()
                at = self._read_txn_ops(op.request_txn, path, at, cur, txn, inner)
        return at

    def _check_ranges(
        self, req: rpc_pb2.TxnRequest, path: list[bool], at: int, cur: int, inside: bool
    ) -> int:
        """etcd's checkRequests(checkRange) along the path: future or compacted revisions."""
        succeeded = path[at]
        at += 1
        for op in req.success if succeeded else req.failure:
            which = op.WhichOneof("request")
            if which == "request_txn":
                at = self._check_ranges(op.request_txn, path, at, cur, inside)
            elif which == "request_range" and op.request_range.revision != 0:
                # etcd's checkRange compares the raw revision: a negative one inside a
                # txn is "compacted" once anything was compacted (a plain Range reads it
                # as "current")
                want = op.request_range.revision
                if want > cur:
                    raise errors.FutureRevisionError()
                if want < (self._compact_rev if inside else self._committed_compact_rev):
                    raise errors.CompactedError()
        return at

    # --- txn compares (all evaluated on the view before the txn, as etcd) -------------------

    def _txn_path(self, req: rpc_pb2.TxnRequest, rev: int, txn: Any) -> list[bool]:
        """etcd's compareToPath: the outcome of this txn and of nested txns on the path."""
        ok = all(self._compare(cmp, rev, txn) for cmp in req.compare)
        path = [ok]
        for op in req.success if ok else req.failure:
            if op.WhichOneof("request") == "request_txn":
                path.extend(self._txn_path(op.request_txn, rev, txn))
        return path

    def _compare(self, cmp: rpc_pb2.Compare, rev: int, txn: Any) -> bool:
        if cmp.target == rpc_pb2.Compare.MOD and not cmp.range_end:
            # Compare-and-swap's usual compare: a key's mod revision is the main revision of
            # its live index entry, no read needed (0 when missing or deleted, as KeyValue()).
            packed = live_at(self.index.entries.get(cmp.key), rev)
            theirs = cmp.mod_revision if cmp.WhichOneof("target_union") == "mod_revision" else 0
            return _compare_result(cmp.result, 0 if packed is None else packed >> 33, theirs)
        _, revs, _ = self.index.range_at(cmp.key, cmp.range_end, rev, 0)
        key_db = self.backend.key_db
        kvs = [KeyValue.FromString(txn.get(revision.to_bytes(p), db=key_db)) for p in revs]
        if not kvs:
            if cmp.target == rpc_pb2.Compare.VALUE:
                return False  # a missing key has no value to compare
            kvs = [KeyValue()]
        return all(_compare_kv(cmp, kv) for kv in kvs)

    # --- writes ------------------------------------------------------------------------------

    def write_batch(self) -> WriteBatch:
        """Open the one write batch (one LMDB write transaction)."""
        assert self._batch is None, "a write batch is already open"
        assert self._rev == self._committed_rev
        from petcd.mvcc.write_batch import WriteBatch  # the batch module builds on this one

        batch = WriteBatch(self)
        self._batch = batch
        return batch

    def _batch_done(self, batch: WriteBatch, committed: bool) -> None:
        assert self._batch is batch
        self._batch = None
        if committed:
            self._committed_rev = self._rev
            self._committed_compact_rev = self._compact_rev
            for compaction in batch.compactions:
                compaction.pending_keys = list(self.index.multi)
                self._compactions.append(compaction)
            self._notify(batch.revisions)
        assert self._rev == self._committed_rev

    def _notify(self, revisions: list[tuple[int, list[Change]]]) -> None:
        """Called after each committed batch with its changes; WatchableStore delivers them."""

    # --- compaction --------------------------------------------------------------------------

    def compaction_step(self, max_keys: int = 1000) -> bool:
        """Do up to `max_keys` of index and physical compaction; True while work remains."""
        assert self._batch is None, "compaction_step inside a write batch"
        assert 0 < max_keys <= COMPACTION_STEP_MAX
        if not self._compactions:
            return False
        compaction = self._compactions[0]
        pending = compaction.pending_keys
        for _ in range(min(max_keys, len(pending))):
            self.index.compact_key(pending.pop(), compaction.revision)
        if not compaction.physical_done:
            self._physical_step(compaction, max_keys)
        if compaction.physical_done and not pending:
            compaction.done = True
            self._compactions.popleft()
        return bool(self._compactions)

    def _physical_step(self, compaction: Compaction, max_keys: int) -> None:
        backend = self.backend
        key_db = backend.key_db
        end = revision.main_bytes(compaction.revision + 1)
        entries = self.index.entries
        txn = backend.begin_write()
        ops: list[RawOp] = []
        try:
            doomed: list[bytes] = []
            last = b""
            finished = True
            with txn.cursor(db=key_db) as cursor:
                found = cursor.set_range(compaction.cursor)
                scanned = 0
                while found:
                    raw_rev = cursor.key()
                    if raw_rev >= end:
                        break
                    if scanned >= max_keys:
                        finished = False
                        break
                    scanned += 1
                    last = raw_rev
                    packed = revision.from_bytes(raw_rev)
                    keep = live_at(entries.get(key_of(cursor.value())), compaction.revision)
                    if keep != packed:
                        doomed.append(raw_rev)
                    found = cursor.next()
            for raw_rev in doomed:
                txn.delete(raw_rev, db=key_db)
                ops.append(("key", raw_rev, None))
            if finished:
                mark = revision.main_bytes(compaction.revision)
                txn.put(META_FINISHED_COMPACT, mark, db=backend.meta_db)
                ops.append(("meta", META_FINISHED_COMPACT, mark))
        except BaseException:
            backend.abort_write(txn)
            raise
        backend.commit_write(txn, ops)
        if last:
            compaction.cursor = last + b"\0"  # the next key after `last`
        compaction.physical_done = finished

    # --- hashes ------------------------------------------------------------------------------

    def hash(self) -> int:
        """CRC-32 over every database (names, keys, values), minus the consistent index/term.

        zlib's CRC-32 rather than etcd's Castagnoli: only petcd members compare these.
        Thread-safe (its own read transaction): a large backend can be hashed in a worker.
        """
        return self.backend.hash()

    def hash_kv(self, rev: int) -> tuple[int, int, int]:
        """(hash, compact revision, current revision) of the key history up to `rev`, at once.

        See `KVHasher`; the server hashes in steps so that a large store never stalls it.
        """
        hasher = KVHasher(self, rev)
        while hasher.step(HASH_STEP_ROWS):
            pass
        return hasher.result()

    # --- maintenance -------------------------------------------------------------------------

    def defrag_swap(self, copied_path: str) -> None:
        """Swap in a defragmented copy made by backend.copy_to (between batches)."""
        assert self._batch is None, "defrag_swap inside a write batch"
        self.backend.swap_in(copied_path)

    def restore(self, snapshot_backend_path: str) -> None:
        """Replace the whole backend (raft snapshot install) and rebuild the index."""
        assert self._batch is None, "restore inside a write batch"
        for compaction in self._compactions:
            compaction.done = True  # superseded: the restored backend has its own marks
        self.backend.replace_with(snapshot_backend_path)
        self._load()


_WRITES = ("request_put", "request_delete_range")


def txn_has_writes(req: rpc_pb2.TxnRequest, kinds: tuple[str, ...] = _WRITES) -> bool:
    """Whether either branch (nested txns included) has an op of `kinds` (default: any write)."""
    for op in (*req.success, *req.failure):
        which = op.WhichOneof("request")
        if which in kinds:
            return True
        if which == "request_txn" and txn_has_writes(op.request_txn, kinds):
            return True
    return False


def txn_has_put(req: rpc_pb2.TxnRequest) -> bool:
    """Whether the txn (nested included) has a put: what the NOSPACE alarm refuses."""
    return txn_has_writes(req, ("request_put",))


def _compare_kv(cmp: rpc_pb2.Compare, kv: Any) -> bool:
    target = cmp.target
    union = cmp.WhichOneof("target_union")
    ours: int | bytes
    theirs: int | bytes
    if target == rpc_pb2.Compare.VALUE:
        ours, theirs = kv.value, cmp.value if union == "value" else b""
    elif target == rpc_pb2.Compare.CREATE:
        ours, theirs = kv.create_revision, cmp.create_revision if union == "create_revision" else 0
    elif target == rpc_pb2.Compare.MOD:
        ours, theirs = kv.mod_revision, cmp.mod_revision if union == "mod_revision" else 0
    elif target == rpc_pb2.Compare.VERSION:
        ours, theirs = kv.version, cmp.version if union == "version" else 0
    elif target == rpc_pb2.Compare.LEASE:
        ours, theirs = kv.lease, cmp.lease if union == "lease" else 0
    else:
        return True  # unknown target: etcd's compareKV falls through to true
    return _compare_result(cmp.result, ours, theirs)


def _compare_result(result: int, ours: int | bytes, theirs: int | bytes) -> bool:
    if result == rpc_pb2.Compare.EQUAL:
        return ours == theirs
    if result == rpc_pb2.Compare.NOT_EQUAL:
        return ours != theirs
    if result == rpc_pb2.Compare.GREATER:
        return ours > theirs  # type: ignore[operator]
    if result == rpc_pb2.Compare.LESS:
        return ours < theirs  # type: ignore[operator]
    return True


#: Rows of the key database hashed per `KVHasher.step` by `KVStore.hash_kv`.
HASH_STEP_ROWS = 10_000


class KVHasher:
    """HashKV in steps, so that a server can go on serving between them.

    Hashes "key" then each (revision key, value) with main <= rev, leaving out revisions <= the
    compact revision unless kept by it, so the result does not depend on how far physical
    compaction has gone. The rows come from a read transaction of its own, fixed when the hasher
    is made; the in-memory index answers "kept by the compaction" the same before and after
    the index is compacted, and writes after `rev` are past the end. A backend swap
    (defragmentation, restore) between steps makes the hasher `stale`: start again.
    """

    def __init__(self, store: KVStore, rev: int) -> None:
        cur = store.current_revision
        compact_rev = store.compact_revision
        if rev > cur:
            raise errors.FutureRevisionError()
        if rev > 0 and rev <= compact_rev:  # etcd 3.5: the compact revision itself too
            raise errors.CompactedError()
        self._store = store
        self.revision = cur if rev <= 0 else rev
        self.compact_revision = compact_rev
        self.current_revision = cur
        self._end = revision.main_bytes(self.revision + 1)
        backend = store.backend
        self._generation = backend.generation
        self._txn: Any = backend.snapshot_reader()
        self._cursor: Any = self._txn.cursor(db=backend.key_db)
        self._crc = zlib.crc32(b"key")

    @property
    def stale(self) -> bool:
        return self._store.backend.generation != self._generation

    def step(self, max_rows: int) -> bool:
        """Hash up to `max_rows` rows; True while rows remain."""
        assert max_rows > 0
        cursor = self._cursor
        if cursor is None:
            return False
        assert not self.stale, "the backend was swapped under a hasher"
        end, rev, compact_rev = self._end, self.revision, self.compact_revision
        entries = self._store.index.entries
        crc = self._crc
        more = True
        for rows, (k, v) in enumerate(cursor.iternext(), 1):
            if k >= end:
                more = False
                break
            packed = revision.from_bytes(k)
            if packed >> 33 > compact_rev or live_at(entries.get(key_of(v)), rev) == packed:
                crc = zlib.crc32(v, zlib.crc32(k, crc))
            if rows >= max_rows:
                break
        else:
            more = False
        self._crc = crc
        if more:
            more = bool(cursor.next())  # iternext() would yield the current row again
        if not more:
            self.close()
        return more

    def result(self) -> tuple[int, int, int]:
        assert self._cursor is None, "hash not finished"
        return self._crc, self.compact_revision, self.current_revision

    def close(self) -> None:
        """Release the read transaction (a swapped backend already ended it)."""
        if self._cursor is not None:
            if not self.stale:
                self._cursor.close()
                self._txn.abort()
            self._cursor = None
            self._txn = None
