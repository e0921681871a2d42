"""Member, cluster and request ids, computed exactly as etcd computes them (etcd-api-facts §4.5).

Worked example (etcd's defaults): peer URL `http://localhost:2380`, token `etcd-cluster`:
sha1(b"http://localhost:2380" + b"etcd-cluster")[:8] as big-endian = 0x8e9e05c52164694d, and the
cluster id over that single member id (8 bytes big-endian) = 0xcdf818194e3a8c32.
"""

from __future__ import annotations

import hashlib
import struct
import time

_U64 = struct.Struct(">Q")


def member_id(peer_urls: list[str], token: str, now_s: int | None = None) -> int:
    """A member's id: SHA-1 over its sorted peer URLs + the cluster token (+ time at runtime)."""
    assert peer_urls, "a member needs at least one peer URL"
    text = "".join(sorted(peer_urls)) + token
    if now_s is not None:
        text += str(now_s)
    return int(_U64.unpack(hashlib.sha1(text.encode()).digest()[:8])[0])


def cluster_id(member_ids: list[int]) -> int:
    """The cluster id: SHA-1 over the sorted initial member ids, each 8 bytes big-endian."""
    assert member_ids, "a cluster has at least one member"
    data = b"".join(_U64.pack(mid) for mid in sorted(member_ids))
    return int(_U64.unpack(hashlib.sha1(data).digest()[:8])[0])


class IdGenerator:
    """etcd's 64-bit id generator: 16 bits of member id, 40 bits of start time (ms), counter.

    Each `next()` adds one to the low 48 bits, so ids are unique per member across restarts
    (the time prefix moves forward) and never collide between members (the member prefix).
    """

    __slots__ = ("_prefix", "_suffix")

    _SUFFIX_MASK = (1 << 48) - 1

    def __init__(self, member: int, now_ms: int | None = None) -> None:
        start_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self._prefix = (member & 0xFFFF) << 48
        self._suffix = (start_ms & ((1 << 40) - 1)) << 8

    def next(self) -> int:
        self._suffix = (self._suffix + 1) & self._SUFFIX_MASK
        value = self._prefix | self._suffix
        assert value != 0
        return value
