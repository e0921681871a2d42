"""Cluster membership: members, learners, removed ids, the cluster id, kept in the backend.

Members change only through applied raft conf-change entries (and member attribute requests), so
every member holds the same list at the same applied index. The list lives in the backend's
`members` database (key: 8-byte big-endian member id, value: serverpb.MemberRecord) and removed ids
in `members_removed`, written in the apply batch's transaction, so a restart reads back exactly
what was applied.

Invariants:
- a removed id never comes back (MemberAdd of a removed id is refused);
- at most `MAX_LEARNERS` learners;
- no two members share a peer URL.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Protocol

from petcd import errors
from petcd.pb import internal_pb2, raft_pb2, rpc_pb2

MEMBERS_DB = "members"
REMOVED_DB = "members_removed"
CLUSTER_DB = "cluster"
CLUSTER_ID_KEY = b"clusterID"
CLUSTER_VERSION_KEY = b"clusterVersion"
MAX_LEARNERS = 1

_ID = struct.Struct(">Q")


class MembershipBatch(Protocol):
    def put_raw(self, db: str, key: bytes, value: bytes) -> None: ...

    def delete_raw(self, db: str, key: bytes) -> None: ...


class MembershipBackend(Protocol):
    def items_raw(self, db: str) -> list[tuple[bytes, bytes]]: ...

    def get_raw(self, db: str, key: bytes) -> bytes | None: ...


class RaftCluster:
    """The members of one cluster as this member has applied them."""

    def __init__(self, cluster_id: int = 0) -> None:
        self.cluster_id = cluster_id
        self.members: dict[int, internal_pb2.MemberRecord] = {}
        self.removed: set[int] = set()
        self.version = ""

    # --- persistence ---------------------------------------------------------------------------

    def load(self, backend: MembershipBackend) -> None:
        for key, value in backend.items_raw(MEMBERS_DB):
            record = internal_pb2.MemberRecord.FromString(value)
            assert _ID.unpack(key)[0] == record.id
            self.members[record.id] = record
        for key, _value in backend.items_raw(REMOVED_DB):
            self.removed.add(_ID.unpack(key)[0])
        raw = backend.get_raw(CLUSTER_DB, CLUSTER_ID_KEY)
        if raw is not None:
            self.cluster_id = _ID.unpack(raw)[0]
        version = backend.get_raw(CLUSTER_DB, CLUSTER_VERSION_KEY)
        if version is not None:
            self.version = version.decode()

    def save_cluster_id(self, batch: MembershipBatch) -> None:
        assert self.cluster_id != 0
        batch.put_raw(CLUSTER_DB, CLUSTER_ID_KEY, _ID.pack(self.cluster_id))

    def set_version(self, batch: MembershipBatch, version: str) -> None:
        self.version = version
        batch.put_raw(CLUSTER_DB, CLUSTER_VERSION_KEY, version.encode())

    # --- queries -------------------------------------------------------------------------------

    def member(self, member_id: int) -> internal_pb2.MemberRecord | None:
        return self.members.get(member_id)

    def voters(self) -> list[int]:
        return sorted(m.id for m in self.members.values() if not m.is_learner)

    def learners(self) -> list[int]:
        return sorted(m.id for m in self.members.values() if m.is_learner)

    def peer_urls(self, member_id: int) -> list[str]:
        record = self.members.get(member_id)
        return list(record.peer_urls) if record is not None else []

    def to_pb(self) -> list[rpc_pb2.Member]:
        return [
            rpc_pb2.Member(
                ID=m.id,
                name=m.name,
                peerURLs=list(m.peer_urls),
                clientURLs=list(m.client_urls),
                isLearner=m.is_learner,
            )
            for m in sorted(self.members.values(), key=lambda r: r.id)
        ]

    # --- checks before proposing (the API layer) -----------------------------------------------

    def check_add(self, record: internal_pb2.MemberRecord) -> None:
        if record.id in self.members or record.id in self.removed:
            raise errors.MemberExistError()
        self._check_urls_unused(record.id, record.peer_urls)
        if record.is_learner and len(self.learners()) >= MAX_LEARNERS:
            raise errors.TooManyLearnersError()

    def check_update(self, member_id: int, peer_urls: Iterable[str]) -> None:
        if member_id not in self.members:
            raise errors.MemberNotFoundError()
        self._check_urls_unused(member_id, peer_urls)

    def check_remove(self, member_id: int) -> None:
        if member_id not in self.members:
            raise errors.MemberNotFoundError()

    def check_promote(self, member_id: int) -> None:
        record = self.members.get(member_id)
        if record is None:
            raise errors.MemberNotFoundError()
        if not record.is_learner:
            raise errors.MemberNotLearnerError()

    def _check_urls_unused(self, member_id: int, peer_urls: Iterable[str]) -> None:
        wanted = set(peer_urls)
        for other in self.members.values():
            if other.id != member_id and wanted.intersection(other.peer_urls):
                raise errors.PeerURLExistError()

    # --- applied changes (apply loop) ----------------------------------------------------------

    def apply_conf_change(
        self, batch: MembershipBatch, cc: raft_pb2.ConfChange
    ) -> internal_pb2.MemberRecord | None:
        """Apply one conf change entry; returns the member it concerns (None if ignored)."""
        ctx = internal_pb2.ConfChangeContext.FromString(cc.context) if cc.context else None
        if cc.node_id in self.removed:
            return None  # etcd ignores changes about removed members
        kind = cc.type
        if kind in (raft_pb2.CONF_CHANGE_ADD_NODE, raft_pb2.CONF_CHANGE_ADD_LEARNER_NODE):
            assert ctx is not None, "add conf changes carry the member"
            if ctx.is_promote or (
                cc.node_id in self.members and kind == raft_pb2.CONF_CHANGE_ADD_NODE
            ):
                record = self.members.get(cc.node_id)
                if record is None:
                    return None
                record.is_learner = False
            else:
                record = internal_pb2.MemberRecord()
                record.CopyFrom(ctx.member)
                record.is_learner = kind == raft_pb2.CONF_CHANGE_ADD_LEARNER_NODE
                assert record.id == cc.node_id
            self.members[record.id] = record
            self._persist(batch, record)
            return record
        if kind == raft_pb2.CONF_CHANGE_REMOVE_NODE:
            record = self.members.pop(cc.node_id, None)
            self.removed.add(cc.node_id)
            batch.delete_raw(MEMBERS_DB, _ID.pack(cc.node_id))
            batch.put_raw(REMOVED_DB, _ID.pack(cc.node_id), b"removed")
            return record
        if kind == raft_pb2.CONF_CHANGE_UPDATE_NODE:
            assert ctx is not None, "update conf changes carry the member"
            record = self.members.get(cc.node_id)
            if record is None:
                return None
            del record.peer_urls[:]
            record.peer_urls.extend(ctx.member.peer_urls)
            self._persist(batch, record)
            return record
        return None

    def apply_attributes(
        self, batch: MembershipBatch, req: internal_pb2.MemberAttributesSetRequest
    ) -> None:
        record = self.members.get(req.member_id)
        if record is None:
            return
        record.name = req.name
        del record.client_urls[:]
        record.client_urls.extend(req.client_urls)
        self._persist(batch, record)

    def _persist(self, batch: MembershipBatch, record: internal_pb2.MemberRecord) -> None:
        batch.put_raw(MEMBERS_DB, _ID.pack(record.id), record.SerializeToString())
