"""Request builders shared by the sync and asyncio clients, and the public Txn helpers.

Pure functions from Python arguments to etcd protobuf requests: no I/O, no client state. The
clients call them so that `Client.get(...)` and `op_get(...)` (a Txn operation) build exactly
the same RangeRequest.

Key ranges follow etcd's rules (etcd-api-facts §4.3):
- `range_end` empty: the single key `key`;
- `prefix=True`: every key starting with `key` (`range_end` = `key` with its last byte below
  0xff incremented and the bytes after it dropped; all-0xff or empty key -> "\\x00");
- `from_key=True`: every key >= `key` (`range_end` = "\\x00");
- an empty key with `prefix` or `from_key` means the whole keyspace (key "\\x00").
Keys and values are `str` (encoded as UTF-8) or `bytes`.

Passing contradictory arguments (say `prefix=True` and a `range_end`) is a caller bug and raises
ValueError; everything the server decides (an empty key, too many ops) is left to the server.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from petcd.pb import auth_pb2, rpc_pb2

KeyLike = str | bytes
SortOrder = Literal["none", "ascend", "descend"]
SortTarget = Literal["key", "version", "create", "mod", "value"]
CompareOp = Literal["=", "==", "!=", ">", "<"]
PermissionType = Literal["read", "write", "readwrite"]
AlarmName = Literal["NONE", "NOSPACE", "CORRUPT"]

ALL_KEYS = b"\x00"

_SORT_ORDER = {"none": "NONE", "ascend": "ASCEND", "descend": "DESCEND"}
_SORT_TARGET = {
    "key": "KEY",
    "version": "VERSION",
    "create": "CREATE",
    "mod": "MOD",
    "value": "VALUE",
}
_COMPARE_RESULT = {"=": "EQUAL", "==": "EQUAL", "!=": "NOT_EQUAL", ">": "GREATER", "<": "LESS"}
_PERMISSION = {"read": "READ", "write": "WRITE", "readwrite": "READWRITE"}


def to_bytes(data: KeyLike) -> bytes:
    """Keys and values as bytes: str is UTF-8 encoded, bytes pass through."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    raise TypeError(f"expected str or bytes, got {type(data).__name__}")


