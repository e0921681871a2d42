"""Revision keys keep etcd's bbolt layout, and packed ints sort like the keys."""

from __future__ import annotations

import random

from petcd.mvcc import revision


def test_layout_is_etcds() -> None:
    live = revision.to_bytes(revision.pack(0x0102, 7, False))
    assert live == bytes.fromhex("0000000000000102") + b"_" + bytes.fromhex("0000000000000007")
    tomb = revision.to_bytes(revision.pack(5, 0, True))
    assert len(tomb) == 18
    assert tomb.endswith(b"t")
    assert revision.main_bytes(9) == revision.to_bytes(revision.pack(9, 0, False))


def test_round_trip_and_order() -> None:
    rng = random.Random(7)
    packed = [
        revision.pack(rng.randrange(1, 1 << 40), rng.randrange(1 << 20), rng.random() < 0.3)
        for _ in range(2000)
    ]
    for p in packed:
        assert revision.from_bytes(revision.to_bytes(p)) == p
        assert revision.main_of(p) < revision.main_of(p) + 1
        assert (
            revision.first_packed(revision.main_of(p))
            <= p
            < revision.first_packed(revision.main_of(p) + 1)
        )
    by_int = sorted(packed)
    by_key = sorted(packed, key=revision.to_bytes)
    assert by_int == by_key  # the cursor order of the key database is revision order
