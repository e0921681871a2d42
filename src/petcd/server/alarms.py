"""Alarms (NOSPACE, CORRUPT): raised and cleared through raft, kept in the `alarm` database.

An active alarm changes what the applier accepts (etcd-api-facts §3.4): NOSPACE refuses puts,
txns with puts and lease grants; CORRUPT refuses every write. Alarms survive restarts.
"""

from __future__ import annotations

import struct
from typing import Protocol

from petcd.pb import rpc_pb2

ALARM_DB = "alarm"
_KEY = struct.Struct(">QI")


class AlarmBatch(Protocol):
    def put_raw(self, db: str, key: bytes, value: bytes) -> None: ...

    def delete_raw(self, db: str, key: bytes) -> None: ...


class AlarmBackend(Protocol):
    def items_raw(self, db: str) -> list[tuple[bytes, bytes]]: ...


class AlarmStore:
    def __init__(self) -> None:
        self._active: set[tuple[int, int]] = set()

    def load(self, backend: AlarmBackend) -> None:
        for key, _value in backend.items_raw(ALARM_DB):
            member_id, alarm = _KEY.unpack(key)
            self._active.add((member_id, alarm))

    def activate(self, batch: AlarmBatch, member_id: int, alarm: int) -> rpc_pb2.AlarmMember:
        assert alarm != rpc_pb2.NONE
        self._active.add((member_id, alarm))
        batch.put_raw(ALARM_DB, _KEY.pack(member_id, alarm), b"")
        return rpc_pb2.AlarmMember(memberID=member_id, alarm=alarm)  # type: ignore[arg-type]

    def deactivate(
        self, batch: AlarmBatch, member_id: int, alarm: int
    ) -> rpc_pb2.AlarmMember | None:
        if (member_id, alarm) not in self._active:
            return None
        self._active.discard((member_id, alarm))
        batch.delete_raw(ALARM_DB, _KEY.pack(member_id, alarm))
        return rpc_pb2.AlarmMember(memberID=member_id, alarm=alarm)  # type: ignore[arg-type]

    def get(self, alarm: int = rpc_pb2.NONE) -> list[rpc_pb2.AlarmMember]:
        return [
            rpc_pb2.AlarmMember(memberID=member_id, alarm=kind)  # type: ignore[arg-type]
            for member_id, kind in sorted(self._active)
            if alarm == rpc_pb2.NONE or kind == alarm
        ]

    def has(self, alarm: int) -> bool:
        return any(kind == alarm for _member, kind in self._active)

    @property
    def any_active(self) -> bool:
        return bool(self._active)
