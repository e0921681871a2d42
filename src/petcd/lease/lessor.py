"""The lessor: leases, their TTLs and expiry, and the keys attached to them.

Grant, revoke and checkpoint change state only through raft (the server calls them from the
apply loop, inside the batch's backend transaction, so every member holds the same leases).
Renew (keep-alive) and expiry are the leader's business and are not replicated: only the primary
lessor (the one on the leader) has real expiry times; a follower's leases never expire locally,
and a new leader extends every remaining TTL before it starts expiring leases (etcd's
`Promote(extend)`), so a leader change never revokes a lease its holder kept alive.

Invariants:
- every key attached to a lease is a live key of the store with that lease (mvcc calls
  `attach`/`detach` as it writes), and `leases[id].keys` is exactly that set;
- a lease exists in `leases` iff it is in the backend's `lease` database;
- only a primary lessor reports expired leases.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import struct
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from petcd import errors
from petcd.pb import lease_pb2, rpc_pb2

MAX_LEASE_TTL_S = 9_000_000_000
#: A follower's leases "expire" at this monotonic time: never.
FOREVER = math.inf
LEASE_DB = "lease"

_ID = struct.Struct(">q")


class LeaseBatch(Protocol):
    """The part of an mvcc write batch the lessor uses."""

    def put_raw(self, db: str, key: bytes, value: bytes) -> None: ...

    def delete_raw(self, db: str, key: bytes) -> None: ...

    def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse: ...


class LeaseBackend(Protocol):
    def items_raw(self, db: str) -> list[tuple[bytes, bytes]]: ...


@dataclasses.dataclass(slots=True)
class Lease:
    id: int
    ttl_s: int
    #: Checkpointed remaining TTL (0: none); a new leader extends from this instead of ttl_s.
    remaining_ttl_s: int
    #: Monotonic expiry time on the primary; FOREVER elsewhere.
    expiry: float
    keys: set[bytes]
    #: Reported expired; its revocation is proposed. Keep-alives no longer renew it.
    revoking: bool = False

    def remaining_s(self, now: float) -> float:
        return self.expiry - now


def min_lease_ttl_s(election_timeout_ms: int, heartbeat_interval_ms: int) -> int:
    """etcd's minimum TTL: ceil(((3 × election ticks) // 2) × heartbeat) seconds (2 s default)."""
    election_ticks = election_timeout_ms // heartbeat_interval_ms
    return math.ceil((3 * election_ticks // 2) * heartbeat_interval_ms / 1000)


class Lessor:
    """All leases of a member. Implements petcd.mvcc's LeaseHooks (exists, attach, detach)."""

    def __init__(
        self,
        min_ttl_s: int,
        clock: Callable[[], float] = time.monotonic,
        checkpoint_enabled: bool = False,
    ) -> None:
        assert min_ttl_s > 0
        self.min_ttl_s = min_ttl_s
        self.checkpoint_enabled = checkpoint_enabled
        self._clock = clock
        self.leases: dict[int, Lease] = {}
        self.primary = False
        # (expiry, id) min-heap of the primary's leases; entries may be stale (checked on pop).
        self._expiry_heap: list[tuple[float, int]] = []

    # --- start-up -----------------------------------------------------------------------------

    def load(self, backend: LeaseBackend) -> None:
        """Read every lease from the backend (before the store attaches keys)."""
        assert not self.leases, "load() runs once, on an empty lessor"
        for _key, value in backend.items_raw(LEASE_DB):
            record = lease_pb2.Lease.FromString(value)
            self.leases[record.ID] = Lease(
                record.ID, record.TTL, record.RemainingTTL, FOREVER, set()
            )

    # --- LeaseHooks (called by mvcc as keys are written) ---------------------------------------

    def lease_exists(self, lease_id: int) -> bool:
        return lease_id in self.leases

    def attach(self, lease_id: int, key: bytes) -> None:
        lease = self.leases.get(lease_id)
        assert lease is not None, f"attach to unknown lease {lease_id}"
        lease.keys.add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        lease = self.leases.get(lease_id)
        if lease is not None:  # the lease may be being revoked right now
            lease.keys.discard(key)

    # --- replicated operations (apply loop) ----------------------------------------------------

    def grant(self, batch: LeaseBatch, lease_id: int, ttl_s: int) -> Lease:
        if ttl_s > MAX_LEASE_TTL_S:
            raise errors.LeaseTTLTooLargeError()
        if lease_id in self.leases:
            raise errors.LeaseExistError()
        assert lease_id > 0, "lease ids are positive"
        ttl_s = max(ttl_s, self.min_ttl_s)
        expiry = self._clock() + ttl_s if self.primary else FOREVER
        lease = Lease(lease_id, ttl_s, 0, expiry, set())
        self.leases[lease_id] = lease
        self._persist(batch, lease)
        if self.primary:
            heapq.heappush(self._expiry_heap, (expiry, lease_id))
        return lease

    def revoke(self, batch: LeaseBatch, lease_id: int) -> None:
        """Delete the lease and all its keys, in ONE new revision."""
        lease = self.leases.get(lease_id)
        if lease is None:
            raise errors.LeaseNotFoundError()
        keys = sorted(lease.keys)
        if keys:
            batch.txn(
                rpc_pb2.TxnRequest(
                    success=[
                        rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key))
                        for key in keys
                    ]
                )
            )
        assert not lease.keys, "deleting its keys detaches them all"
        del self.leases[lease_id]
        batch.delete_raw(LEASE_DB, _ID.pack(lease_id))

    def checkpoint(self, batch: LeaseBatch, lease_id: int, remaining_ttl_s: int) -> None:
        lease = self.leases.get(lease_id)
        if lease is None:
            return
        lease.remaining_ttl_s = remaining_ttl_s
        self._persist(batch, lease)
        if self.primary:
            self._set_expiry(lease, self._clock() + remaining_ttl_s)

    # --- leader-only operations ----------------------------------------------------------------

    def renew(self, lease_id: int) -> int:
        """Keep-alive on the primary: restart the TTL. Returns the TTL, or 0 if unknown."""
        assert self.primary, "only the leader renews leases"
        lease = self.leases.get(lease_id)
        if lease is None:
            return 0
        now = self._clock()
        if lease.revoking or lease.expiry <= now:
            return 0  # expired: its revocation is on the way
        lease.remaining_ttl_s = 0
        self._set_expiry(lease, now + lease.ttl_s)
        return lease.ttl_s

    def promote(self, extend_s: float) -> None:
        """Become primary: every lease gets its remaining (or full) TTL plus `extend_s`."""
        now = self._clock()
        self.primary = True
        self._expiry_heap = []
        for lease in self.leases.values():
            ttl = lease.remaining_ttl_s if lease.remaining_ttl_s > 0 else lease.ttl_s
            lease.expiry = now + ttl + extend_s
            self._expiry_heap.append((lease.expiry, lease.id))
        heapq.heapify(self._expiry_heap)

    def demote(self) -> None:
        self.primary = False
        self._expiry_heap = []
        for lease in self.leases.values():
            lease.expiry = FOREVER
            lease.revoking = False

    def expired(self, limit: int, retry_s: float = 1.0) -> list[int]:
        """Up to `limit` leases whose time is up (primary only). Each reported once per call."""
        assert limit > 0
        if not self.primary:
            return []
        now = self._clock()
        found: list[int] = []
        heap = self._expiry_heap
        while heap and heap[0][0] <= now and len(found) < limit:
            expiry, lease_id = heapq.heappop(heap)
            lease = self.leases.get(lease_id)
            if lease is None or lease.expiry != expiry:
                continue  # revoked or renewed since this heap entry was pushed
            found.append(lease_id)
            # Report again after a while if the revocation does not get through.
            lease.revoking = True
            self._set_expiry(lease, now + retry_s)
        return found

    def checkpoints(self, limit: int) -> list[tuple[int, int]]:
        """(id, remaining TTL s) for leases worth checkpointing through raft (primary only)."""
        if not (self.primary and self.checkpoint_enabled):
            return []
        now = self._clock()
        result = []
        for lease in self.leases.values():
            remaining = math.ceil(lease.expiry - now)
            if 0 < remaining < lease.ttl_s and remaining != lease.remaining_ttl_s:
                result.append((lease.id, remaining))
                if len(result) >= limit:
                    break
        return result

    # --- queries -------------------------------------------------------------------------------

    def time_to_live(self, lease_id: int) -> tuple[int, int, list[bytes]] | None:
        """(remaining TTL s, granted TTL s, keys) or None if unknown."""
        lease = self.leases.get(lease_id)
        if lease is None:
            return None
        if lease.expiry == FOREVER:
            remaining = lease.remaining_ttl_s or lease.ttl_s
        else:
            # etcd truncates: a lease granted 100 s ago reports 99 right after the grant.
            remaining = max(0, int(lease.expiry - self._clock()))
        return remaining, lease.ttl_s, sorted(lease.keys)

    def ids(self) -> Iterable[int]:
        return self.leases.keys()

    # --- helpers -------------------------------------------------------------------------------

    def _persist(self, batch: LeaseBatch, lease: Lease) -> None:
        record = lease_pb2.Lease(ID=lease.id, TTL=lease.ttl_s, RemainingTTL=lease.remaining_ttl_s)
        batch.put_raw(LEASE_DB, _ID.pack(lease.id), record.SerializeToString())

    def _set_expiry(self, lease: Lease, expiry: float) -> None:
        lease.expiry = expiry
        heap = self._expiry_heap
        heapq.heappush(heap, (expiry, lease.id))
        if len(heap) > 4 * len(self.leases) + 64:
            # Renewals leave stale entries behind; rebuild so the heap stays O(leases).
            self._expiry_heap = [(le.expiry, le.id) for le in self.leases.values()]
            heapq.heapify(self._expiry_heap)
