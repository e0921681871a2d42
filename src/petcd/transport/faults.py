"""Fault injection for cluster tests (no root, no iptables): `transport.faults`.

Each transport holds one `Faults`; it governs only that member's traffic:

    faults.partition({2, 3})                 # drop everything to and from members 2 and 3
    faults.partition({2}, direction="out")   # one way: 2 still reaches us, we never reach 2
    faults.partition({2}, direction="in")    # one way: we reach 2, 2 never reaches us
    faults.heal({2}) / faults.heal()         # undo for some / all members
    faults.drop_rate = 0.1                   # drop 10 % of outgoing raft messages (seeded)
    faults.delay_s = 0.05                    # deliver outgoing raft messages 50 ms late (FIFO)
    faults.corrupt_snapshot_chunk = 3        # flip a byte in the 4th chunk of each snapshot sent

To cut a minority off from the rest, partition it both ways on the minority's members (or on
every majority member towards the minority); one side suffices because a member drops what it
sends and what it receives.

What a partition does, precisely:
- outgoing raft messages to a partitioned member are dropped silently (as a lossy network
  would: raft notices through missing responses), snapshots to it fail at once
  (`report_snapshot(peer, False)`), `call()` to it raises PeerUnreachableError at once, and
  `active_since()` / `reachable_peers()` treat it as not connected;
- everything arriving from a member partitioned inbound is discarded after decoding: raft
  messages, snapshot streams (refused) and RPC requests (the caller times out).
`drop_rate` and `delay_s` apply to raft messages only, never to snapshots or peer RPC.
Randomness comes from the transport's injected generator, so a seeded run drops the same
messages (given the same sends).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Literal

Direction = Literal["both", "in", "out"]


class Faults:
    __slots__ = (
        "_blocked_in",
        "_blocked_out",
        "_rng",
        "corrupt_snapshot_chunk",
        "delay_s",
        "drop_rate",
    )

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._blocked_in: set[int] = set()
        self._blocked_out: set[int] = set()
        self.drop_rate = 0.0
        self.delay_s = 0.0
        #: Index (0-based) of the snapshot chunk to damage after its CRC is computed.
        self.corrupt_snapshot_chunk: int | None = None

    def partition(self, members: Iterable[int], direction: Direction = "both") -> None:
        ids = set(members)
        assert 0 not in ids, "member id 0 is never a peer"
        assert direction in ("both", "in", "out"), direction
        if direction in ("both", "out"):
            self._blocked_out |= ids
        if direction in ("both", "in"):
            self._blocked_in |= ids

    def heal(self, members: Iterable[int] | None = None) -> None:
        if members is None:
            self._blocked_in.clear()
            self._blocked_out.clear()
            return
        ids = set(members)
        self._blocked_in -= ids
        self._blocked_out -= ids

    def reset(self) -> None:
        """Heal everything and switch every fault off."""
        self.heal()
        self.drop_rate = 0.0
        self.delay_s = 0.0
        self.corrupt_snapshot_chunk = None

    @property
    def partitioned_out(self) -> frozenset[int]:
        return frozenset(self._blocked_out)

    @property
    def partitioned_in(self) -> frozenset[int]:
        return frozenset(self._blocked_in)

    def blocks_out(self, member_id: int) -> bool:
        return member_id in self._blocked_out

    def blocks_in(self, member_id: int) -> bool:
        return member_id in self._blocked_in

    def active(self) -> bool:
        """Whether any per-message fault is on (the send path skips all checks otherwise)."""
        return bool(self._blocked_out) or self.drop_rate > 0.0 or self.delay_s > 0.0

    def drops_message(self, to: int) -> bool:
        """Whether the next outgoing raft message to `to` is lost (partition or drop rate)."""
        if to in self._blocked_out:
            return True
        rate = self.drop_rate
        assert 0.0 <= rate <= 1.0, rate
        return rate > 0.0 and self._rng.random() < rate
