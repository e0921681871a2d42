"""The applier: committed raft entries into the backend, one write transaction per batch.

Every member applies the same entries in the same order and must reach the same state, so
nothing here may depend on local time, local configuration that differs between members, or
which member proposed the entry; the results are only delivered to waiters on the proposer.

Invariants:
- an entry at or below the stored consistent index is never applied to the backend again
  (after a crash the WAL replays entries the backend may already hold);
- the consistent index is written in the same transaction as the data it covers;
- a request that fails changes nothing, and its error is its result (the batch goes on).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from petcd import errors
from petcd.lease import Lessor
from petcd.membership import RaftCluster
from petcd.mvcc import WatchableStore
from petcd.mvcc.kvstore import txn_has_put
from petcd.pb import internal_pb2, raft_pb2, rpc_pb2
from petcd.server.alarms import AlarmStore

#: What a waiter gets: a response message, or the error the request failed with.
Result = Any


@dataclasses.dataclass(slots=True)
class AppliedBatch:
    #: (request id, result) for every normal entry that carried a request id.
    results: list[tuple[int, Result]]
    #: Conf changes applied in this batch, in order: (entry index, change, member it concerns).
    conf_changes: list[tuple[int, raft_pb2.ConfChange, internal_pb2.MemberRecord | None]]
    last_index: int
    last_term: int


class Applier:
    """Applies committed entries for one member."""

    def __init__(
        self,
        store: WatchableStore,
        lessor: Lessor,
        cluster: RaftCluster,
        alarms: AlarmStore,
        apply_conf_change: Callable[[raft_pb2.ConfChange], raft_pb2.ConfState],
    ) -> None:
        self.store = store
        self.lessor = lessor
        self.cluster = cluster
        self.alarms = alarms
        self._apply_conf_change = apply_conf_change
        #: The latest conf state raft reported (for snapshots).
        self.conf_state = raft_pb2.ConfState()
        #: Set when a batch scheduled a compaction (the server starts the physical work).
        self.compacted = False
        self._dispatch: dict[str, Callable[[Any, Any], Result]] = {
            "put": self._put,
            "delete_range": self._delete_range,
            "txn": self._txn,
            "compaction": self._compaction,
            "lease_grant": self._lease_grant,
            "lease_revoke": self._lease_revoke,
            "lease_checkpoint": self._lease_checkpoint,
            "alarm": self._alarm,
            "range": self._range,
            "member_attributes": self._member_attributes,
            "cluster_version": self._cluster_version,
        }

    def apply(self, entries: list[raft_pb2.Entry]) -> AppliedBatch:
        assert entries, "apply is called with at least one entry"
        applied_before = self.store.consistent_index
        results: list[tuple[int, Result]] = []
        conf_changes: list[tuple[int, raft_pb2.ConfChange, internal_pb2.MemberRecord | None]] = []
        batch = self.store.write_batch()
        try:
            if self.cluster.cluster_id and applied_before == 0:
                self.cluster.save_cluster_id(batch)
            for entry in entries:
                fresh = entry.index > applied_before
                if entry.type == raft_pb2.ENTRY_NORMAL:
                    if fresh and entry.data:
                        results.append(self._apply_normal(batch, entry.data))
                elif entry.type == raft_pb2.ENTRY_CONF_CHANGE:
                    cc = raft_pb2.ConfChange.FromString(entry.data)
                    member = self.cluster.apply_conf_change(batch, cc) if fresh else None
                    self.conf_state = self._apply_conf_change(cc)
                    conf_changes.append((entry.index, cc, member))
                    if fresh and cc.id:
                        results.append((cc.id, self.cluster.to_pb()))
            last = entries[-1]
            if last.index > applied_before:
                batch.set_consistent_index(last.index, last.term)
            batch.commit()
        except BaseException:
            batch.abort()
            raise
        return AppliedBatch(results, conf_changes, last.index, last.term)

    def _apply_normal(self, batch: Any, data: bytes) -> tuple[int, Result]:
        request = internal_pb2.InternalRaftRequest.FromString(data)
        kind = request.WhichOneof("request")
        assert kind is not None, "every proposed entry carries one request"
        handler = self._dispatch.get(kind)
        try:
            if handler is None:
                raise errors.UnimplementedError(f"petcd: {kind} is not supported")
            result: Result = handler(batch, getattr(request, kind))
        except errors.PetcdError as exc:
            result = exc
        return request.header.id, result

    # --- KV --------------------------------------------------------------------------------

    def _check_writable(self, has_put: bool) -> None:
        if self.alarms.any_active:
            if self.alarms.has(rpc_pb2.CORRUPT):
                raise errors.CorruptError()
            if has_put and self.alarms.has(rpc_pb2.NOSPACE):
                raise errors.NoSpaceError()

    def _put(self, batch: Any, req: rpc_pb2.PutRequest) -> Result:
        self._check_writable(True)
        return batch.put(req)

    def _delete_range(self, batch: Any, req: rpc_pb2.DeleteRangeRequest) -> Result:
        self._check_writable(False)
        return batch.delete_range(req)

    def _txn(self, batch: Any, req: rpc_pb2.TxnRequest) -> Result:
        if self.alarms.any_active:
            self._check_writable(txn_has_put(req))
        return batch.txn(req)

    def _range(self, batch: Any, req: rpc_pb2.RangeRequest) -> Result:
        return self.store.range(req)

    def _compaction(self, batch: Any, req: rpc_pb2.CompactionRequest) -> Result:
        self._check_writable(False)
        compaction = batch.compact(req.revision)
        self.compacted = True
        response = rpc_pb2.CompactionResponse()
        response.header.revision = batch.revision
        return (response, compaction)

    # --- leases ----------------------------------------------------------------------------

    def _lease_grant(self, batch: Any, req: rpc_pb2.LeaseGrantRequest) -> Result:
        self._check_writable(True)
        lease = self.lessor.grant(batch, req.ID, req.TTL)
        response = rpc_pb2.LeaseGrantResponse(ID=lease.id, TTL=lease.ttl_s)
        response.header.revision = batch.revision
        return response

    def _lease_revoke(self, batch: Any, req: rpc_pb2.LeaseRevokeRequest) -> Result:
        self._check_writable(False)
        self.lessor.revoke(batch, req.ID)
        response = rpc_pb2.LeaseRevokeResponse()
        response.header.revision = batch.revision
        return response

    def _lease_checkpoint(self, batch: Any, req: rpc_pb2.LeaseCheckpointRequest) -> Result:
        for checkpoint in req.checkpoints:
            self.lessor.checkpoint(batch, checkpoint.ID, checkpoint.remaining_TTL)
        response = rpc_pb2.LeaseCheckpointResponse()
        response.header.revision = batch.revision
        return response

    # --- alarms and cluster ----------------------------------------------------------------

    def _alarm(self, batch: Any, req: rpc_pb2.AlarmRequest) -> Result:
        response = rpc_pb2.AlarmResponse()
        if req.action == rpc_pb2.AlarmRequest.GET:
            response.alarms.extend(self.alarms.get(req.alarm))
        elif req.action == rpc_pb2.AlarmRequest.ACTIVATE:
            if req.alarm != rpc_pb2.NONE:
                response.alarms.append(self.alarms.activate(batch, req.memberID, req.alarm))
        elif req.action == rpc_pb2.AlarmRequest.DEACTIVATE:
            removed = self.alarms.deactivate(batch, req.memberID, req.alarm)
            if removed is not None:
                response.alarms.append(removed)
        response.header.revision = batch.revision
        return response

    def _member_attributes(
        self, batch: Any, req: internal_pb2.MemberAttributesSetRequest
    ) -> Result:
        self.cluster.apply_attributes(batch, req)
        return None

    def _cluster_version(self, batch: Any, req: internal_pb2.ClusterVersionSetRequest) -> Result:
        self.cluster.set_version(batch, req.version)
        return None