def prefix_range_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with `prefix` (etcd's GetPrefixRangeEnd)."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            result = bytes(end[: i + 1])
            assert result > prefix
            return result
    # every byte is 0xff (or the prefix is empty): no upper bound, so "all keys >= prefix"
    return ALL_KEYS


def key_range(
    key: KeyLike, range_end: KeyLike | None = None, *, prefix: bool = False, from_key: bool = False
) -> tuple[bytes, bytes]:
    """(key, range_end) as etcd wants them for a single key, an explicit range, a prefix or from-key."""
    chosen = (range_end is not None) + prefix + from_key
    if chosen > 1:
        raise ValueError("give at most one of range_end, prefix and from_key")
    raw = to_bytes(key)
    if prefix:
        return (raw, prefix_range_end(raw)) if raw else (ALL_KEYS, ALL_KEYS)
    if from_key:
        return (raw or ALL_KEYS, ALL_KEYS)
    end = to_bytes(range_end) if range_end is not None else b""
    return raw, end


def range_request(
    key: KeyLike,
    range_end: KeyLike | None = None,
    *,
    prefix: bool = False,
    from_key: bool = False,
    limit: int = 0,
    revision: int = 0,
    sort_order: SortOrder = "none",
    sort_target: SortTarget = "key",
    serializable: bool = False,
    keys_only: bool = False,
    count_only: bool = False,
    min_mod_revision: int = 0,
    max_mod_revision: int = 0,
    min_create_revision: int = 0,
    max_create_revision: int = 0,
) -> rpc_pb2.RangeRequest:
    raw_key, end = key_range(key, range_end, prefix=prefix, from_key=from_key)
    if sort_order not in _SORT_ORDER or sort_target not in _SORT_TARGET:
        raise ValueError(f"bad sort order/target {sort_order!r}/{sort_target!r}")
    request = rpc_pb2.RangeRequest(
        key=raw_key,
        range_end=end,
        limit=limit,
        revision=revision,
        sort_order=_SORT_ORDER[sort_order],
        sort_target=_SORT_TARGET[sort_target],
        serializable=serializable,
        keys_only=keys_only,
        count_only=count_only,
        min_mod_revision=min_mod_revision,
        max_mod_revision=max_mod_revision,
        min_create_revision=min_create_revision,
        max_create_revision=max_create_revision,
    )
    assert request.key == raw_key
    return request


def put_request(
    key: KeyLike,
    value: KeyLike = b"",
    *,
    lease: int = 0,
    prev_kv: bool = False,
    ignore_value: bool = False,
    ignore_lease: bool = False,
) -> rpc_pb2.PutRequest:
    raw_key = to_bytes(key)
    request = rpc_pb2.PutRequest(
        key=raw_key,
        value=to_bytes(value),
        lease=lease,
        prev_kv=prev_kv,
        ignore_value=ignore_value,
        ignore_lease=ignore_lease,
    )
    assert request.key == raw_key
    return request


def delete_request(
    key: KeyLike,
    range_end: KeyLike | None = None,
    *,
    prefix: bool = False,
    from_key: bool = False,
    prev_kv: bool = False,
) -> rpc_pb2.DeleteRangeRequest:
    raw_key, end = key_range(key, range_end, prefix=prefix, from_key=from_key)
    return rpc_pb2.DeleteRangeRequest(key=raw_key, range_end=end, prev_kv=prev_kv)


def txn_request(
    compare: Iterable[rpc_pb2.Compare],
    success: Iterable[rpc_pb2.RequestOp] = (),
    failure: Iterable[rpc_pb2.RequestOp] = (),
) -> rpc_pb2.TxnRequest:
    compares, then, otherwise = list(compare), list(success), list(failure)
    for cmp in compares:
        if not isinstance(cmp, rpc_pb2.Compare):
            raise TypeError(f"compare must hold Compare messages, got {type(cmp).__name__}")
    for op in then + otherwise:
        if not isinstance(op, rpc_pb2.RequestOp):
            raise TypeError(
                f"success/failure must hold RequestOp messages, got {type(op).__name__}"
            )
    return rpc_pb2.TxnRequest(compare=compares, success=then, failure=otherwise)


# --- Txn helpers: compares ----------------------------------------------------------------------


def _compare(
    key: KeyLike,
    op: CompareOp,
    target: str,
    range_end: KeyLike | None,
    prefix: bool,
) -> rpc_pb2.Compare:
    if op not in _COMPARE_RESULT:
        raise ValueError(f"compare operator must be one of {sorted(_COMPARE_RESULT)}, got {op!r}")
    raw_key, end = key_range(key, range_end, prefix=prefix)
    return rpc_pb2.Compare(key=raw_key, range_end=end, result=_COMPARE_RESULT[op], target=target)


def compare_value(
    key: KeyLike,
    op: CompareOp,
    value: KeyLike,
    *,
    range_end: KeyLike | None = None,
    prefix: bool = False,
) -> rpc_pb2.Compare:
    """Compare the value of `key` (a missing key makes a VALUE compare false)."""
    cmp = _compare(key, op, "VALUE", range_end, prefix)
    cmp.value = to_bytes(value)
    return cmp


def compare_version(
    key: KeyLike,
    op: CompareOp,
    version: int,
    *,
    range_end: KeyLike | None = None,
    prefix: bool = False,
) -> rpc_pb2.Compare:
    """Compare the version of `key` (0 when it does not exist)."""
    cmp = _compare(key, op, "VERSION", range_end, prefix)
    cmp.version = version
    return cmp


def compare_create(
    key: KeyLike,
    op: CompareOp,
    revision: int,
    *,
    range_end: KeyLike | None = None,
    prefix: bool = False,
) -> rpc_pb2.Compare:
    """Compare the create revision of `key` (0 when it does not exist)."""
    cmp = _compare(key, op, "CREATE", range_end, prefix)
    cmp.create_revision = revision
    return cmp


def compare_mod(
    key: KeyLike,
    op: CompareOp,
    revision: int,
    *,
    range_end: KeyLike | None = None,
    prefix: bool = False,
) -> rpc_pb2.Compare:
    """Compare the mod revision of `key` (0 when it does not exist)."""
    cmp = _compare(key, op, "MOD", range_end, prefix)
    cmp.mod_revision = revision
    return cmp


def compare_lease(
    key: KeyLike,
    op: CompareOp,
    lease: int,
    *,
    range_end: KeyLike | None = None,
    prefix: bool = False,
) -> rpc_pb2.Compare:
    """Compare the lease attached to `key` (0 when none or when it does not exist)."""
    cmp = _compare(key, op, "LEASE", range_end, prefix)
    cmp.lease = lease
    return cmp


# --- Txn helpers: operations ---------------------------------------------------------------------


def op_get(
    key: KeyLike,
    range_end: KeyLike | None = None,
    *,
    prefix: bool = False,
    from_key: bool = False,
    limit: int = 0,
    revision: int = 0,
    sort_order: SortOrder = "none",
    sort_target: SortTarget = "key",
    serializable: bool = False,
    keys_only: bool = False,
    count_only: bool = False,
) -> rpc_pb2.RequestOp:
    request = range_request(
        key,
        range_end,
        prefix=prefix,
        from_key=from_key,
        limit=limit,
        revision=revision,
        sort_order=sort_order,
        sort_target=sort_target,
        serializable=serializable,
        keys_only=keys_only,
        count_only=count_only,
    )
    return rpc_pb2.RequestOp(request_range=request)


def op_put(
    key: KeyLike,
    value: KeyLike = b"",
    *,
    lease: int = 0,
    prev_kv: bool = False,
    ignore_value: bool = False,
    ignore_lease: bool = False,
) -> rpc_pb2.RequestOp:
    request = put_request(
        key,
        value,
        lease=lease,
        prev_kv=prev_kv,
        ignore_value=ignore_value,
        ignore_lease=ignore_lease,
    )
    return rpc_pb2.RequestOp(request_put=request)


def op_delete(
    key: KeyLike,
    range_end: KeyLike | None = None,
    *,
    prefix: bool = False,
    from_key: bool = False,
    prev_kv: bool = False,
) -> rpc_pb2.RequestOp:
    request = delete_request(key, range_end, prefix=prefix, from_key=from_key, prev_kv=prev_kv)
    return rpc_pb2.RequestOp(request_delete_range=request)


def op_txn(
    compare: Iterable[rpc_pb2.Compare],
    success: Iterable[rpc_pb2.RequestOp] = (),
    failure: Iterable[rpc_pb2.RequestOp] = (),
) -> rpc_pb2.RequestOp:
    """A nested Txn as an operation of an outer Txn."""
    return rpc_pb2.RequestOp(request_txn=txn_request(compare, success, failure))


# --- watch, lease, auth ---------------------------------------------------------------------------


def watch_create_request(
    key: KeyLike,
    range_end: KeyLike | None = None,
    *,
    prefix: bool = False,
    from_key: bool = False,
    start_revision: int = 0,
    progress_notify: bool = False,
    no_put: bool = False,
    no_delete: bool = False,
    prev_kv: bool = False,
    fragment: bool = False,
    watch_id: int = 0,
) -> rpc_pb2.WatchCreateRequest:
    raw_key, end = key_range(key, range_end, prefix=prefix, from_key=from_key)
    filters: list[str] = []
    if no_put:
        filters.append("NOPUT")
    if no_delete:
        filters.append("NODELETE")
    return rpc_pb2.WatchCreateRequest(
        key=raw_key,
        range_end=end,
        start_revision=start_revision,
        progress_notify=progress_notify,
        filters=filters,
        prev_kv=prev_kv,
        fragment=fragment,
        watch_id=watch_id,
    )


def permission(
    perm_type: PermissionType,
    key: KeyLike,
    range_end: KeyLike | None = None,
    *,
    prefix: bool = False,
    from_key: bool = False,
) -> auth_pb2.Permission:
    """An auth Permission on a key, a range, a prefix or every key from `key` on."""
    if perm_type not in _PERMISSION:
        raise ValueError(f"permission type must be one of {sorted(_PERMISSION)}, got {perm_type!r}")
    raw_key, end = key_range(key, range_end, prefix=prefix, from_key=from_key)
    return auth_pb2.Permission(permType=_PERMISSION[perm_type], key=raw_key, range_end=end)
