"""A simple reference model of etcd's KV semantics, for checking petcd.mvcc against.

Whole-state snapshots per revision, plain dicts and sorted lists: slow and obviously right.
Responses are built as the same protobuf messages etcd sends, so the test compares bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from petcd import errors
from petcd.pb import kv_pb2, rpc_pb2

KV = tuple[bytes, int, int, int, bytes, int]  # key, create, mod, version, value, lease
State = dict[bytes, KV]


def to_pb(kv: KV) -> kv_pb2.KeyValue:
    key, create, mod, version, value, lease = kv
    return kv_pb2.KeyValue(
        key=key, create_revision=create, mod_revision=mod, version=version, value=value, lease=lease
    )


def in_range(k: bytes, key: bytes, end: bytes) -> bool:
    if not end:
        return k == key
    if end == b"\x00":
        return k >= key
    return key <= k < end


@dataclass
class ModelEvent:
    rev: int
    is_put: bool
    kv: KV  # for a delete: the deleted key's last KV (prev)
    prev: KV | None


@dataclass
class Model:
    leases: set[int] = field(default_factory=lambda: {1})
    states: dict[int, State] = field(default_factory=lambda: {1: {}})
    cur: int = 1
    compact: int = -1
    events: list[ModelEvent] = field(default_factory=list)
    compact_revs: list[int] = field(default_factory=list)

    # --- reads --------------------------------------------------------------------------------

    def check_rev(self, want: int, cur: int, compact: int | None = None) -> int:
        if want > cur:
            raise errors.FutureRevisionError()
        rev = cur if want <= 0 else want
        if rev < (self.compact if compact is None else compact):
            raise errors.CompactedError()
        return rev

    def range(
        self,
        req: rpc_pb2.RangeRequest,
        cur: int,
        work: State | None = None,
        compact: int | None = None,
    ) -> rpc_pb2.RangeResponse:
        rev = self.check_rev(req.revision, cur, compact)
        state = work if work is not None and rev == cur else self.states[rev]
        keys = sorted(k for k in state if in_range(k, req.key, req.range_end))
        resp = rpc_pb2.RangeResponse(count=len(keys))
        if req.count_only:
            return resp
        kvs = [state[k] for k in keys]
        filtered = bool(
            req.min_mod_revision
            or req.max_mod_revision
            or req.min_create_revision
            or req.max_create_revision
        )
        if req.sort_order == 0 and not filtered and req.limit > 0:
            kvs = kvs[: req.limit + 1]
        if req.max_mod_revision:
            kvs = [kv for kv in kvs if kv[2] <= req.max_mod_revision]
        if req.min_mod_revision:
            kvs = [kv for kv in kvs if kv[2] >= req.min_mod_revision]
        if req.max_create_revision:
            kvs = [kv for kv in kvs if kv[1] <= req.max_create_revision]
        if req.min_create_revision:
            kvs = [kv for kv in kvs if kv[1] >= req.min_create_revision]
        column = {0: 0, 1: 3, 2: 1, 3: 2, 4: 4}[req.sort_target]
        order = req.sort_order
        if order == 0 and req.sort_target != 0:
            order = 1
        if order != 0:
            kvs = sorted(kvs, key=lambda kv: kv[column], reverse=order == 2)
        if 0 < req.limit < len(kvs):
            kvs = kvs[: req.limit]
            resp.more = True
        for kv in kvs:
            out = resp.kvs.add()
            out.CopyFrom(to_pb(kv))
            if req.keys_only:
                out.value = b""
        return resp

    # --- writes: every request is one MVCC transaction ----------------------------------------

    def _commit_state(self, work: State, changed: bool) -> int:
        if changed:
            self.cur += 1
            self.states[self.cur] = work
        return self.cur

    def put(self, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        work = dict(self.states[self.cur])
        if req.lease and req.lease not in self.leases:
            raise errors.LeaseNotFoundError()
        if (req.ignore_value or req.ignore_lease) and req.key not in work:
            raise errors.KeyNotFoundError()
        resp = rpc_pb2.PutResponse()
        self._put(work, req, self.cur + 1, resp)
        resp.header.revision = self._commit_state(work, True)
        return resp

    def _put(
        self, work: State, req: rpc_pb2.PutRequest, rev: int, resp: rpc_pb2.PutResponse
    ) -> None:
        prev = work.get(req.key)
        value = prev[4] if req.ignore_value and prev else req.value
        lease = prev[5] if req.ignore_lease and prev else req.lease
        if prev is None:
            kv = (req.key, rev, rev, 1, value, lease)
        else:
            kv = (req.key, prev[1], rev, prev[3] + 1, value, lease)
        work[req.key] = kv
        self.events.append(ModelEvent(rev, True, kv, prev))
        if req.prev_kv and prev is not None:
            resp.prev_kv.CopyFrom(to_pb(prev))

    def delete_range(self, req: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        work = dict(self.states[self.cur])
        resp = rpc_pb2.DeleteRangeResponse()
        n = self._delete(work, req, self.cur + 1, resp)
        resp.header.revision = self._commit_state(work, n > 0)
        return resp

    def _delete(
        self,
        work: State,
        req: rpc_pb2.DeleteRangeRequest,
        rev: int,
        resp: rpc_pb2.DeleteRangeResponse,
    ) -> int:
        keys = sorted(k for k in work if in_range(k, req.key, req.range_end))
        for k in keys:
            prev = work.pop(k)
            self.events.append(ModelEvent(rev, False, prev, prev))
            if req.prev_kv:
                resp.prev_kvs.add().CopyFrom(to_pb(prev))
        resp.deleted = len(keys)
        return len(keys)

    def _compare(self, state: State, cmp: rpc_pb2.Compare) -> bool:
        kvs = [state[k] for k in sorted(state) if in_range(k, cmp.key, cmp.range_end)]
        if not kvs:
            if cmp.target == rpc_pb2.Compare.VALUE:
                return False
            kvs = [(b"", 0, 0, 0, b"", 0)]
        union = cmp.WhichOneof("target_union")
        for kv in kvs:
            if cmp.target == rpc_pb2.Compare.VALUE:
                ours, theirs = kv[4], (cmp.value if union == "value" else b"")
            else:
                column, name = {
                    0: (3, "version"),
                    1: (1, "create_revision"),
                    2: (2, "mod_revision"),
                    4: (5, "lease"),
                }[cmp.target]
                ours, theirs = kv[column], (getattr(cmp, name) if union == name else 0)
            ok = {
                0: ours == theirs,
                1: ours > theirs,
                2: ours < theirs,
                3: ours != theirs,
            }[cmp.result]
            if not ok:
                return False
        return True

    def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        view = self.states[self.cur]
        self._check_txn(req, view)
        work = dict(view)
        resp = rpc_pb2.TxnResponse()
        before = len(self.events)
        self._apply(req, view, work, resp, [False])
        changed = len(self.events) > before
        resp.header.revision = self._commit_state(work, changed)
        return resp

    def _branch(self, req: rpc_pb2.TxnRequest, view: State) -> tuple[bool, list[rpc_pb2.RequestOp]]:
        ok = all(self._compare(view, c) for c in req.compare)
        return ok, list(req.success if ok else req.failure)

    def _check_txn(self, req: rpc_pb2.TxnRequest, view: State) -> None:
        # etcd: all put checks along the path first, then all range checks
        def walk(r: rpc_pb2.TxnRequest, kind: str) -> None:
            _, ops = self._branch(r, view)
            for op in ops:
                which = op.WhichOneof("request")
                if which == "request_txn":
                    walk(op.request_txn, kind)
                elif kind == "put" and which == "request_put":
                    p = op.request_put
                    if (p.ignore_value or p.ignore_lease) and p.key not in view:
                        raise errors.KeyNotFoundError()
                    if p.lease and p.lease not in self.leases:
                        raise errors.LeaseNotFoundError()
                elif kind == "range" and which == "request_range" and op.request_range.revision:
                    want = op.request_range.revision
                    if want > self.cur:
                        raise errors.FutureRevisionError()
                    if want < self.compact:  # etcd compares the raw (maybe negative) revision
                        raise errors.CompactedError()

        walk(req, "put")
        walk(req, "range")

    def _apply(
        self,
        req: rpc_pb2.TxnRequest,
        view: State,
        work: State,
        resp: rpc_pb2.TxnResponse,
        changed: list[bool],
    ) -> None:
        ok, ops = self._branch(req, view)
        resp.succeeded = ok
        rev = self.cur + 1
        for op in ops:
            out = resp.responses.add()
            which = op.WhichOneof("request")
            if which == "request_range":
                view_rev = rev if changed[0] else self.cur
                r = self.range(op.request_range, view_rev, work if changed[0] else None)
                out.response_range.CopyFrom(r)
                out.response_range.header.revision = view_rev
            elif which == "request_put":
                self._put(work, op.request_put, rev, out.response_put)
                out.response_put.header.revision = rev
                changed[0] = True
            elif which == "request_delete_range":
                n = self._delete(work, op.request_delete_range, rev, out.response_delete_range)
                changed[0] = changed[0] or n > 0
                out.response_delete_range.header.revision = rev if changed[0] else self.cur
            else:
                out.response_txn.header.SetInParent()
                self._apply(op.request_txn, view, work, out.response_txn, changed)

    def do_compact(self, rev: int) -> None:
        if rev <= self.compact:
            raise errors.CompactedError()
        if rev > self.cur:
            raise errors.FutureRevisionError()
        self.compact = rev
        self.compact_revs.append(rev)
