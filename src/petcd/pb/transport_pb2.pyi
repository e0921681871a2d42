from petcd.pb import raft_pb2 as _raft_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_KIND_UNSPECIFIED: _ClassVar[StreamKind]
    STREAM_MESSAGES: _ClassVar[StreamKind]
    STREAM_SNAPSHOT: _ClassVar[StreamKind]
    STREAM_RPC: _ClassVar[StreamKind]

class Refusal(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFUSAL_NONE: _ClassVar[Refusal]
    REFUSAL_CLUSTER_ID_MISMATCH: _ClassVar[Refusal]
    REFUSAL_WRONG_MEMBER: _ClassVar[Refusal]
    REFUSAL_PROTOCOL_VERSION: _ClassVar[Refusal]
    REFUSAL_BAD_HELLO: _ClassVar[Refusal]
    REFUSAL_BUSY: _ClassVar[Refusal]
    REFUSAL_NOT_READY: _ClassVar[Refusal]

class RpcStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RPC_OK: _ClassVar[RpcStatus]
    RPC_PETCD_ERROR: _ClassVar[RpcStatus]
    RPC_HANDLER_FAILED: _ClassVar[RpcStatus]
    RPC_UNKNOWN_METHOD: _ClassVar[RpcStatus]
    RPC_DEADLINE: _ClassVar[RpcStatus]
STREAM_KIND_UNSPECIFIED: StreamKind
STREAM_MESSAGES: StreamKind
STREAM_SNAPSHOT: StreamKind
STREAM_RPC: StreamKind
REFUSAL_NONE: Refusal
REFUSAL_CLUSTER_ID_MISMATCH: Refusal
REFUSAL_WRONG_MEMBER: Refusal
REFUSAL_PROTOCOL_VERSION: Refusal
REFUSAL_BAD_HELLO: Refusal
REFUSAL_BUSY: Refusal
REFUSAL_NOT_READY: Refusal
RPC_OK: RpcStatus
RPC_PETCD_ERROR: RpcStatus
RPC_HANDLER_FAILED: RpcStatus
RPC_UNKNOWN_METHOD: RpcStatus
RPC_DEADLINE: RpcStatus

class Hello(_message.Message):
    __slots__ = ("protocol_version", "kind", "member_id", "cluster_id", "to")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    kind: StreamKind
    member_id: int
    cluster_id: int
    to: int
    def __init__(self, protocol_version: _Optional[int] = ..., kind: _Optional[_Union[StreamKind, str]] = ..., member_id: _Optional[int] = ..., cluster_id: _Optional[int] = ..., to: _Optional[int] = ...) -> None: ...

class HelloAck(_message.Message):
    __slots__ = ("protocol_version", "member_id", "cluster_id", "refusal", "reason")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    member_id: int
    cluster_id: int
    refusal: Refusal
    reason: str
    def __init__(self, protocol_version: _Optional[int] = ..., member_id: _Optional[int] = ..., cluster_id: _Optional[int] = ..., refusal: _Optional[_Union[Refusal, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_raft_pb2.Message]
    def __init__(self, messages: _Optional[_Iterable[_Union[_raft_pb2.Message, _Mapping]]] = ...) -> None: ...

class SnapshotHeader(_message.Message):
    __slots__ = ("message", "size_bytes")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    message: _raft_pb2.Message
    size_bytes: int
    def __init__(self, message: _Optional[_Union[_raft_pb2.Message, _Mapping]] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("offset", "crc32", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    crc32: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., crc32: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class SnapshotEnd(_message.Message):
    __slots__ = ("size_bytes", "crc32")
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    size_bytes: int
    crc32: int
    def __init__(self, size_bytes: _Optional[int] = ..., crc32: _Optional[int] = ...) -> None: ...

class SnapshotResult(_message.Message):
    __slots__ = ("ok", "reason")
    OK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    reason: str
    def __init__(self, ok: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class RpcRequest(_message.Message):
    __slots__ = ("id", "method", "payload", "timeout_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    method: str
    payload: bytes
    timeout_ms: int
    def __init__(self, id: _Optional[int] = ..., method: _Optional[str] = ..., payload: _Optional[bytes] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class RpcResponse(_message.Message):
    __slots__ = ("id", "status", "payload", "error_code", "error_message")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: int
    status: RpcStatus
    payload: bytes
    error_code: int
    error_message: str
    def __init__(self, id: _Optional[int] = ..., status: _Optional[_Union[RpcStatus, str]] = ..., payload: _Optional[bytes] = ..., error_code: _Optional[int] = ..., error_message: _Optional[str] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("hello", "hello_ack", "batch", "snapshot_header", "snapshot_chunk", "snapshot_end", "snapshot_result", "rpc_request", "rpc_response")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HELLO_ACK_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_HEADER_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_CHUNK_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_END_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_RESULT_FIELD_NUMBER: _ClassVar[int]
    RPC_REQUEST_FIELD_NUMBER: _ClassVar[int]
    RPC_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    hello_ack: HelloAck
    batch: Batch
    snapshot_header: SnapshotHeader
    snapshot_chunk: SnapshotChunk
    snapshot_end: SnapshotEnd
    snapshot_result: SnapshotResult
    rpc_request: RpcRequest
    rpc_response: RpcResponse
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., hello_ack: _Optional[_Union[HelloAck, _Mapping]] = ..., batch: _Optional[_Union[Batch, _Mapping]] = ..., snapshot_header: _Optional[_Union[SnapshotHeader, _Mapping]] = ..., snapshot_chunk: _Optional[_Union[SnapshotChunk, _Mapping]] = ..., snapshot_end: _Optional[_Union[SnapshotEnd, _Mapping]] = ..., snapshot_result: _Optional[_Union[SnapshotResult, _Mapping]] = ..., rpc_request: _Optional[_Union[RpcRequest, _Mapping]] = ..., rpc_response: _Optional[_Union[RpcResponse, _Mapping]] = ...) -> None: ...
