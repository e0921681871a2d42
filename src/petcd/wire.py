"""Protobuf wire-format pieces for the few hot paths that splice encoded messages by hand
(the peer frame, point reads, watch responses). Everything else uses the generated classes.

A base module like `petcd.errors`: any layer may import it; it imports nothing of petcd.
"""

from __future__ import annotations

_SMALL_VARINTS = [bytes([n]) for n in range(128)]


def varint(value: int) -> bytes:
    """The protobuf varint encoding of a non-negative integer."""
    assert value >= 0
    if value < 128:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    assert len(out) <= 10
    return bytes(out)


def length_delimited(tag: bytes, payload: bytes) -> bytes:
    """One length-delimited field: its tag byte(s), the payload's length, the payload."""
    return tag + varint(len(payload)) + payload
