"""The grpcio front end: binds the service table of petcd.api.rpc to a `grpc.aio` server.

This is the one place where petcd errors become gRPC statuses (code and etcd's message). The
native front end (libnghttp2) binds the same table; this one stays as the fallback and as the
reference for differential tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from grpc import aio

from petcd import errors
from petcd.api.rpc import Kind, Method

_STATUS: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}
#: gRPC's own receive limit sits 512 KiB above --max-request-bytes, as in etcd.
RECEIVE_OVERHEAD_BYTES = 512 * 1024


class _GrpcContext:
    """petcd's CallContext over a grpc.aio servicer context (metadata read only when asked)."""

    __slots__ = ("_context", "_metadata")

    def __init__(self, context: aio.ServicerContext[Any, Any]) -> None:
        self._context = context
        self._metadata: dict[str, str] | None = None

    def metadata(self) -> Mapping[str, str]:
        if self._metadata is None:
            pairs = self._context.invocation_metadata() or ()
            self._metadata = {str(k): str(v) for k, v in pairs}
        return self._metadata

    def peer(self) -> str:
        return str(self._context.peer())


async def _abort(context: aio.ServicerContext[Any, Any], exc: errors.PetcdError) -> None:
    await context.abort(_STATUS.get(int(exc.code), grpc.StatusCode.UNKNOWN), exc.message)


def _unary(method: Method) -> grpc.RpcMethodHandler:
    handler = method.handler

    async def behavior(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await handler(request, _GrpcContext(context))
        except errors.PetcdError as exc:
            await _abort(context, exc)

    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=method.request_class.FromString,
        response_serializer=_serialize,
    )


def _server_stream(method: Method) -> grpc.RpcMethodHandler:
    handler = method.handler

    async def behavior(request: Any, context: aio.ServicerContext[Any, Any]) -> None:
        try:
            await handler(request, context.write, _GrpcContext(context))
        except errors.PetcdError as exc:
            await _abort(context, exc)

    return grpc.unary_stream_rpc_method_handler(
        behavior,
        request_deserializer=method.request_class.FromString,
        response_serializer=_serialize,
    )


def _bidi_stream(method: Method) -> grpc.RpcMethodHandler:
    handler = method.handler

    async def behavior(
        requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]
    ) -> None:
        try:
            await handler(requests, context.write, _GrpcContext(context))
        except errors.PetcdError as exc:
            await _abort(context, exc)

    return grpc.stream_stream_rpc_method_handler(
        behavior,
        request_deserializer=method.request_class.FromString,
        response_serializer=_serialize,
    )


def _serialize(message: Any) -> bytes:
    """Responses may be messages or already-encoded bytes (fast paths build bytes directly)."""
    if isinstance(message, bytes):
        return message
    return bytes(message.SerializeToString())


_BINDERS = {Kind.UNARY: _unary, Kind.SERVER_STREAM: _server_stream, Kind.BIDI_STREAM: _bidi_stream}


def generic_handlers(methods: list[Method]) -> list[grpc.GenericRpcHandler]:
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for method in methods:
        by_service.setdefault(method.service, {})[method.name] = _BINDERS[method.kind](method)
    return [grpc.method_handlers_generic_handler(name, table) for name, table in by_service.items()]


def server_options(max_request_bytes: int, max_concurrent_streams: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_request_bytes + RECEIVE_OVERHEAD_BYTES),
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.max_concurrent_streams", min(max_concurrent_streams, 2**31 - 1)),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.so_reuseport", 0),
    ]


def build_server(
    methods: list[Method], max_request_bytes: int, max_concurrent_streams: int
) -> aio.Server:
    server = aio.server(
        options=server_options(max_request_bytes, max_concurrent_streams),
    )
    for handler in generic_handlers(methods):
        server.add_generic_rpc_handlers((handler,))
    return server
