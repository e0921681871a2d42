"""The service table: every RPC petcd serves, independent of the gRPC library.

A handler is an `async` function. Unary: `handler(request, ctx) -> response`. Server streaming:
`handler(request, send, ctx)`. Bidirectional: `handler(requests, send, ctx)` where `requests` is
an async iterator and `send` an awaitable taking one response. Handlers raise petcd errors; a
front end (the grpcio adapter, or the native one) turns them into gRPC statuses in one place.

`ctx` gives the call's metadata (auth token, `hasleader`) without costing anything unless asked.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

from google.protobuf.message import Message


class CallContext(Protocol):
    def metadata(self) -> Mapping[str, str]: ...

    def peer(self) -> str: ...


class Kind(enum.Enum):
    UNARY = "unary"
    SERVER_STREAM = "server_stream"
    BIDI_STREAM = "bidi_stream"


Send = Callable[[Any], Awaitable[None]]
UnaryHandler = Callable[[Any, CallContext], Awaitable[Any]]
ServerStreamHandler = Callable[[Any, Send, CallContext], Awaitable[None]]
BidiHandler = Callable[[AsyncIterator[Any], Send, CallContext], Awaitable[None]]


@dataclasses.dataclass(frozen=True, slots=True)
class Method:
    """One RPC: `/package.Service/Name`, its kind, message classes and handler."""

    service: str
    name: str
    kind: Kind
    request_class: type[Message]
    response_class: type[Message]
    handler: Callable[..., Awaitable[Any]]

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def require_leader(ctx: CallContext) -> bool:
    """Whether the client asked (metadata `hasleader: true`) to fail when there is no leader."""
    return ctx.metadata().get("hasleader", "") == "true"


class StaticContext:
    """A CallContext over a fixed mapping (tests, in-process calls)."""

    def __init__(self, metadata: Mapping[str, str] | None = None, peer: str = "") -> None:
        self._metadata = dict(metadata or {})
        self._peer = peer

    def metadata(self) -> Mapping[str, str]:
        return self._metadata

    def peer(self) -> str:
        return self._peer
