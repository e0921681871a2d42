"""Sans-I/O bookkeeping for many watches sharing one Watch stream (used by both clients).

The I/O layer (a thread or an asyncio task) feeds every WatchResponse to `WatchDemux.receive`
and gets back deliveries (what to hand to which watch) and requests to send. It never parses
responses itself.

How a response finds its watch:
- etcd answers the create requests of one stream in the order it received them, with
  `created=true` (and `canceled=true` too when creation failed, watch_id -1). So pending
  creates form a FIFO and each `created` response belongs to the oldest one.
- every later response carries the watch_id the server assigned; ids of watches we cancelled
  are forgotten at once, so late events for them are dropped.
- a response with watch_id -1 that is not a creation answers a progress request and goes to
  every watch of the stream (as clientv3 does).
- `fragment=true` responses are joined until the last fragment arrives.

Resuming after the stream breaks (`disconnected`): every live watch is created again from
`next_revision` — one past the last event delivered, or one past the revision current at its
creation — so it sees each revision once, nothing missing, even on another endpoint. If that
revision has been compacted meanwhile, the watch ends with CompactedError.

Invariant: a watch is in at most one of `pending` and `active`; once `done` it is in neither
and gets no further deliveries.
"""

from __future__ import annotations

import collections
import enum
import re
from dataclasses import dataclass, field
from typing import Any

from petcd import errors
from petcd.pb import kv_pb2, rpc_pb2

PENDING_MAX = 100_000  # bound on create requests awaiting an answer on one stream


class DeliveryKind(enum.Enum):
    CREATED = "created"  # the watch exists now (resolve the caller's watch())
    CREATE_FAILED = "create_failed"  # the server refused to create it (error set)
    RESPONSE = "response"  # events, or a progress notification
    ERROR = "error"  # the watch ended with an error (compacted, permission...)
    END = "end"  # the watch ended normally (cancelled)


