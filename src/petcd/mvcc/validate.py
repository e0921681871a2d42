"""Input checks of the KV API, as etcd's gRPC layer does them before proposing (v3rpc/key.go).

The API layer calls these once at the gate; the store then trusts what it applies. Rules:
- Range, Put, DeleteRange and every Compare need a non-empty key (EmptyKeyError).
- Put: ignore_value with a value -> ValueProvidedError; ignore_lease with a lease ->
  LeaseProvidedError.
- Txn: max(len(compare), len(success), len(failure)) <= budget, where the budget is
  max_txn_ops at the top and (parent budget - parent's max) for a nested txn
  (TooManyOpsError); an op with no request set -> KeyNotFoundError.
- Txn duplicate keys (per branch, through nested txns): two puts of one key, or a put inside
  a delete range of the same branch -> DuplicateKeyError. The then/else branches of one nested
  txn may put the same key (only one runs).
  One deliberate difference from etcd 3.5: a delete with range_end "\\0" (all keys from key)
  counts as the interval [key, +inf); etcd's interval tree misses that overlap and then
  panics at apply if a later ignore_value put finds its key deleted.
"""

from __future__ import annotations

from petcd import errors
from petcd.pb import rpc_pb2

DEFAULT_MAX_TXN_OPS = 128
_SORT_ORDERS = frozenset(rpc_pb2.RangeRequest.SortOrder.values())
_SORT_TARGETS = frozenset(rpc_pb2.RangeRequest.SortTarget.values())

# A delete's interval: (begin, end) with end None for a single key and b"" for no end.
_Interval = tuple[bytes, bytes | None]


def check_range(req: rpc_pb2.RangeRequest) -> None:
    if not req.key:
        raise errors.EmptyKeyError()
    if req.sort_order not in _SORT_ORDERS or req.sort_target not in _SORT_TARGETS:
        raise errors.RequestError("etcdserver: invalid sort option")


def check_put(req: rpc_pb2.PutRequest) -> None:
    if not req.key:
        raise errors.EmptyKeyError()
    if req.ignore_value and req.value:
        raise errors.ValueProvidedError()
    if req.ignore_lease and req.lease != 0:
        raise errors.LeaseProvidedError()


def check_delete_range(req: rpc_pb2.DeleteRangeRequest) -> None:
    if not req.key:
        raise errors.EmptyKeyError()


def check_txn(req: rpc_pb2.TxnRequest, max_txn_ops: int = DEFAULT_MAX_TXN_OPS) -> None:
    """All of etcd's Txn checks: sizes, keys, then duplicate keys in each branch."""
    assert max_txn_ops >= 0
    _check_txn_shape(req, max_txn_ops, depth=0)
    for ops in (req.success, req.failure):
        # One op alone cannot collide with itself (unless it is a txn, checked inside).
        if len(ops) > 1 or (ops and ops[0].WhichOneof("request") == "request_txn"):
            _check_intervals(list(ops), depth=0)


_MAX_DEPTH = 1000  # nesting is bounded by the op budget long before this


def _check_txn_shape(req: rpc_pb2.TxnRequest, budget: int, depth: int) -> None:
    assert depth < _MAX_DEPTH
    ops = max(len(req.compare), len(req.success), len(req.failure))
    if ops > budget:
        raise errors.TooManyOpsError()
    for cmp in req.compare:
        if not cmp.key:
            raise errors.EmptyKeyError()
    for op in (*req.success, *req.failure):
        _check_op(op, budget - ops, depth)


def _check_op(op: rpc_pb2.RequestOp, budget: int, depth: int) -> None:
    which = op.WhichOneof("request")
    if which == "request_range":
        check_range(op.request_range)
    elif which == "request_put":
        check_put(op.request_put)
    elif which == "request_delete_range":
        check_delete_range(op.request_delete_range)
    elif which == "request_txn":
        _check_txn_shape(op.request_txn, budget, depth + 1)
    else:
        raise errors.KeyNotFoundError()


def _delete_interval(req: rpc_pb2.DeleteRangeRequest) -> _Interval:
    if not req.range_end:
        return (req.key, None)
    if req.range_end == b"\x00":
        return (req.key, b"")
    return (req.key, req.range_end)


def _covers(dels: list[_Interval], key: bytes) -> bool:
    for begin, end in dels:
        if end is None:
            if key == begin:
                return True
        elif begin <= key and (end == b"" or key < end):
            return True
    return False


def _check_intervals(
    ops: list[rpc_pb2.RequestOp], depth: int
) -> tuple[set[bytes], list[_Interval]]:
    """etcd's checkIntervals: (puts, deletes) of a branch, raising on an overlap."""
    assert depth < _MAX_DEPTH
    dels = [
        _delete_interval(op.request_delete_range)
        for op in ops
        if op.WhichOneof("request") == "request_delete_range"
    ]
    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, dels_then = _check_intervals(list(op.request_txn.success), depth + 1)
        puts_else, dels_else = _check_intervals(list(op.request_txn.failure), depth + 1)
        for key in puts_then:
            if key in puts or _covers(dels, key):
                raise errors.DuplicateKeyError()
            puts.add(key)
        for key in puts_else:
            if key in puts and key not in puts_then:
                raise errors.DuplicateKeyError()
            if _covers(dels, key):
                raise errors.DuplicateKeyError()
            puts.add(key)
        dels.extend(dels_then)
        dels.extend(dels_else)
    for op in ops:
        if op.WhichOneof("request") != "request_put":
            continue
        key = op.request_put.key
        if key in puts or _covers(dels, key):
            raise errors.DuplicateKeyError()
        puts.add(key)
    return puts, dels
