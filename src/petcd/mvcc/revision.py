"""Revisions: how they are packed in memory and laid out as keys of the `key` database.

A revision is (main, sub): main grows by one per write transaction, sub numbers the changes
inside it. The `key` database uses etcd's layout: 8-byte big-endian main, `_`, 8-byte
big-endian sub (17 bytes), plus a trailing `t` for a tombstone (18 bytes). Byte order of those
keys is revision order, so a cursor walks history in the order it happened.

In memory a revision is one int, `packed = main << 33 | sub << 1 | tombstone`, so that
comparison of packed ints is revision order and "the newest change at or before main R" is
`bisect_left(revs, first_packed(R + 1)) - 1`.

Invariants: 0 <= sub < 2**32; main >= 1 for every stored change.
"""

from __future__ import annotations

import struct

REV_STRUCT = struct.Struct(">QcQ")
REV_BYTES_LEN = 17
TOMBSTONE_MARK = b"t"
SUB_LIMIT = 1 << 32


def pack(main: int, sub: int, tombstone: bool) -> int:
    assert main >= 0
    assert 0 <= sub < SUB_LIMIT
    return (main << 33) | (sub << 1) | (1 if tombstone else 0)


def first_packed(main: int) -> int:
    """The smallest packed revision with this main: bisect bound for 'main < M'."""
    return main << 33


def main_of(packed: int) -> int:
    return packed >> 33


def to_bytes(packed: int) -> bytes:
    """The `key` database key of a packed revision (with `t` for a tombstone)."""
    raw = REV_STRUCT.pack(packed >> 33, b"_", (packed >> 1) & 0xFFFFFFFF)
    return raw + TOMBSTONE_MARK if packed & 1 else raw


def from_bytes(raw: bytes) -> int:
    """The packed revision of a `key` database key; asserts the layout."""
    assert len(raw) in (REV_BYTES_LEN, REV_BYTES_LEN + 1), raw
    main: int
    sub: int
    main, sep, sub = REV_STRUCT.unpack_from(raw)
    assert sep == b"_", raw
    tombstone = len(raw) == REV_BYTES_LEN + 1
    assert not tombstone or raw[-1:] == TOMBSTONE_MARK, raw
    return (main << 33) | (sub << 1) | (1 if tombstone else 0)


def main_bytes(main: int) -> bytes:
    """A 17-byte revision key (main, 0): meta values and cursor bounds use it, as etcd."""
    return REV_STRUCT.pack(main, b"_", 0)


def main_from_bytes(raw: bytes) -> int:
    assert len(raw) >= 8, raw
    return int.from_bytes(raw[:8], "big")
