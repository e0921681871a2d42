from petcd.pb import raft_pb2 as _raft_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecordType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECORD_INVALID: _ClassVar[RecordType]
    RECORD_SEGMENT: _ClassVar[RecordType]
    RECORD_ENTRIES: _ClassVar[RecordType]
    RECORD_HARD_STATE: _ClassVar[RecordType]
    RECORD_SNAPSHOT: _ClassVar[RecordType]
RECORD_INVALID: RecordType
RECORD_SEGMENT: RecordType
RECORD_ENTRIES: RecordType
RECORD_HARD_STATE: RecordType
RECORD_SNAPSHOT: RecordType

class SegmentHeader(_message.Message):
    __slots__ = ("version", "seq", "first_index", "prev_crc", "metadata", "hard_state", "snapshot")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FIRST_INDEX_FIELD_NUMBER: _ClassVar[int]
    PREV_CRC_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    HARD_STATE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    version: int
    seq: int
    first_index: int
    prev_crc: int
    metadata: bytes
    hard_state: _raft_pb2.HardState
    snapshot: SnapshotMarker
    def __init__(self, version: _Optional[int] = ..., seq: _Optional[int] = ..., first_index: _Optional[int] = ..., prev_crc: _Optional[int] = ..., metadata: _Optional[bytes] = ..., hard_state: _Optional[_Union[_raft_pb2.HardState, _Mapping]] = ..., snapshot: _Optional[_Union[SnapshotMarker, _Mapping]] = ...) -> None: ...

class Entries(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_raft_pb2.Entry]
    def __init__(self, entries: _Optional[_Iterable[_Union[_raft_pb2.Entry, _Mapping]]] = ...) -> None: ...

class SnapshotMarker(_message.Message):
    __slots__ = ("index", "term", "conf_state")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    CONF_STATE_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    conf_state: _raft_pb2.ConfState
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., conf_state: _Optional[_Union[_raft_pb2.ConfState, _Mapping]] = ...) -> None: ...

class SnapshotFile(_message.Message):
    __slots__ = ("crc", "data")
    CRC_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    crc: int
    data: bytes
    def __init__(self, crc: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...
