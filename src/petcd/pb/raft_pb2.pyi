from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntryType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_NORMAL: _ClassVar[EntryType]
    ENTRY_CONF_CHANGE: _ClassVar[EntryType]
    ENTRY_CONF_CHANGE_V2: _ClassVar[EntryType]

class MessageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MSG_HUP: _ClassVar[MessageType]
    MSG_BEAT: _ClassVar[MessageType]
    MSG_PROP: _ClassVar[MessageType]
    MSG_APP: _ClassVar[MessageType]
    MSG_APP_RESP: _ClassVar[MessageType]
    MSG_VOTE: _ClassVar[MessageType]
    MSG_VOTE_RESP: _ClassVar[MessageType]
    MSG_SNAP: _ClassVar[MessageType]
    MSG_HEARTBEAT: _ClassVar[MessageType]
    MSG_HEARTBEAT_RESP: _ClassVar[MessageType]
    MSG_UNREACHABLE: _ClassVar[MessageType]
    MSG_SNAP_STATUS: _ClassVar[MessageType]
    MSG_CHECK_QUORUM: _ClassVar[MessageType]
    MSG_TRANSFER_LEADER: _ClassVar[MessageType]
    MSG_TIMEOUT_NOW: _ClassVar[MessageType]
    MSG_READ_INDEX: _ClassVar[MessageType]
    MSG_READ_INDEX_RESP: _ClassVar[MessageType]
    MSG_PRE_VOTE: _ClassVar[MessageType]
    MSG_PRE_VOTE_RESP: _ClassVar[MessageType]

class ConfChangeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONF_CHANGE_ADD_NODE: _ClassVar[ConfChangeType]
    CONF_CHANGE_REMOVE_NODE: _ClassVar[ConfChangeType]
    CONF_CHANGE_UPDATE_NODE: _ClassVar[ConfChangeType]
    CONF_CHANGE_ADD_LEARNER_NODE: _ClassVar[ConfChangeType]

class ConfChangeTransition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONF_CHANGE_TRANSITION_AUTO: _ClassVar[ConfChangeTransition]
    CONF_CHANGE_TRANSITION_JOINT_IMPLICIT: _ClassVar[ConfChangeTransition]
    CONF_CHANGE_TRANSITION_JOINT_EXPLICIT: _ClassVar[ConfChangeTransition]
ENTRY_NORMAL: EntryType
ENTRY_CONF_CHANGE: EntryType
ENTRY_CONF_CHANGE_V2: EntryType
MSG_HUP: MessageType
MSG_BEAT: MessageType
MSG_PROP: MessageType
MSG_APP: MessageType
MSG_APP_RESP: MessageType
MSG_VOTE: MessageType
MSG_VOTE_RESP: MessageType
MSG_SNAP: MessageType
MSG_HEARTBEAT: MessageType
MSG_HEARTBEAT_RESP: MessageType
MSG_UNREACHABLE: MessageType
MSG_SNAP_STATUS: MessageType
MSG_CHECK_QUORUM: MessageType
MSG_TRANSFER_LEADER: MessageType
MSG_TIMEOUT_NOW: MessageType
MSG_READ_INDEX: MessageType
MSG_READ_INDEX_RESP: MessageType
MSG_PRE_VOTE: MessageType
MSG_PRE_VOTE_RESP: MessageType
CONF_CHANGE_ADD_NODE: ConfChangeType
CONF_CHANGE_REMOVE_NODE: ConfChangeType
CONF_CHANGE_UPDATE_NODE: ConfChangeType
CONF_CHANGE_ADD_LEARNER_NODE: ConfChangeType
CONF_CHANGE_TRANSITION_AUTO: ConfChangeTransition
CONF_CHANGE_TRANSITION_JOINT_IMPLICIT: ConfChangeTransition
CONF_CHANGE_TRANSITION_JOINT_EXPLICIT: ConfChangeTransition

