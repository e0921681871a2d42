"""The API layer's input checks (etcd's v3rpc/key.go rules)."""

from __future__ import annotations

import pytest

from petcd import errors
from petcd.mvcc import validate
from petcd.pb import rpc_pb2 as rpc


def put(key: bytes) -> rpc.RequestOp:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key))


def delete(key: bytes, end: bytes = b"") -> rpc.RequestOp:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key, range_end=end))


def nested(
    success: list[rpc.RequestOp], failure: list[rpc.RequestOp] | None = None
) -> rpc.RequestOp:
    return rpc.RequestOp(request_txn=rpc.TxnRequest(success=success, failure=failure or []))


def test_single_requests() -> None:
    with pytest.raises(errors.EmptyKeyError):
        validate.check_range(rpc.RangeRequest())
    with pytest.raises(errors.EmptyKeyError):
        validate.check_put(rpc.PutRequest(value=b"x"))
    with pytest.raises(errors.EmptyKeyError):
        validate.check_delete_range(rpc.DeleteRangeRequest(range_end=b"z"))
    with pytest.raises(errors.ValueProvidedError):
        validate.check_put(rpc.PutRequest(key=b"k", value=b"x", ignore_value=True))
    with pytest.raises(errors.LeaseProvidedError):
        validate.check_put(rpc.PutRequest(key=b"k", lease=5, ignore_lease=True))
    with pytest.raises(errors.RequestError, match="invalid sort option"):
        validate.check_range(rpc.RangeRequest(key=b"k", sort_order=9))
    validate.check_put(rpc.PutRequest(key=b"k", ignore_value=True, ignore_lease=True))


@pytest.mark.parametrize(
    ("success", "error"),
    [
        ([put(b"a"), put(b"a")], errors.DuplicateKeyError),
        ([put(b"b"), delete(b"a", b"c")], errors.DuplicateKeyError),
        ([delete(b"b"), put(b"b")], errors.DuplicateKeyError),
        ([delete(b"a", b"\x00"), put(b"z")], errors.DuplicateKeyError),  # stricter than etcd
        ([put(b"a"), nested([put(b"a")])], errors.DuplicateKeyError),
        ([delete(b"a", b"c"), nested([], [put(b"b")])], errors.DuplicateKeyError),
        ([nested([put(b"a")]), nested([put(b"a")])], errors.DuplicateKeyError),
        ([nested([put(b"a")], [put(b"a")])], None),  # then/else are exclusive
        ([delete(b"a", b"c"), delete(b"b")], None),
        ([put(b"c"), delete(b"a", b"c")], None),  # range end is exclusive
        ([rpc.RequestOp()], errors.KeyNotFoundError),
        ([put(b"")], errors.EmptyKeyError),
    ],
)
def test_txn_duplicate_keys(success: list[rpc.RequestOp], error: type[Exception] | None) -> None:
    req = rpc.TxnRequest(success=success)
    if error is None:
        validate.check_txn(req)
    else:
        with pytest.raises(error):
            validate.check_txn(req)


def test_txn_op_budget_shrinks_with_nesting() -> None:
    validate.check_txn(rpc.TxnRequest(success=[put(b"%d" % i) for i in range(128)]))
    with pytest.raises(errors.TooManyOpsError):
        validate.check_txn(rpc.TxnRequest(success=[put(b"%d" % i) for i in range(129)]))
    with pytest.raises(errors.TooManyOpsError):
        validate.check_txn(rpc.TxnRequest(compare=[rpc.Compare(key=b"k")] * 5), max_txn_ops=4)
    # a nested txn gets (budget - parent's max): here 4 - 2 = 2 ops
    ok = rpc.TxnRequest(success=[nested([put(b"x"), put(b"y")]), put(b"z")])
    validate.check_txn(ok, max_txn_ops=4)
    too_many = rpc.TxnRequest(success=[nested([put(b"x"), put(b"y"), put(b"w")]), put(b"z")])
    with pytest.raises(errors.TooManyOpsError):
        validate.check_txn(too_many, max_txn_ops=4)
    with pytest.raises(errors.EmptyKeyError):
        validate.check_txn(rpc.TxnRequest(compare=[rpc.Compare(key=b"")]))