@dataclass(slots=True)
class WatchState:
    """One watch as the demux sees it. `sink` belongs to the I/O layer (its queue or future)."""

    request: rpc_pb2.WatchCreateRequest
    sink: Any = None
    watch_id: int = -1
    created: bool = False
    done: bool = False
    next_revision: int = 0  # where a resumed watch starts; 0 = not known yet
    created_revision: int = 0  # header.revision of the first created response
    compact_revision: int = 0  # set when the watch ended because of compaction
    fragments: list[kv_pb2.Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.next_revision = self.request.start_revision


@dataclass(slots=True)
class Delivery:
    state: WatchState
    kind: DeliveryKind
    response: rpc_pb2.WatchResponse | None = None
    error: errors.PetcdError | None = None


class WatchDemux:
    """Routes the responses of one Watch stream to its watches; tells what to send."""

    def __init__(self) -> None:
        self.pending: collections.deque[WatchState] = collections.deque()
        self.active: dict[int, WatchState] = {}

    def live(self) -> list[WatchState]:
        return [*self.pending, *self.active.values()]

    def create(self, state: WatchState) -> rpc_pb2.WatchRequest:
        """Register a new watch; send the returned request."""
        assert not state.done and not state.created
        assert len(self.pending) < PENDING_MAX, "too many watch creations in flight"
        self.pending.append(state)
        return rpc_pb2.WatchRequest(create_request=self._create_request(state))

    @staticmethod
    def _create_request(state: WatchState) -> rpc_pb2.WatchCreateRequest:
        request = rpc_pb2.WatchCreateRequest()
        request.CopyFrom(state.request)
        request.start_revision = state.next_revision
        return request

    def cancel(self, state: WatchState) -> rpc_pb2.WatchRequest | None:
        """End a watch locally at once; the returned request (if any) tells the server."""
        if state.done:
            return None
        state.done = True
        if state.created and self.active.get(state.watch_id) is state:
            del self.active[state.watch_id]
            return rpc_pb2.WatchRequest(
                cancel_request=rpc_pb2.WatchCancelRequest(watch_id=state.watch_id)
            )
        # Not created yet: its created response will arrive and be answered with a cancel.
        return None

    def receive(
        self, response: rpc_pb2.WatchResponse
    ) -> tuple[list[Delivery], list[rpc_pb2.WatchRequest]]:
        """Deliveries for `response`, and requests to send because of it."""
        if response.created:
            return self._on_created(response)
        if response.watch_id == -1:
            return self._on_progress(response), []
        state = self.active.get(response.watch_id)
        if state is None:
            return [], []  # a watch we cancelled, or one from a broken stream
        assert state.watch_id == response.watch_id
        if response.canceled:
            return [self._on_canceled(state, response)], []
        return self._on_events(state, response), []

    def _on_created(
        self, response: rpc_pb2.WatchResponse
    ) -> tuple[list[Delivery], list[rpc_pb2.WatchRequest]]:
        if not self.pending:
            return [], []  # the server answered a create we never sent: ignore it
        state = self.pending.popleft()
        first = not state.created
        if response.canceled:
            if state.done:
                return [], []  # abandoned before the server answered: nobody is waiting
            state.done = True
            error = _cancel_error(response)
            kind = DeliveryKind.CREATE_FAILED if first else DeliveryKind.ERROR
            return [Delivery(state, kind, response, error)], []
        state.watch_id = response.watch_id
        if state.done:  # cancelled before the server answered
            cancel = rpc_pb2.WatchCancelRequest(watch_id=response.watch_id)
            return [], [rpc_pb2.WatchRequest(cancel_request=cancel)]
        assert response.watch_id not in self.active, "server reused a live watch id"
        self.active[response.watch_id] = state
        state.created = True
        if state.next_revision == 0:
            state.next_revision = response.header.revision + 1
        if not first:
            return [], []
        state.created_revision = response.header.revision
        return [Delivery(state, DeliveryKind.CREATED, response)], []

    def _on_progress(self, response: rpc_pb2.WatchResponse) -> list[Delivery]:
        return [Delivery(state, DeliveryKind.RESPONSE, response) for state in self.active.values()]

    def _on_canceled(self, state: WatchState, response: rpc_pb2.WatchResponse) -> Delivery:
        del self.active[state.watch_id]
        state.done = True
        if response.compact_revision or response.cancel_reason:
            state.compact_revision = response.compact_revision
            return Delivery(state, DeliveryKind.ERROR, response, _cancel_error(response))
        return Delivery(state, DeliveryKind.END, response)

    def _on_events(self, state: WatchState, response: rpc_pb2.WatchResponse) -> list[Delivery]:
        if response.fragment:
            assert len(state.fragments) < 10_000_000, "unbounded fragment accumulation"
            state.fragments.extend(response.events)
            return []
        if state.fragments:
            joined = rpc_pb2.WatchResponse()
            joined.CopyFrom(response)
            del joined.events[:]
            joined.events.extend(state.fragments)
            joined.events.extend(response.events)
            state.fragments = []
            response = joined
        if response.events:
            last = response.events[-1].kv.mod_revision
            assert last >= state.next_revision - 1, "watch events went back in revision"
            state.next_revision = last + 1
        return [Delivery(state, DeliveryKind.RESPONSE, response)]

    def disconnected(self) -> list[rpc_pb2.WatchRequest]:
        """The stream broke: the create requests that resume every live watch, in order."""
        states = [s for s in self.live() if not s.done]
        self.pending = collections.deque(states)
        self.active = {}
        for state in states:
            state.fragments = []
        return [rpc_pb2.WatchRequest(create_request=self._create_request(s)) for s in states]

    def fail_all(self, error: errors.PetcdError) -> list[Delivery]:
        """The stream is gone for good: every live watch ends with `error`."""
        deliveries = []
        for state in self.live():
            if state.done:
                continue
            state.done = True
            kind = DeliveryKind.ERROR if state.created else DeliveryKind.CREATE_FAILED
            deliveries.append(Delivery(state, kind, None, error))
        self.pending.clear()
        self.active.clear()
        return deliveries


# etcd 3.5.1 puts a gRPC status error's full text in cancel_reason, e.g.
# "rpc error: code = PermissionDenied desc = etcdserver: permission denied" (observed).
_STATUS_TEXT = re.compile(r"^rpc error: code = (\w+) desc = (.*)$", re.DOTALL)
_CODE_BY_NAME = {code.name.replace("_", "").lower(): code for code in errors.GrpcCode}


def _cancel_error(response: rpc_pb2.WatchResponse) -> errors.PetcdError:
    """The error a cancelled watch ends with (compaction or the server's cancel_reason)."""
    if response.compact_revision and not response.cancel_reason:
        return errors.CompactedError()
    reason = response.cancel_reason or "etcdserver: watch canceled"
    code = errors.GrpcCode.UNKNOWN
    match = _STATUS_TEXT.match(reason)
    if match is not None:
        code = _CODE_BY_NAME.get(match.group(1).lower(), errors.GrpcCode.UNKNOWN)
        reason = match.group(2)
    error = errors.from_status(code, reason)
    assert error.message == reason
    return error