class Entry(_message.Message):
    __slots__ = ("term", "index", "type", "data")
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    term: int
    index: int
    type: EntryType
    data: bytes
    def __init__(self, term: _Optional[int] = ..., index: _Optional[int] = ..., type: _Optional[_Union[EntryType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ConfState(_message.Message):
    __slots__ = ("voters", "learners", "voters_outgoing", "learners_next", "auto_leave")
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    VOTERS_OUTGOING_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_NEXT_FIELD_NUMBER: _ClassVar[int]
    AUTO_LEAVE_FIELD_NUMBER: _ClassVar[int]
    voters: _containers.RepeatedScalarFieldContainer[int]
    learners: _containers.RepeatedScalarFieldContainer[int]
    voters_outgoing: _containers.RepeatedScalarFieldContainer[int]
    learners_next: _containers.RepeatedScalarFieldContainer[int]
    auto_leave: bool
    def __init__(self, voters: _Optional[_Iterable[int]] = ..., learners: _Optional[_Iterable[int]] = ..., voters_outgoing: _Optional[_Iterable[int]] = ..., learners_next: _Optional[_Iterable[int]] = ..., auto_leave: _Optional[bool] = ...) -> None: ...

class SnapshotMetadata(_message.Message):
    __slots__ = ("conf_state", "index", "term")
    CONF_STATE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    conf_state: ConfState
    index: int
    term: int
    def __init__(self, conf_state: _Optional[_Union[ConfState, _Mapping]] = ..., index: _Optional[int] = ..., term: _Optional[int] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("data", "metadata")
    DATA_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    metadata: SnapshotMetadata
    def __init__(self, data: _Optional[bytes] = ..., metadata: _Optional[_Union[SnapshotMetadata, _Mapping]] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("type", "to", "from_", "term", "log_term", "index", "entries", "commit", "snapshot", "reject", "reject_hint", "context")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    FROM__FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    REJECT_HINT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    type: MessageType
    to: int
    from_: int
    term: int
    log_term: int
    index: int
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    commit: int
    snapshot: Snapshot
    reject: bool
    reject_hint: int
    context: bytes
    def __init__(self, type: _Optional[_Union[MessageType, str]] = ..., to: _Optional[int] = ..., from_: _Optional[int] = ..., term: _Optional[int] = ..., log_term: _Optional[int] = ..., index: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., commit: _Optional[int] = ..., snapshot: _Optional[_Union[Snapshot, _Mapping]] = ..., reject: _Optional[bool] = ..., reject_hint: _Optional[int] = ..., context: _Optional[bytes] = ...) -> None: ...

class HardState(_message.Message):
    __slots__ = ("term", "vote", "commit")
    TERM_FIELD_NUMBER: _ClassVar[int]
    VOTE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    term: int
    vote: int
    commit: int
    def __init__(self, term: _Optional[int] = ..., vote: _Optional[int] = ..., commit: _Optional[int] = ...) -> None: ...

class ConfChange(_message.Message):
    __slots__ = ("type", "node_id", "context", "id")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    type: ConfChangeType
    node_id: int
    context: bytes
    id: int
    def __init__(self, type: _Optional[_Union[ConfChangeType, str]] = ..., node_id: _Optional[int] = ..., context: _Optional[bytes] = ..., id: _Optional[int] = ...) -> None: ...

class ConfChangeSingle(_message.Message):
    __slots__ = ("type", "node_id")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    type: ConfChangeType
    node_id: int
    def __init__(self, type: _Optional[_Union[ConfChangeType, str]] = ..., node_id: _Optional[int] = ...) -> None: ...

class ConfChangeV2(_message.Message):
    __slots__ = ("transition", "changes", "context")
    TRANSITION_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    transition: ConfChangeTransition
    changes: _containers.RepeatedCompositeFieldContainer[ConfChangeSingle]
    context: bytes
    def __init__(self, transition: _Optional[_Union[ConfChangeTransition, str]] = ..., changes: _Optional[_Iterable[_Union[ConfChangeSingle, _Mapping]]] = ..., context: _Optional[bytes] = ...) -> None: ...
